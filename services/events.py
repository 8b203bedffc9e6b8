"""Job events: appended to the job's log with a per-job sequence number, then published on Redis.

The log in the database is the truth; pub/sub only carries the news. A stream client that joins
late, reconnects, or sees a gap in sequence numbers reads the log, so no event is lost or repeated.
"""
from __future__ import annotations

import json
import logging
import threading

import redis

from models import Job, JobEvent, db
from models.statuses import TERMINAL as TERMINAL_STATUSES
from parley.config import get_settings
from parley.redisconn import client
from parley.timestamps import now_ms, seconds

log = logging.getLogger(__name__)

CHANNEL_PREFIX = "parley:job:"

_publisher: redis.Redis | None = None
_publisher_lock = threading.Lock()


def channel(job_id: str) -> str:
    return CHANNEL_PREFIX + job_id


def chunk_info(job: Job) -> dict | None:
    if not job.chunk_plan:
        return None
    total = job.total_chunks
    current = min(job.chunks_done + 1, total) if job.status not in TERMINAL_STATUSES else total
    return {"current_chunk": current, "total_chunks": total, "chunk_progress": round(job.chunk_progress, 1)}


def status_payload(job: Job) -> dict:
    return {
        "status": job.status,
        "message": job.message,
        "progress": round(job.progress, 1),
        "chunk_info": chunk_info(job),
        "error": job.error,
        "updated_at": seconds(job.updated_at_ms),
    }


def to_wire(event: JobEvent | dict, job_id: str | None = None) -> dict:
    """The message clients receive: {"type", "seq", "job_id", ...payload}."""
    if isinstance(event, dict):
        return event
    return {"type": event.type, "seq": event.seq, "job_id": job_id or event.job_id, **event.payload}


def record(job_id: str, type_: str, payload: dict) -> dict:
    """Append an event to the job's log; call inside the transaction that made the change it reports."""
    with db.atomic():
        # One writer per job at a time (the worker that holds its message), so read-after-increment
        # inside the transaction is enough to hand out contiguous numbers.
        Job.update(event_seq=Job.event_seq + 1).where(Job.id == job_id).execute()
        seq = Job.select(Job.event_seq).where(Job.id == job_id).scalar()
        JobEvent.create(job=job_id, seq=seq, type=type_, payload=payload)
    return {"type": type_, "seq": seq, "job_id": job_id, **payload}


def record_status(job: Job, **changes) -> dict:
    """Save `changes` on the job and log the resulting status event, in one transaction."""
    changes.setdefault("updated_at_ms", now_ms())
    with db.atomic():
        for name, value in changes.items():
            setattr(job, name, value)
        job.save(only=[getattr(Job, name) for name in changes])
        return record(job.id, "status", status_payload(job))


def publisher() -> redis.Redis:
    global _publisher
    with _publisher_lock:
        if _publisher is None:
            _publisher = client(get_settings().redis_url)
        return _publisher


def publish(event: dict) -> None:
    """Best effort: a client that misses this finds it in the log on its next gap check or reconnect."""
    try:
        publisher().publish(channel(event["job_id"]), json.dumps(event, separators=(",", ":")))
    except redis.RedisError as exc:
        log.warning("could not publish event %s of job %s: %s", event["seq"], event["job_id"], exc)


def emit_status(job: Job, **changes) -> dict:
    event = record_status(job, **changes)
    publish(event)
    return event


def read_log(job_id: str, *, after: int = 0, compact: bool = False) -> list[dict]:
    """Logged events of a job with seq > after, in order.

    With `compact`, status events that a later status event supersedes are left out: a client that
    joins mid-job gets the current status and every segment, not the whole history of progress ticks.
    """
    rows = list(
        JobEvent.select().where((JobEvent.job == job_id) & (JobEvent.seq > after)).order_by(JobEvent.seq)
    )
    if compact:
        last_status = max((r.seq for r in rows if r.type == "status"), default=None)
        rows = [r for r in rows if r.type != "status" or r.seq == last_status]
    return [to_wire(r, job_id) for r in rows]


def is_terminal(event: dict) -> bool:
    return event.get("type") == "status" and event.get("status") in TERMINAL_STATUSES
