"""The actor for multi-session analysis on the `llm` queue."""
from __future__ import annotations

import dramatiq

from jobs.broker import broker  # noqa: F401  (the broker must exist before actors are declared)


# No retries on failure; a message redelivered after a crash resumes the sessions still pending.
@dramatiq.actor(queue_name="llm", max_retries=0, time_limit=7 * 24 * 3600 * 1000)
def analyze(job_id: int) -> None:
    from workers.analysis import run

    run(job_id)
