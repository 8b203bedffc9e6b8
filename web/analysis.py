"""Multi-session analysis jobs: create, list, detail, live stream (SSE), cancel, delete, with declared shapes."""
from __future__ import annotations

import json
import queue
from typing import Annotated, Literal, Union

from flask import Blueprint, Response
from pydantic import ConfigDict, RootModel, StringConstraints, field_validator

from models import AnalysisJob as JobRow, AnalysisSummary as SummaryRow, Session
from models.statuses import TERMINAL, AnalysisStatus, AnalysisSummaryStatus
from parley.timestamps import now_ms
from services import analyses, job_control, llm_config
from services.llm_config import LOCAL_BASE_URL
from web import sse
from web.context import hub, settings
from web.declared import (ID_DIGITS, INT64_MAX, Confirmation, Documented, Field, LenientBoolean, SparseWireModel,
                          StoredModel, WireModel, endpoint, event_stream, lenient_integer, lenient_number, one_of)
from web.errors import ApiError, bad_request, not_found
from web.openapi_schema import string
from web.sessions import numeric_id
from web.streams import RESYNC

analysis_bp = Blueprint("analysis", __name__, url_prefix="/api/analysis-jobs")

TAG = "analysis"
MAX_SESSIONS, PROMPT_CHARS = 50, (10, 5000)
MAP_PROMPT_MAX = 2000
BASE_URL_MAX = 2048
MS = "(Unix epoch milliseconds)"
# The worker's events on the stream (workers.analysis.Stream), besides the snapshot every connection starts with.
STREAM_EVENT_TYPES = ["status", "start", "thinking", "token", "truncated", "end", "error"]
STREAM_PHASES = ["map", "reduce", "status"]


def channel_id(job_id: int) -> str:
    return f"analysis-{job_id}"


# --- shapes ---------------------------------------------------------------------------------------
class AnalysisJob(StoredModel):
    """An analysis job as listed (snake_case). The last seven fields are the job's own LLM settings"""

    id: int = Field(ge=1, description="Analysis job id")
    original_prompt: str = Field(description="The question, trimmed")
    short_prompt: str = Field(description='A title: first `Analysis of "<first 30 characters>..." (summarizing)`, '
                              "later a short title the model wrote")
    status: Literal[tuple(s.value for s in AnalysisStatus)] = Field(description=(
        "State of an analysis job: generating_strategy (advanced strategy only), pending, mapping, reducing, then "
        "completed; or failed; or canceling, then canceled"))
    final_result: str | None = Field(description="The combined answer; may start with a <think>...</think> block")
    error_message: str | None = Field(description="Why the job failed")
    created_at: int = Field(description=f"Creation time {MS}")
    completed_at: int | None = Field(description=f"When it completed, failed or was canceled {MS}")
    model_name: str | None = Field(description="The model the job uses")
    context_size: int | None = Field(ge=1, description="Context size asked for; null: estimated or the model's own")
    strategy_json: str | None = Field(description="The advanced strategy as raw JSON; null without one")
    thinking_budget: int | None = Field(ge=-1, description="-1 unrestricted, 0 off, >0 a limit")
    temperature: float | None = Field(ge=0, le=2)
    top_p: float | None = Field(ge=0, le=1)
    repeat_penalty: float | None = Field(ge=0.5, le=2)
    num_gpu_layers: int | None = Field(ge=0, description="null: auto")
    map_phase_system_prompt: str | None = Field(max_length=MAP_PROMPT_MAX, description="The system prompt of the "
                                                "map step; null: the default")
    llm_base_url: str | None = Field(description="The remote LLM server; null: the local engine")

    @classmethod
    def of(cls, job: JobRow, **more) -> AnalysisJob:
        return cls(id=job.id, original_prompt=job.original_prompt, short_prompt=job.short_prompt, status=job.status,
                   final_result=job.final_result, error_message=job.error_message, created_at=job.created_at_ms,
                   completed_at=job.completed_at_ms, model_name=job.model_name, context_size=job.context_size,
                   strategy_json=job.strategy_json, thinking_budget=job.thinking_budget, temperature=job.temperature,
                   top_p=job.top_p, repeat_penalty=job.repeat_penalty, num_gpu_layers=job.num_gpu_layers,
                   map_phase_system_prompt=job.map_phase_system_prompt, llm_base_url=job.llm_base_url, **more)


