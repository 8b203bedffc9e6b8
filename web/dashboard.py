"""The operators' queue dashboard: a server-rendered page kept live over SSE."""
from __future__ import annotations

import json
import time
from dataclasses import asdict

import redis
from flask import Blueprint, current_app, jsonify, render_template

from jobs import queues
from jobs.heartbeats import alive_workers
from models import AnalysisJob, AnalysisSummary, Job, LlmJob, db
from models.statuses import TERMINAL
from parley.timestamps import seconds
from services import job_control
from web import sse
from web.errors import ApiError, not_found

dashboard_bp = Blueprint("dashboard", __name__, url_prefix=None, template_folder="pages",
                         static_folder="pages/static", static_url_path="/dashboard/static")

TICK_S = 1.0  # how often the stream looks for changes
KEEPALIVE_S = 5.0  # a comment at least this often: proxies keep the stream open, and a gone client is noticed
STREAM_MAX_S = 600.0  # then the stream ends and EventSource reconnects, so no thread is held forever
RECENT = 25  # finished jobs shown per kind, besides every unfinished one
ACTIVE_LIMIT = 200  # unfinished jobs shown per kind at most: a flooded queue must not make the page huge


def _redis() -> redis.Redis:
    return current_app.extensions["parley_redis"]


def _declared_queues() -> list[str]:
    from jobs.broker import QUEUES

    return list(QUEUES)


# --- the snapshot ----------------------------------------------------------------------------------
def snapshot() -> dict:
    """Everything the page shows, as JSON: queues, workers, dead letters, recent and running jobs."""
    state = {"generated_at": time.time(), "redis_error": None, "queues": [], "workers": [], "dead_letters": [],
             "processes": _processes()}
    try:
        conn = _redis()
        names = queues.queue_names(conn, declared=_declared_queues())
        state["queues"] = [asdict(queues.counts(conn, name)) for name in names]
        state["workers"] = sorted(({"id": f"{w.get('host')}:{w.get('pid')}", **w} for w in alive_workers(conn)),
                                  key=lambda w: w["id"])
        state["dead_letters"] = _with_job_errors([asdict(d) for name in names
                                                  for d in queues.dead_letters(conn, name, limit=50)])
    except redis.RedisError as exc:
        state["redis_error"] = f"Redis is unavailable: {type(exc).__name__}: {exc}"
    state["jobs"] = job_rows(state["generated_at"])
    return state


def _processes() -> list[dict]:
    """The Procfile lines of this host's process supervisors (empty when the stack was not started by one)."""
    from parley.supervisor import read_states

    lines = read_states(current_app.config["PARLEY_SETTINGS"].data_dir)
    return [{"name": name, **{k: v for k, v in line.items() if k != "command"}} for name, line in sorted(lines.items())]


def _with_job_errors(letters: list[dict]) -> list[dict]:
    """A message failed by `throws` (the job is marked failed and retrying would not help) keeps no
    traceback: the error then comes from the job it names."""
    wanted = {d["args"][0] for d in letters if not d["error"] and d["args"] and isinstance(d["args"][0], str)}
    if not wanted:
        return letters
    errors = {j.id: j.error for j in Job.select(Job.id, Job.error).where(Job.id.in_(wanted))}
    errors.update({j.id: j.error for j in LlmJob.select(LlmJob.id, LlmJob.error).where(LlmJob.id.in_(wanted))})
    for d in letters:
        if not d["error"] and d["args"] and isinstance(d["args"][0], str):
            d["error"] = errors.get(d["args"][0]) or ""
    return letters


def _pick(model, active_where, finished_where, order):
    """Every unfinished row (up to ACTIVE_LIMIT) and the RECENT newest finished ones."""
    active = list(model.select().where(active_where).order_by(order.desc()).limit(ACTIVE_LIMIT))
    return active + list(model.select().where(finished_where).order_by(order.desc()).limit(RECENT))


def _duration(start: float | None, end: float | None, now: float) -> float | None:
    return None if start is None else round(max(0.0, (end or now) - start), 1)


