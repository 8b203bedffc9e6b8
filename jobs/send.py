"""Send a job's message by its actor's name, without importing the actor (nor the workers behind it)."""
from __future__ import annotations

import dramatiq

from jobs.broker import broker

#: Actor name -> the queue it listens on; jobs.worker checks that the declared actors agree.
ACTOR_QUEUES = {
    "transcribe": "asr",
    "retranscribe": "asr_quick",
    "generate": "llm",
    "analyze": "llm",
    "pull_model": "io",
    "update_search": "io",
}


def send(actor_name: str, *args) -> dramatiq.Message:
    """Put one message for `actor_name` with `args` on its queue; raises redis/Dramatiq errors when Redis is down."""
    message = dramatiq.Message(queue_name=ACTOR_QUEUES[actor_name], actor_name=actor_name, args=args, kwargs={},
                               options={})
    return broker.enqueue(message)