class AnalysisSummaryRow(StoredModel):
    """One session's answer to the job's question (the map step)"""

    id: int = Field(ge=1, description="Summary id")
    analysis_job_id: int = Field(ge=1, description="Analysis job id")
    session_id: int = Field(ge=1, description="The session")
    summary_text: str | None = Field(description="The session's answer once completed; may start with a "
                                     "<think>...</think> block")
    status: Literal[tuple(s.value for s in AnalysisSummaryStatus)] = Field(description="State of one session's answer")
    error_message: str | None = Field(description="Why this session failed")

    @classmethod
    def of(cls, row: SummaryRow, **more) -> AnalysisSummaryRow:
        return cls(id=row.id, analysis_job_id=row.analysis_job_id, session_id=row.session_id,
                   summary_text=row.summary_text, status=row.status, error_message=row.error_message, **more)


class AnalysisSessionSummary(AnalysisSummaryRow):
    """A summary row with its session's name and date"""

    session_name: str = Field(alias="sessionName", description='The session name, else its file name, else '
                              '"Session ID <id>"')
    session_date: str = Field(alias="sessionDate", description="The session date (as SessionMeta.date), or empty")


class AnalysisStrategy(StoredModel):
    """The plan the model wrote for a job with useAdvancedStrategy (the parsed strategy_json)"""

    # Not bounded here: when the model's plan is unusable, the question itself (up to 5000 characters) stands in.
    intermediate_question: str = Field(description="The question asked of each session (the map step)")
    final_synthesis_instructions: str = Field(description="How the per-session answers are combined (the reduce "
                                              "step)")


class AnalysisJobDetail(AnalysisJob):
    """A job with its per-session summaries; strategy is null (never absent) without an advanced strategy"""

    summaries: list[AnalysisSessionSummary] = Field(description="One per session, by session date (then id)")
    strategy: AnalysisStrategy | None


class AnalysisJobCreate(WireModel):
    """The model, its context and the given parameters also become the active LLM settings"""

    session_ids: list[Annotated[int, Field(ge=1, le=INT64_MAX)]] = Field(
        min_length=1, max_length=MAX_SESSIONS, description=f"1 to {MAX_SESSIONS} sessions, each with a completed "
        "transcript; duplicates are dropped")
    prompt: str = Field(min_length=PROMPT_CHARS[0], max_length=PROMPT_CHARS[1], description=(
        f"The question; trimmed, then {PROMPT_CHARS[0]} to {PROMPT_CHARS[1]} characters"))
    model_name: str | None = Field(None, description="A model in the store (any name with a remote baseUrl); "
                                   "absent, null or empty: the active model")
    use_advanced_strategy: LenientBoolean | None = Field(False, description=(
        "The model first writes a strategy (a per-session question and how to combine the answers)"))
    context_size: lenient_integer(minimum=1) | None = Field(None, description=(
        "At most the model's context length; absent: estimated from the longest transcript, the prompt and 4096 "
        "tokens"))
    # Taken as written, not trimmed: it is a prompt.
    map_phase_system_prompt: Annotated[str, StringConstraints(strip_whitespace=False)] | None = Field(
        None, max_length=MAP_PROMPT_MAX, description="System prompt of the map step; empty or null: the default")
    base_url: str | None = Field(None, max_length=BASE_URL_MAX, description=(
        f"A remote OpenAI-compatible server (http(s), at most {BASE_URL_MAX} characters); null, empty or "
        f"{LOCAL_BASE_URL}: the local engine"))
    temperature: lenient_number(minimum=0, maximum=2) | None = None
    top_p: lenient_number(minimum=0, maximum=1) | None = None
    repeat_penalty: lenient_number(minimum=0.5, maximum=2) | None = None
    num_gpu_layers: lenient_integer(minimum=0) | None = None
    thinking_budget: lenient_integer(minimum=-1) | None = Field(None, description="-1 unrestricted, 0 off, >0 a "
                                                                "limit")

    @field_validator("base_url")
    @classmethod
    def remote_only(cls, value: str | None) -> str | None:
        """None stands for the local engine."""
        if llm_config.is_local(value):
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return value


