"""The Redis broker every Parley process shares, and the queues named for the hardware they need."""
from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from jobs.middleware import WorkerBoot, WorkerHeartbeat
from parley.config import broker_options, get_settings

#: Queue name → what it needs. GPU queues get one worker process per device.
QUEUES = {
    "asr": "GPU: full transcriptions",
    "asr_quick": "GPU: re-transcription of a segment (kept apart so it never waits behind a long job)",
    "llm": "GPU: summaries, chat replies, analysis",
    "io": "CPU: indexing, downloads, housekeeping",
}

broker = RedisBroker(url=get_settings().redis_url, **broker_options())
broker.add_middleware(WorkerBoot())
broker.add_middleware(WorkerHeartbeat())
dramatiq.set_broker(broker)
