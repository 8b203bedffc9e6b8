"""Sending a use case's job: when the queue cannot take the message, what was stored is undone and the caller told."""
from __future__ import annotations

from collections.abc import Callable

import dramatiq
import redis

from jobs.send import send
from parley.errors import Unavailable


class QueueUnavailable(Unavailable):
    """Redis did not take the job's message; nothing of the request was kept."""

    @classmethod
    def because(cls, exc: Exception) -> "QueueUnavailable":
        return cls(f"the job queue is unavailable ({type(exc).__name__}); try again shortly")


def send_job(actor_name: str, job_id, *, undo: Callable[[], None]) -> None:
    """Send `job_id` to `actor_name`; if Redis refuses, run `undo` (delete what the use case stored) and raise."""
    try:
        send(actor_name, job_id)
    except (redis.RedisError, dramatiq.errors.DramatiqError) as exc:
        undo()
        raise QueueUnavailable.because(exc) from None