class AnalysisJobAccepted(WireModel):
    """Follow it with GET /api/analysis-jobs/{job_id} or its stream"""

    job_id: int = Field(ge=1, description="Analysis job id")


# --- the stream's events (sent by stream below, and by workers.analysis.Stream) ----------------------
class AnalysisStreamSnapshot(WireModel):
    """The first event of every connection; it has no jobId or timestamp"""

    type: Literal["snapshot"]
    phase: Literal["status"]
    job: AnalysisJob
    summaries: list[AnalysisSummaryRow] = Field(description="Ordered by id")


class AnalysisStreamEvent(SparseWireModel):
    """A progress event of the worker; which other fields it carries depends on type and phase"""

    type: Literal[tuple(STREAM_EVENT_TYPES)]
    phase: Literal[tuple(STREAM_PHASES)]
    job_id: int = Field(ge=1)
    timestamp: int = Field(description=f"When it was sent {MS}")
    status: str | None = Field(None, description="status events: mapping, reducing, thinking, responding, or (phase "
                               "status) completed, canceled, failed; error events of phase status: failed")
    session_id: int | None = Field(None, ge=1, description="Map events: the session")
    summary_id: int | None = Field(None, ge=1, description="Map events: the summary row")
    delta: str | None = Field(None, description="thinking and token events: the new text")
    prompt_tokens: int | None = Field(None, ge=0)
    completion_tokens: int | None = Field(None, ge=0)
    duration: int | None = Field(None, ge=0, description="end events: generation time in milliseconds")
    original_tokens: int | None = Field(None, ge=0, description="truncated events: the transcript's tokens")
    final_tokens: int | None = Field(None, ge=0, description="truncated events: tokens kept (head and tail)")
    dropped_paragraphs: int | None = Field(None, ge=0)
    message: str | None = Field(None, description="error events: what went wrong")


class AnalysisStreamMessage(RootModel[Union[AnalysisStreamSnapshot, AnalysisStreamEvent]]):
    """The JSON of one `data:` line"""

    model_config = ConfigDict(json_schema_extra=one_of)


JOB_STREAM = event_stream("Server-Sent Events stream of the job", AnalysisStreamMessage)


# --- lookups --------------------------------------------------------------------------------------
# The route takes any text and answers 400 to anything but 1 to 18 digits worth at least 1.
POSITIVE_DIGITS = {**ID_DIGITS, "description": "Positive integer (1 or more), as digits", "pattern": "^0*[1-9][0-9]*$"}
JOB_ID = {"job_id": ("Analysis job id (jobId of POST /api/analysis-jobs)", POSITIVE_DIGITS)}
BAD_ID = "Job id is not a positive integer"
UNKNOWN = "Unknown analysis job"


def job_or_404(job_id: str) -> JobRow:
    jid = numeric_id(job_id, "jobId")
    if jid < 1:
        raise bad_request("jobId must be at least 1")
    job = JobRow.get_or_none(JobRow.id == jid)
    if job is None:
        raise not_found(f"Analysis job {jid} not found.")
    return job


def detail(job: JobRow) -> AnalysisJobDetail:
    rows = (SummaryRow.select(SummaryRow, Session).join(Session)
            .where(SummaryRow.analysis_job == job.id).order_by(Session.date, Session.id))
    summaries = [AnalysisSessionSummary.of(s, session_name=s.session.session_name or s.session.file_name
                                           or f"Session ID {s.session_id}", session_date=s.session.date or "")
                 for s in rows]
    strategy = AnalysisStrategy(**json.loads(job.strategy_json)) if job.strategy_json else None
    return AnalysisJobDetail.of(job, summaries=summaries, strategy=strategy)


