"""The Redis broker every Parley process shares, and the queues named for the hardware they need.

Senders (web, CLI, services) use it as it is; worker processes add their middleware in jobs.worker.
"""
from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from parley.config import broker_options, get_settings

#: Queue name → what it needs. GPU queues get one worker process per device.
QUEUES = {
    "asr": "GPU: full transcriptions",
    "asr_quick": "GPU: re-transcription of a segment (kept apart so it never waits behind a long job)",
    "llm": "GPU: summaries, chat replies, analysis",
    "io": "CPU: indexing, downloads, housekeeping",
}

# Dramatiq's idle consumers poll Redis with a backoff capped at the worker timeout (1 s), so a job sent to
# an idle worker waited ~0.4 s before it started (scripts/bench/queue_throughput.py). A 50 ms cap brings
# that to ~20 ms for ~20 cheap Redis calls a second per idle queue. PARLEY_BROKER_IDLE_POLL_MS overrides it.
IDLE_POLL_MS = get_settings().broker_idle_poll_ms


class ParleyBroker(RedisBroker):
    """The Redis broker with idle consumers polling at most IDLE_POLL_MS apart."""

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000):
        return super().consume(queue_name, prefetch=prefetch, timeout=min(timeout, IDLE_POLL_MS))


broker = ParleyBroker(url=get_settings().redis_url, **broker_options())
dramatiq.set_broker(broker)
