"""A worker process's module: `dramatiq jobs.worker --queues asr` loads the broker, its middleware and every actor."""
from jobs.broker import QUEUES, broker
from jobs.crashes import CrashGuard
from jobs.middleware import WorkerBoot, WorkerHeartbeat
from jobs.reconciler import JobReconciler
from jobs.send import ACTOR_QUEUES

broker.add_middleware(WorkerBoot())
broker.add_middleware(WorkerHeartbeat())
broker.add_middleware(JobReconciler())
broker.add_middleware(CrashGuard())

from jobs.analysis import analyze  # noqa: E402  (actors after the middleware, so it sees them declared)
from jobs.downloads import pull_model  # noqa: E402
from jobs.indexing import update_search  # noqa: E402
from jobs.llm import generate  # noqa: E402
from jobs.transcription import retranscribe, transcribe  # noqa: E402

ACTORS = {a.actor_name: a for a in (analyze, pull_model, update_search, generate, retranscribe, transcribe)}
# A sender names actors and queues in jobs.send; a mismatch would strand messages on a queue nobody reads.
if {name: a.queue_name for name, a in ACTORS.items()} != ACTOR_QUEUES or not set(ACTOR_QUEUES.values()) <= set(QUEUES):
    raise RuntimeError("jobs.send.ACTOR_QUEUES does not match the declared actors")

__all__ = ["ACTORS", "broker"]