# --- create ---------------------------------------------------------------------------------------
@analysis_bp.post("")
@endpoint(tag=TAG, json=AnalysisJobCreate, operation_id="create_analysis_job", responses={
    202: (AnalysisJobAccepted, "The job was queued"),
    400: f"Body not a JSON object; sessionIds not 1 to {MAX_SESSIONS} positive integers, an unknown session or one "
         f"without a finished transcript; prompt not {PROMPT_CHARS[0]} to {PROMPT_CHARS[1]} characters; "
         f"mapPhaseSystemPrompt not a string of at most {MAP_PROMPT_MAX} characters; baseUrl not an http(s) URL; no "
         "modelName and no active model, or a model not in the store; contextSize larger than the model's, or (when "
         "absent) the longest transcript needing more context than the model has; a parameter out of range",
    503: "The job queue is unavailable (nothing is stored)"})
def create_job(json: AnalysisJobCreate):
    """Ask a question across several sessions

    An LLM worker answers the question for each session (the map step), then combines the answers (the reduce
    step); with useAdvancedStrategy it first writes the questions for both steps. Follow it with
    GET /api/analysis-jobs/{job_id} or GET /api/analysis-jobs/{job_id}/stream. The job's model, context size and
    parameters (except thinkingBudget) become the active LLM settings.
    """
    params = {"temperature": json.temperature, "top_p": json.top_p, "repeat_penalty": json.repeat_penalty,
              "num_gpu_layers": json.num_gpu_layers, "thinking_budget": json.thinking_budget}
    job = analyses.start_analysis(settings(), analyses.AnalysisRequest(
        session_ids=list(dict.fromkeys(json.session_ids)), prompt=json.prompt, map_prompt=json.map_phase_system_prompt,
        base_url=json.base_url, model=json.model_name, context_size=json.context_size,
        advanced=bool(json.use_advanced_strategy), params=params))
    return AnalysisJobAccepted(job_id=job.id), 202


# --- read -----------------------------------------------------------------------------------------
@analysis_bp.get("")
@endpoint(tag=TAG, operation_id="list_analysis_jobs", responses={200: (list[AnalysisJob], "All jobs, newest first")})
def list_jobs():
    """List analysis jobs"""
    return [AnalysisJob.of(j) for j in JobRow.select().order_by(JobRow.created_at_ms.desc())]


@analysis_bp.get("/<job_id>")
@endpoint(tag=TAG, path_parameters=JOB_ID, operation_id="get_analysis_job",
          responses={200: (AnalysisJobDetail, "The job"), 400: BAD_ID, 404: UNKNOWN})
def get_job(job_id: str):
    """An analysis job with its per-session summaries"""
    return detail(job_or_404(job_id))


@analysis_bp.get("/<job_id>/stream")
@endpoint(tag=TAG, path_parameters=JOB_ID, operation_id="stream_analysis_job", responses={
    200: JOB_STREAM,
    400: Documented(f"{BAD_ID} (plain text: the message)", {"text/plain": {"schema": string()}}),
    404: Documented("Unknown analysis job (plain text `Job not found`)",
                    {"text/plain": {"schema": string(enum=["Job not found"])}})})
