"""The operators' queue dashboard: a server-rendered page kept live over SSE, and its JSON, declared."""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import redis
from flask import Blueprint, current_app, render_template, send_from_directory
from pydantic import ConfigDict

from jobs import queues
from jobs.heartbeats import alive_workers
from models import AnalysisJob, AnalysisSummary, Job, LlmJob, db
from models.statuses import TERMINAL
from parley.timestamps import seconds
from services import job_control
from web import sse
from web.declared import Documented, Field, SpecWireModel, endpoint, event_stream
from web.errors import ApiError, not_found
from web.openapi_schema import string

# The script and style sheet are served by a declared route (`dashboard.static`), not the blueprint's own.
dashboard_bp = Blueprint("dashboard", __name__, url_prefix=None, template_folder="pages")
STATIC_DIR = Path(__file__).parent / "pages" / "static"

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


# --- shapes ------------------------------------------------------------------------------------------
EPOCH = "(Unix epoch seconds)"


class Shape(SpecWireModel):
    """A body of the dashboard: snake_case names, and texts (messages, errors) sent as they are, untrimmed."""

    model_config = ConfigDict(str_strip_whitespace=False)


class DashboardQueue(Shape):
    name: str
    waiting: int = Field(description="In the queue, not yet taken by a worker")
    in_progress: int = Field(description="Taken by a worker and not yet acknowledged (running or prefetched)")
    delayed: int = Field(description="Waiting out the backoff before a retry")
    dead: int = Field(description="Dead-lettered")


class DashboardWorker(Shape):
    """A worker whose heartbeat has not expired; more fields of the heartbeat may follow"""

    model_config = ConfigDict(extra="allow")  # a heartbeat carries more than is documented, and it all goes out

    id: str = Field(description="host:pid")
    host: str
    pid: int
    queues: list[str]
    device: str = Field(description="CUDA_VISIBLE_DEVICES, cpu or auto")
    busy: list[Annotated[str, Field(description="Actor name")]]
    started_at: float = Field(description=EPOCH)
    seen_at: float = Field(description=f"Last heartbeat {EPOCH}")


class DashboardDeadLetter(Shape):
    queue: str
    message_id: str = Field(description="The broker's id of the message")
    actor: str = Field(description="transcribe, retranscribe, generate, analyze, ...")
    args: list[Any]
    dead_at: float = Field(description=f"When it was dead-lettered {EPOCH}")
    retries: int
    error: str = Field(description="Last line of the traceback it failed with, else the error of the job it names; "
                                   "may be empty")


class DashboardJob(Shape):
    id: str = Field(description="UUID; an analysis job's integer id as digits")
    kind: str = Field(description="transcribe, retranscribe, analysis, or an LLM job's kind (chat_reply, summary, "
                                  "...)")
    queue: str
    status: str
    progress: float | None = Field(description="Percent")
    message: str
    error: str | None
    created_at: float = Field(description=EPOCH)
    started_at: float | None = Field(description=EPOCH)
    finished_at: float | None = Field(description=EPOCH)
    duration_s: float | None = Field(description="Seconds from the start (or creation, for kinds that record no "
                                     "start) to the end or now; null while waiting")
    worker: str | None = Field(description="host:pid that last ran it")
    cancelable: bool = Field(description="Not finished: POST /dashboard/jobs/{job_id}/cancel applies")


class DashboardProcess(Shape):
    """A Procfile line as this host's process supervisor (`parley supervise`) sees it"""

    model_config = ConfigDict(extra="allow")  # the supervisor's state file may grow; what it holds goes out

    name: str
    state: str = Field(description="starting, running, backoff, crash-loop or stopped")
    pid: int | None
    started_at: float | None = Field(description=EPOCH)
    restarts: int
    quick_failures: int = Field(description="Exits in a row, each soon after its start")
    crash_looping: bool
    last_exit: str | None = Field(description="e.g. exit code 1, killed by SIGKILL")
    last_exit_at: float | None = Field(description=EPOCH)
    last_output: str | None = Field(description="The line's last output before it exited")
    next_start_at: float | None = Field(description=f"When a waiting line is restarted {EPOCH}")


