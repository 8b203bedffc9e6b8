"""The actor for language-model work on the `llm` queue (chat replies, completions, summaries, loads)."""
from __future__ import annotations

import dramatiq

from jobs.broker import broker  # noqa: F401  (the broker must exist before actors are declared)


# No retries: a half-streamed reply cannot be taken back; the client is told it failed instead.
@dramatiq.actor(queue_name="llm", max_retries=0, time_limit=3600 * 1000)
def generate(llm_job_id: str) -> None:
    from workers.llm_tasks import run

    run(llm_job_id)
