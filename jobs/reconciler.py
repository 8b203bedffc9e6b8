"""Finds unfinished jobs whose queue message was lost (Redis restarted empty, a crash before the send) and re-sends them.

A job is stranded when its row says it is not finished, it has been quiet longer than a grace period,
no message names it in its queue (waiting, delayed, fetched-not-acked, or dead-lettered: a dead letter
is the operator's to retry), and no live worker's heartbeat says it is running it. Such a job is sent
again once; the worker resumes it from what the database holds.

Only one reconciler acts at a time, across processes: a pass runs under a Redis lock with a TTL. For
speech and LLM jobs the re-send is also claimed in the database (a conditional UPDATE of `updated_at_ms`),
so even two passes that both got a lock (e.g. the lock key was flushed) send a job once. `parley
requeue` and the worker-side loop (`JobReconciler`, on in every worker process) share `reconcile()`.

Settings (environment): PARLEY_RECONCILE_AFTER_S (default 120), the quiet time before a job counts as
stranded; PARLEY_RECONCILE_EVERY_S (default 30), the time between passes in a worker; 0 turns the
worker-side loop off.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time

import dramatiq
import redis
from dramatiq.middleware import Middleware

from models.statuses import TERMINAL
from parley.config import get_settings
from parley.errors import Unavailable
from parley.timestamps import now_ms

log = logging.getLogger(__name__)

NAMESPACE = "dramatiq"
LOCK_KEY = "parley:reconciler:lock"
LOCK_TTL_S = 60  # a pass takes well under a second; a crashed holder frees the lock after this
REQUEUED_MESSAGE = "Re-queued: its queue message was lost"
# Redis must have answered for this long before a pass acts: after a restart every live worker has
# written its heartbeat again (every 5 s), so a job a worker is still running is not taken for stranded.
SETTLE_S = 15.0


def reconcile_after_s() -> float:
    return get_settings().reconcile_after_s


def reconcile_every_s() -> float:
    return get_settings().reconcile_every_s


@dataclasses.dataclass
class Requeued:
    """One job a pass found stranded (and, unless it was a dry run, sent again)."""

    kind: str  # transcribe, retranscribe, llm, analysis, model-pull
    job_id: str
    status: str  # the row's status when found
    quiet_since_ms: int  # epoch milliseconds of the row's last sign of life
    session_id: int | None = None


class Busy(Unavailable):
    """Another reconciler holds the lock."""


# --- what Redis knows --------------------------------------------------------------------------------
def queued_job_refs(conn: redis.Redis, queues) -> set[tuple[str, str]]:
    """(actor name, first argument as text) of every message of `queues` that Redis still holds.

    That is waiting, delayed for a retry, fetched by a worker and not acknowledged (all in `<q>.msgs` or
    `<q>.DQ.msgs` until the ack), and dead-lettered (`<q>.XQ.msgs`).
    """
    refs: set[tuple[str, str]] = set()
    for queue in queues:
        for key in (f"{NAMESPACE}:{queue}.msgs", f"{NAMESPACE}:{queue}.DQ.msgs", f"{NAMESPACE}:{queue}.XQ.msgs"):
            for raw in conn.hvals(key):
                try:
                    message = json.loads(raw)
                    refs.add((message["actor_name"], str(message["args"][0])))
                except (TypeError, ValueError, KeyError, IndexError):
                    continue
    return refs


def held_job_refs(conn: redis.Redis) -> set[tuple[str, str]]:
    """(actor name, first argument as text) of the messages live workers say they are running."""
    from jobs.heartbeats import alive_workers

    refs = set()
    for worker in alive_workers(conn):
        for ref in worker.get("jobs") or []:
            actor, _, arg = str(ref).partition(":")
            refs.add((actor, arg))
    return refs


# --- what the database says ----------------------------------------------------------------------------
def _candidates(cutoff_ms: int) -> list[tuple[Requeued, str]]:
    """Unfinished rows quiet since before `cutoff_ms`, each with the name of the actor that runs it."""
    from models import AnalysisJob, Job, LlmJob, ModelPull

    found: list[tuple[Requeued, str]] = []
    for job in Job.select().where(Job.status.in_(("queued", "processing")) & (Job.updated_at_ms < cutoff_ms)):
        if job.kind in ("transcribe", "retranscribe"):  # a job's kind is the name of its actor
            found.append((Requeued(job.kind, job.id, job.status, job.updated_at_ms, job.session_id), job.kind))
    for job in LlmJob.select().where(LlmJob.status.in_(("queued", "processing")) & (LlmJob.updated_at_ms < cutoff_ms)):
        found.append((Requeued("llm", job.id, job.status, job.updated_at_ms), "generate"))
    # Analyses and pulls keep no "last changed" time: their start is the earliest they can be quiet since;
    # one still running is protected by its worker's heartbeat.
    for job in AnalysisJob.select().where(AnalysisJob.status.not_in(TERMINAL)
                                          & (AnalysisJob.created_at_ms < cutoff_ms)):
        found.append((Requeued("analysis", str(job.id), job.status, job.created_at_ms), "analyze"))
    for pull in ModelPull.select().where(ModelPull.status.not_in(TERMINAL)
                                         & (ModelPull.start_ms < cutoff_ms)):
        found.append((Requeued("model-pull", pull.id, pull.status, pull.start_ms), "pull_model"))
    return found


def _claim(found: Requeued, cutoff_ms: int) -> bool:
    """Mark a speech or LLM job as re-queued now, if it is still stranded; False when someone else did."""
    from models import Job, LlmJob

    table = {"transcribe": Job, "retranscribe": Job, "llm": LlmJob}.get(found.kind)
    if table is None:
        return True  # no "last changed" column to claim by: the lock alone keeps the send single
    return bool(table.update(updated_at_ms=now_ms(), message=REQUEUED_MESSAGE).where(
        (table.id == found.job_id) & table.status.in_(("queued", "processing")) & (table.updated_at_ms < cutoff_ms)
    ).execute())


def _announce(found: Requeued) -> None:
    """Tell watchers: a status event in a speech job's log and stream, the message on a pull's row."""
    from models import Job, ModelPull
    from services import events

    if found.kind in ("transcribe", "retranscribe"):
        job = Job.get_by_id(found.job_id)
        events.publish(events.record(job.id, "status", events.status_payload(job)))
    elif found.kind == "model-pull":
        ModelPull.update(message=REQUEUED_MESSAGE).where(
            (ModelPull.id == found.job_id) & (ModelPull.status == found.status)).execute()


# --- one pass ----------------------------------------------------------------------------------------------
def reconcile(conn: redis.Redis, *, older_than_s: float | None = None, dry_run: bool = False,
              lock_wait_s: float = 0.0) -> list[Requeued]:
    """Find stranded jobs and (unless `dry_run`) send each again; returns what was found.

    older_than_s: quiet time before a job counts as stranded (default PARLEY_RECONCILE_AFTER_S, 120).
    dry_run: only report (default False).
    lock_wait_s: how long to wait for another reconciler to finish (default 0); raises Busy after it.
    """
    from jobs.broker import QUEUES
    from jobs.send import send

    older_than_s = reconcile_after_s() if older_than_s is None else older_than_s
    # redis-py's Lock: a random token per holder, released only by its holder (a Lua compare-and-delete).
    lock = conn.lock(LOCK_KEY, timeout=LOCK_TTL_S, sleep=0.2, blocking_timeout=lock_wait_s)
    if not lock.acquire():
        raise Busy("another reconciler is running; try again in a minute")
    try:
        # Redis first, rows second: a message acked between the two reads belongs to a job whose row
        # is already finished by then, so it is not mistaken for stranded.
        known = queued_job_refs(conn, QUEUES) | held_job_refs(conn)
        cutoff_ms = now_ms() - int(older_than_s * 1000)
        stranded = []
        for found, actor_name in _candidates(cutoff_ms):
            if (actor_name, found.job_id) in known:
                continue
            if not dry_run:
                if not _claim(found, cutoff_ms):
                    continue
                send(actor_name, int(found.job_id) if found.kind == "analysis" else found.job_id)
                log.warning("re-queued %s job %s (%s, quiet since %s): its queue message was lost", found.kind,
                            found.job_id, found.status, time.strftime("%Y-%m-%d %H:%M:%S",
                                                                      time.localtime(found.quiet_since_ms / 1000)))
                _announce(found)
            stranded.append(found)
        return stranded
    finally:
        try:
            lock.release()
        except redis.RedisError:  # LockNotOwnedError included: it expired, and someone else holds it now
            pass


# --- in the workers ----------------------------------------------------------------------------------------
class JobReconciler(Middleware):
    """Runs `reconcile()` every PARLEY_RECONCILE_EVERY_S seconds in a background thread of each worker process."""

    def __init__(self):
        self._stop = threading.Event()

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if reconcile_every_s() > 0:
            threading.Thread(target=self._loop, name="parley-reconciler", daemon=True).start()

    def before_worker_shutdown(self, broker, worker) -> None:
        self._stop.set()

    def _loop(self) -> None:
        from parley.config import get_settings
        from parley.redisconn import client

        conn = client(get_settings().redis_url)
        up_since = time.monotonic()  # the first pass, too, waits until heartbeats had time to be written
        while not self._stop.wait(reconcile_every_s()):
            try:
                conn.ping()
                up_since = time.monotonic() if up_since is None else up_since
                if time.monotonic() - up_since >= SETTLE_S:
                    reconcile(conn)
            except redis.RedisError as exc:
                if up_since is not None:  # said once per outage, not every pass
                    log.warning("reconciler: the job queue is unavailable (%s); waiting for it", type(exc).__name__)
                up_since = None
            except Busy:
                pass
            except Exception:  # noqa: BLE001  (the loop must outlive a bad pass: a locked database, say)
                log.exception("reconciler pass failed")