class DashboardState(Shape):
    generated_at: float = Field(description=EPOCH)
    redis_error: str | None = Field(description="Why Redis could not be read; queues, workers and dead letters are "
                                    "then empty")
    queues: list[DashboardQueue] = Field(description="asr, asr_quick, io, llm and any other queue found in Redis")
    workers: list[DashboardWorker]
    dead_letters: list[DashboardDeadLetter] = Field(description="Newest first, up to 50 per queue")
    jobs: list[DashboardJob] = Field(description=f"Every unfinished job and the {RECENT} newest finished ones of "
                                     "each type, newest first")
    processes: list[DashboardProcess] = Field(description="The lines of this host's process supervisors; empty "
                                              "when the stack was not started by one")


class DeadLetterRetried(Shape):
    retried: bool
    queue: str
    message_id: str
    actor: str
    job_id: str | None = Field(description="The failed job it names, made queued (analysis: pending) again")


class DeadLetterDeleted(Shape):
    deleted: bool
    queue: str
    message_id: str
    failed_job_id: str | None = Field(description="The unfinished job it named, now failed; null when none")


class DashboardCancel(Shape):
    id: str
    kind: str
    status: str = Field(description="canceled; canceling or processing while the job winds down")
    message: str


# --- pages and streams -----------------------------------------------------------------------------
SNAPSHOT_STREAM = event_stream("`event: snapshot` frames whose data is the JSON of GET /dashboard/state",
                               DashboardState, frames="`event: snapshot` and the state's JSON")


@dashboard_bp.get("/dashboard")
@endpoint(tag="monitoring", operation_id="dashboard", responses={
    200: Documented("HTML page, rendered with the current state and kept live by its script",
                    {"text/html": {"schema": string()}})})
def page():
    """The operators' queue dashboard (HTML)

    Queues with waiting, in-progress, delayed and dead-lettered counts; live workers; dead letters with Retry and
    Delete; recent and running jobs with Cancel. The page follows GET /dashboard/stream.
    """
    return render_template("dashboard.html", state=snapshot(), fmt_time=_clock, fmt_duration=_duration_text)


@dashboard_bp.get("/dashboard/static/<path:filename>", endpoint="static")
@endpoint(tag="monitoring", operation_id="dashboard_static", path_parameters={
    "filename": "dashboard.js or dashboard.css"}, responses={
    200: Documented("dashboard.js or dashboard.css", {"application/octet-stream": {"schema": string()}}),
    404: "No such file"})
def static(filename: str):
    """The dashboard's script and style sheet"""
    return send_from_directory(STATIC_DIR, filename)


@dashboard_bp.get("/dashboard/state")
@endpoint(tag="monitoring", operation_id="dashboard_state", responses={200: (DashboardState, "Snapshot")})
def state():
    """The dashboard's current state (JSON)"""
    return DashboardState.model_validate(snapshot())


@dashboard_bp.get("/dashboard/stream")
@endpoint(tag="monitoring", operation_id="dashboard_stream", responses={200: SNAPSHOT_STREAM})
def stream():
    """The dashboard's state, live (Server-Sent Events)

    A snapshot at once, then whenever something changed (checked every second; the ticking durations of running
    jobs alone are no change); a `: keep-alive` comment at least every 5 s. The stream ends after 10 minutes;
    EventSource reconnects (retry: 2000).
    """

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
QUEUE_AND_MESSAGE = {"queue": "Queue name, e.g. asr",
                     "message_id": "message_id of a dead letter in GET /dashboard/state"}
UNKNOWN_LETTER = "Unknown queue, or no such dead letter in it"
NO_REDIS = "Redis is unavailable; nothing was changed"


def _queue_or_404(queue: str) -> str:
    known = queues.queue_names(_redis(), declared=_declared_queues())
    if queue not in known:
        raise not_found(f"unknown queue {queue!r}; the queues are {', '.join(known)}")
    return queue


def _no_redis(exc: redis.RedisError) -> ApiError:
    return ApiError(503, f"the job queue is unavailable ({type(exc).__name__}); nothing was changed")