def job_rows(now: float) -> list[dict]:
    rows = []
    for j in _pick(Job, Job.status.not_in(TERMINAL), Job.status.in_(TERMINAL), Job.created_at_ms):
        started, finished = seconds(j.started_at_ms), seconds(j.finished_at_ms)
        rows.append({"id": j.id, "kind": j.kind, "queue": "asr" if j.kind == "transcribe" else "asr_quick",
                     "status": j.status, "progress": round(j.progress, 1), "message": j.message, "error": j.error,
                     "created_at": seconds(j.created_at_ms), "started_at": started, "finished_at": finished,
                     "duration_s": _duration(started, finished, now), "worker": j.worker,
                     "cancelable": j.status not in TERMINAL})
    for j in _pick(LlmJob, LlmJob.status.not_in(TERMINAL), LlmJob.status.in_(TERMINAL), LlmJob.created_at_ms):
        # LLM jobs record no start: their duration runs from creation, once a worker has taken them.
        created, finished = seconds(j.created_at_ms), seconds(j.finished_at_ms)
        begun = None if j.status == "queued" else created
        rows.append({"id": j.id, "kind": j.kind, "queue": "llm", "status": j.status, "progress": round(j.progress, 1),
                     "message": j.message, "error": j.error, "created_at": created, "started_at": None,
                     "finished_at": finished, "duration_s": _duration(begun, finished, now), "worker": None,
                     "cancelable": j.status not in TERMINAL})
    analyses = _pick(AnalysisJob, AnalysisJob.status.not_in(TERMINAL), AnalysisJob.status.in_(TERMINAL),
                     AnalysisJob.created_at_ms)
    done = _analysis_progress([a.id for a in analyses])
    for a in analyses:
        created, finished = seconds(a.created_at_ms), seconds(a.completed_at_ms)
        rows.append({"id": str(a.id), "kind": "analysis", "queue": "llm", "status": a.status,
                     "progress": 100.0 if a.status == "completed" else done.get(a.id, 0.0), "message": a.short_prompt,
                     "error": a.error_message, "created_at": created, "started_at": None, "finished_at": finished,
                     "duration_s": _duration(None if a.status == "pending" else created, finished, now),
                     "worker": None, "cancelable": a.status not in (*TERMINAL, "canceling")})
    rows.sort(key=lambda r: r["created_at"], reverse=True)
    return rows


def _analysis_progress(ids: list[int]) -> dict[int, float]:
    """Share of each analysis job's sessions already answered, in percent."""
    if not ids:
        return {}
    from peewee import Case, fn

    query = (AnalysisSummary.select(AnalysisSummary.analysis_job, fn.COUNT(AnalysisSummary.id).alias("total"),
                                    fn.SUM(Case(None, [(AnalysisSummary.status == "completed", 1)], 0)).alias("done"))
             .where(AnalysisSummary.analysis_job.in_(ids)).group_by(AnalysisSummary.analysis_job).dicts())
    return {r["analysis_job"]: round(100.0 * (r["done"] or 0) / r["total"], 1) for r in query if r["total"]}


# --- pages and streams -----------------------------------------------------------------------------
@dashboard_bp.get("/dashboard")
def page():
    return render_template("dashboard.html", state=snapshot(), fmt_time=_clock, fmt_duration=_duration_text)


@dashboard_bp.get("/dashboard/state")
def state():
    return jsonify(snapshot())


@dashboard_bp.get("/dashboard/stream")
def stream():
    """A `snapshot` event at once and whenever something changed (looked at every second); comments between."""

    def frames():
        yield sse.retry(2000)
        started = last_sent = time.monotonic()
        previous = None
        while time.monotonic() - started < STREAM_MAX_S:
            current = snapshot()
            # generated_at always moves, and durations of running jobs tick: they alone are no news.
            signature = json.dumps({**current, "generated_at": 0,
                                    "jobs": [{**j, "duration_s": None} for j in current["jobs"]]}, sort_keys=True)
            if signature != previous:
                previous, last_sent = signature, time.monotonic()
                yield sse.event(current, name="snapshot")
            elif time.monotonic() - last_sent >= KEEPALIVE_S:
                last_sent = time.monotonic()
                yield sse.comment("keep-alive")
            if not db.is_closed():
                db.close()  # hold no database connection while asleep
            time.sleep(TICK_S)

    return sse.response(frames())