def stream(job_id: str):
    """Follow an analysis job live (Server-Sent Events)

    Server-Sent Events for `new EventSource(...)`: every event is unnamed (no `event:`, `id:` or `retry:` lines),
    one line `data: <compact JSON>` and a blank line; lines starting with `:` are keep-alive comments (about every
    2 s). Each connection, reconnects included, starts with a `snapshot` (schema `AnalysisStreamSnapshot`): the job
    row and its raw summary rows. Then come the worker's events as they happen (schema `AnalysisStreamEvent`, each
    with `jobId` and `timestamp`):

    | type | phase | other fields |
    |---|---|---|
    | `status` | `map` / `reduce` | `status`: `mapping` / `reducing` when the phase starts |
    | `truncated` | `map` | `sessionId`, `summaryId`, `originalTokens`, `finalTokens`, `droppedParagraphs` |
    | `start` | `map` / `reduce` | `promptTokens` (map: also `sessionId`, `summaryId`) |
    | `status` | `map` / `reduce` | `status`: `thinking`, then `responding` before the first token (map: \
`sessionId`, `summaryId`) |
    | `thinking` / `token` | `map` / `reduce` | `delta`: a piece of the reasoning / of the answer (map: \
`sessionId`, `summaryId`) |
    | `end` | `map` / `reduce` | `promptTokens`, `completionTokens`, `duration` (ms) (map: `sessionId`, \
`summaryId`) |
    | `error` | `map` | `sessionId`, `summaryId`, `message`: that session failed; the job goes on |
    | `error` | `status` | `status`: `failed`, `message`; the terminal `status` event follows |
    | `status` | `status` | `status`: `completed`, `canceled` or `failed`: the last event; the stream then closes |

    A job that is already completed, failed or canceled gets its snapshot and the terminal `status` event at once.
    A job that ends while an event was missed still gets the terminal event. Errors are plain text, not `Error`
    JSON: an unknown job is a 404 `Job not found`.
    """
    try:
        job = job_or_404(job_id)
    except ApiError as exc:
        return Response("Job not found" if exc.status == 404 else exc.message, status=exc.status,
                        mimetype="text/plain")
    q = hub().register(channel_id(job.id))  # before the snapshot: nothing published after it is missed
    events = hub()

    def relay():
        try:
            current = JobRow.get_by_id(job.id)
            summaries = [AnalysisSummaryRow.of(s).model_dump() for s in current.summaries.order_by(SummaryRow.id)]
            yield sse.event({"type": "snapshot", "phase": "status", "job": AnalysisJob.of(current).model_dump(),
                             "summaries": summaries})
            if current.status in TERMINAL:
                yield sse.event(_terminal(current))
                return
            while True:
                try:
                    item = q.get(timeout=2.0)
                except queue.Empty:
                    yield sse.comment("keep-alive")
                    latest = JobRow.get_by_id(job.id)
                    if latest.status in TERMINAL:  # ended while a message was lost: end cleanly anyway
                        yield sse.event(_terminal(latest))
                        return
                    continue
                if item is RESYNC:
                    continue
                payload = {k: v for k, v in item.items() if k not in ("job_id", "seq")}
                yield sse.event(payload)
                if payload.get("type") == "status" and payload.get("phase") == "status":
                    return
        finally:
            events.unregister(channel_id(job.id), q)

    return sse.response(relay())


def _terminal(job: JobRow) -> dict:
    return {"type": "status", "phase": "status", "status": job.status, "jobId": job.id, "timestamp": now_ms()}


# --- cancel and delete ----------------------------------------------------------------------------
@analysis_bp.post("/<job_id>/cancel")
@endpoint(tag=TAG, path_parameters=JOB_ID, operation_id="cancel_analysis_job", responses={
    202: (Confirmation, '"Cancellation request for job <id> accepted."'), 400: BAD_ID, 404: UNKNOWN,
    409: "The job is already completed, failed or canceled"})
def cancel(job_id: str):
    """Ask a running analysis job to stop

    No body. The status becomes canceling; the worker stops between steps and sets canceled.
    """
    job = job_control.cancel_analysis(job_or_404(job_id))
    return Confirmation(message=f"Cancellation request for job {job.id} accepted."), 202


@analysis_bp.delete("/<job_id>")
@endpoint(tag=TAG, path_parameters=JOB_ID, operation_id="delete_analysis_job", responses={
    200: (Confirmation, '"Analysis job <id> and all associated data deleted."'), 400: BAD_ID, 404: UNKNOWN})
def delete(job_id: str):
    """Delete an analysis job and its summaries

    The job's state is not checked.
    """
    job = job_or_404(job_id)
    job_control.delete_analysis(job)
    return Confirmation(message=f"Analysis job {job.id} and all associated data deleted.")