@dashboard_bp.post("/dashboard/dead-letters/<queue>/<message_id>/retry")
@endpoint(tag="monitoring", operation_id="dashboard_retry_dead_letter", path_parameters=QUEUE_AND_MESSAGE,
          responses={200: (DeadLetterRetried, "Moved to the end of the queue's waiting list"), 404: UNKNOWN_LETTER,
                     503: NO_REDIS})
def retry_dead_letter(queue: str, message_id: str):
    """Put a dead letter back on its queue

    Atomic: the message leaves the dead letters and joins the waiting list with its retry count reset. A
    transcription, LLM or analysis job it names that had failed is set back to queued (its partial results were
    already dropped), so the worker runs it again instead of skipping it.
    """
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
    return DeadLetterRetried(retried=True, queue=queue, message_id=message_id, actor=letter.actor, job_id=requeued)


@dashboard_bp.delete("/dashboard/dead-letters/<queue>/<message_id>")
@endpoint(tag="monitoring", operation_id="dashboard_delete_dead_letter", path_parameters=QUEUE_AND_MESSAGE,
          responses={200: (DeadLetterDeleted, "Deleted"), 404: UNKNOWN_LETTER, 503: NO_REDIS})
def delete_dead_letter(queue: str, message_id: str):
    """Drop a dead letter for good

    A transcription, LLM or analysis job it names that is still unfinished is failed, so nothing sends it again;
    one that already failed is left as it is.
    """
    try:
        queue = _queue_or_404(queue)
        letter = queues.dead_letter(_redis(), queue, message_id)
        if letter is None or not queues.delete_dead_letter(_redis(), queue, message_id):
            raise not_found(f"queue {queue!r} has no dead letter {message_id!r}")
    except redis.RedisError as exc:
        raise _no_redis(exc) from None
    failed = job_control.fail_unfinished_job(letter)  # else the reconciler would send it again
    return DeadLetterDeleted(deleted=True, queue=queue, message_id=message_id, failed_job_id=failed)


# --- cancel ----------------------------------------------------------------------------------------
@dashboard_bp.post("/dashboard/jobs/<job_id>/cancel")
@endpoint(tag="monitoring", operation_id="dashboard_cancel_job", path_parameters={
    "job_id": "id from GET /dashboard/state (a UUID, or an analysis job's integer)"}, responses={
    202: (DashboardCancel, "Canceled, or cancellation requested (a running job stops at its next step)"),
    400: "An analysis job id of 0", 404: "No such job", 409: "The job is already completed, failed or canceled"})
def cancel_job(job_id: str):
    """Cancel a transcription, LLM or analysis job

    A transcription becomes canceled at once (its waiting queue message is dropped; a worker running it stops at
    its next segment) and its session failed (or completed, for a re-transcription that keeps a transcript). An
    LLM job: canceled if still queued, else it stops at its next token. An analysis job becomes canceling, as
    POST /api/analysis-jobs/{job_id}/cancel does.
    """
    if job_id.isdigit():
        job = AnalysisJob.get_or_none(AnalysisJob.id == int(job_id))
        if job is None:
            raise not_found(f"Analysis job {int(job_id)} not found.")
        job = job_control.cancel_analysis(job)
        return DashboardCancel(id=str(job.id), kind="analysis", status=job.status,
                               message=f"Cancellation of analysis job {job.id} requested"), 202
    job = Job.get_or_none(Job.id == job_id)
    if job is not None:
        job_control.cancel_transcription(_redis(), job)
        return DashboardCancel(id=job.id, kind=job.kind, status="canceled",
                               message=job_control.CANCELED_BY_OPERATOR), 202
    llm_job = LlmJob.get_or_none(LlmJob.id == job_id)
    if llm_job is not None:
        try:
            status = job_control.cancel_llm_job(_redis(), llm_job)
        except redis.RedisError as exc:
            raise _no_redis(exc) from None
        return DashboardCancel(id=llm_job.id, kind=llm_job.kind, status=status,
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