# --- dead letters ----------------------------------------------------------------------------------
def _queue_or_404(queue: str) -> str:
    known = queues.queue_names(_redis(), declared=_declared_queues())
    if queue not in known:
        raise not_found(f"unknown queue {queue!r}; the queues are {', '.join(known)}")
    return queue


def _no_redis(exc: redis.RedisError) -> ApiError:
    return ApiError(503, f"the job queue is unavailable ({type(exc).__name__}); nothing was changed")


@dashboard_bp.post("/dashboard/dead-letters/<queue>/<message_id>/retry")
def retry_dead_letter(queue: str, message_id: str):
    """Back to the queue's waiting list; a job it names that had failed is made queued again, so it runs."""
    try:
        queue = _queue_or_404(queue)
        letter = queues.dead_letter(_redis(), queue, message_id)
        if letter is None:
            raise not_found(f"queue {queue!r} has no dead letter {message_id!r}")
        # The job first: a worker that takes the message at once must find it queued, not failed.
        requeued = job_control.requeue_failed_job(letter)
        if queues.retry_dead_letter(_redis(), queue, message_id) is None:
            raise not_found(f"queue {queue!r} has no dead letter {message_id!r} (it was just retried or deleted)")
    except redis.RedisError as exc:
        raise _no_redis(exc) from None
    return jsonify(retried=True, queue=queue, message_id=message_id, actor=letter.actor, job_id=requeued)


@dashboard_bp.delete("/dashboard/dead-letters/<queue>/<message_id>")
def delete_dead_letter(queue: str, message_id: str):
    """Drop the message for good; a job it names that is still unfinished is failed, so nothing sends it again."""
    try:
        queue = _queue_or_404(queue)
        letter = queues.dead_letter(_redis(), queue, message_id)
        if letter is None or not queues.delete_dead_letter(_redis(), queue, message_id):
            raise not_found(f"queue {queue!r} has no dead letter {message_id!r}")
    except redis.RedisError as exc:
        raise _no_redis(exc) from None
    failed = job_control.fail_unfinished_job(letter)  # else the reconciler would send it again
    return jsonify(deleted=True, queue=queue, message_id=message_id, failed_job_id=failed)


# --- cancel ----------------------------------------------------------------------------------------
@dashboard_bp.post("/dashboard/jobs/<job_id>/cancel")
def cancel_job(job_id: str):
    """Cancel a transcription, LLM or analysis job (analysis ids are integers, the others UUIDs)."""
    if job_id.isdigit():
        job = AnalysisJob.get_or_none(AnalysisJob.id == int(job_id))
        if job is None:
            raise not_found(f"Analysis job {int(job_id)} not found.")
        job = job_control.cancel_analysis(job)
        return jsonify(id=str(job.id), kind="analysis", status=job.status,
                       message=f"Cancellation of analysis job {job.id} requested"), 202
    job = Job.get_or_none(Job.id == job_id)
    if job is not None:
        job_control.cancel_transcription(_redis(), job)
        return jsonify(id=job.id, kind=job.kind, status="canceled", message=job_control.CANCELED_BY_OPERATOR), 202
    llm_job = LlmJob.get_or_none(LlmJob.id == job_id)
    if llm_job is not None:
        try:
            status = job_control.cancel_llm_job(_redis(), llm_job)
        except redis.RedisError as exc:
            raise _no_redis(exc) from None
        return jsonify(id=llm_job.id, kind=llm_job.kind, status=status,
                       message=job_control.CANCELED_BY_OPERATOR if status == "canceled"
                       else f"Cancellation of LLM job {llm_job.id} requested"), 202
    raise not_found(f"no transcription, LLM or analysis job {job_id!r}")


# --- template helpers ------------------------------------------------------------------------------
def _clock(epoch: float | None) -> str:
    # UTC, as the page's script shows it too: the server's and the browser's time zones may differ.
    return "" if epoch is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch))


def _duration_text(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"
