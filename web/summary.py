"""The transcription service's summary and chat APIs, answered by the LLM worker."""
from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from flask import Blueprint
from pydantic import BeforeValidator
from pydantic_core import PydanticUseDefault

from models import LlmJob
from models.statuses import TERMINAL, LlmJobStatus
from services import llm_config
from services.llm_jobs import queue_llm_job
from web.context import hub, settings
from web.declared import Field, SpecWireModel, endpoint, lenient_integer, lenient_number
from web.errors import ApiError, bad_request, not_found
from web.llm import LlmJobState
from web.streams import wait_until_finished
from web.transcribe import SPEC_STATE, SpecJobState, spec_status

summary_bp = Blueprint("summary", __name__, url_prefix="/api")

SummaryFormat = Literal["paragraph", "bullet_points", "key_points"]
Role = Literal["system", "user", "assistant"]
FORMATS = get_args(SummaryFormat)
ROLES = get_args(Role)
MESSAGE_MAX = 10_000
QUEUE_DOWN = "Job queue unavailable"
BAD_MODEL = "model_name names no model here, or no model is configured"


def aliases() -> set[str]:
    """Model names of other products that mean "the model the operator configured" (PARLEY_LLM_ALIASES)."""
    return {a.strip() for a in settings().llm_aliases.split(",") if a.strip()}


def model_for(name: str | None) -> str:
    try:
        return llm_config.resolve_model_name(settings(), name, aliases())
    except ValueError as exc:
        raise bad_request(str(exc)) from None


def _null_is_default(value: Any) -> Any:
    if value is None or value == "":
        raise PydanticUseDefault()
    return value


def defaulted(kind: Any) -> Any:
    """The type of a field where null and "" mean its default, as the transcription API always took them."""
    return Annotated[kind | None, BeforeValidator(_null_is_default)]


MODEL_NAME = Field(None, description="Model to use: absent, null, an alias (PARLEY_LLM_ALIASES: gpt-3.5-turbo, gpt-4, "
                   "gpt-4o, default) or the active model's name mean the active model; otherwise a model in the store")


# --- shapes --------------------------------------------------------------------------------------------
class ContextSegment(SpecWireModel):
    """A transcript segment: its text and, where known, its speaker"""

    text: str
    speaker: str | None = Field(None, description="Prefixed as `speaker: ` when non-empty")


class TranscriptContext(SpecWireModel):
    transcript: list[ContextSegment] | None = Field(None, description="Segments (e.g. those of a transcription "
                                                    "result); used when full_text is empty")
    full_text: str | None = Field(None, description="The transcript as one text; wins over transcript when not "
                                  "blank")

    def text(self) -> str:
        """The transcript to work on: full_text, else the segments joined (with speakers when they have them)."""
        if self.full_text:
            return self.full_text
        lines = [f"{s.speaker}: {s.text}" if s.speaker else s.text for s in self.transcript or []]
        return "\n".join(line for line in lines if line)


class SummaryRequest(TranscriptContext):
    """full_text or a non-empty transcript is needed"""

    format: defaulted(SummaryFormat) = Field("paragraph", description="Style of the summary; null (or empty) means "
                                             "paragraph")
    max_length: defaulted(lenient_integer(minimum=10, maximum=5000)) = Field(500, description="Most words in the "
                                                                             "summary")
    model_name: str | None = MODEL_NAME


class LlmJobReport(SpecWireModel):
    # A job as the transcription API reports it: the spec's status, with Parley's own state beside it.
    job_id: str = Field(description="Job id (a UUID)", json_schema_extra={"format": "uuid"})
    status: SpecJobState = Field(description=SPEC_STATE)
    state: LlmJobState = Field(description="State of a language-model job")

    @classmethod
    def of(cls, job: LlmJob, **fields: Any) -> LlmJobReport:
        return cls.model_validate(spec_status({"job_id": job.id, "status": job.status, **fields}))


class SummaryAccepted(LlmJobReport):
    """Follow it with GET /api/summary/status/{job_id}"""

    message: str = Field(json_schema_extra={"example": "Summary queued"})


class SummaryStatus(LlmJobReport):
    message: str = Field(description="Progress message, or the error once failed")
    progress: float = Field(ge=0, le=100, description="Percent complete, one decimal")


class SummaryResult(SpecWireModel):
    summary: str
    topics: list[str] = Field(description="Main topics, at most 6")
    length: int = Field(ge=0, description="Words in the summary")
    model_used: str


class ChatModel(SpecWireModel):
    id: str = Field(description="Value for model_name")
    name: str
    description: str


class ChatModelList(SpecWireModel):
    models: list[ChatModel] = Field(description="The aliases, then the local store's models (or the remote server's "
                                    "active model)")


class ChatTurn(SpecWireModel):
    role: Role
    content: str = Field(max_length=MESSAGE_MAX)


class ChatCompletionRequest(TranscriptContext):
    """transcript or full_text, when given, is the context the model answers about"""

    messages: list[ChatTurn] = Field(min_length=1, description="The conversation; the last message must be the "
                                     "user's")
    temperature: defaulted(lenient_number(minimum=0, maximum=2)) = 0.7
    max_tokens: defaulted(lenient_integer(minimum=1, maximum=4096)) = 500
    model_name: str | None = MODEL_NAME


class ChatAnswer(SpecWireModel):
    role: Literal["assistant"]
    content: str


class ChatTokens(SpecWireModel):
    prompt: int = Field(ge=0)
    completion: int = Field(ge=0)
    total: int = Field(ge=0)


class ChatCompletion(SpecWireModel):
    message: ChatAnswer
    model_used: str
    usage: ChatTokens
    is_truncated: bool = Field(description="The transcript was shortened (head and tail kept) to fit the context")


class ChatPending(LlmJobReport):
    """The answer is not ready (or the job was canceled); fetch GET /api/chat/result/{job_id}"""

    message: str = Field(json_schema_extra={"example": "still running; fetch /api/chat/result/<job_id>"})


def job_or_404(job_id: str, kind: str) -> LlmJob:
    job = LlmJob.get_or_none((LlmJob.id == job_id) & (LlmJob.kind == kind))
    if job is None:
        raise not_found(f"{kind} job {job_id} not found")
    return job


# --- summaries ------------------------------------------------------------------------------------
SUMMARY_JOB = {"job_id": "job_id returned by POST /api/summary/"}
UNKNOWN_SUMMARY = "Unknown summary job"


@summary_bp.post("/summary/")
@endpoint(tag="summary", json=SummaryRequest, responses={
    200: (SummaryAccepted, "Summary queued"),
    400: "Body not a JSON object; nothing to summarise; a malformed transcript; an unknown format; max_length not "
         f"an integer in 10..5000; {BAD_MODEL}",
    503: QUEUE_DOWN})
def create_summary(json: SummaryRequest):
    """Queue a summary of a transcript

    An LLM worker writes the summary (part by part when the transcript does not fit the context) and lists its
    topics. Follow it with GET /api/summary/status/{job_id}, then fetch GET /api/summary/{job_id}.
    """
    text = json.text()
    if not text:
        raise bad_request("nothing to summarise: give full_text or a non-empty transcript")
    model = model_for(json.model_name)
    job = queue_llm_job("summary", model=model, params={"text": text, "max_length": json.max_length,
                                                        "format": json.format})
    return SummaryAccepted.of(job, message="Summary queued")


@summary_bp.get("/summary/status/<job_id>")
@endpoint(tag="summary", path_parameters=SUMMARY_JOB, responses={200: (SummaryStatus, "The job"),
                                                                 404: UNKNOWN_SUMMARY})
def summary_status(job_id: str):
    """Progress of a summary"""
    job = job_or_404(job_id, "summary")
    return SummaryStatus.of(job, message=job.error or job.message, progress=round(job.progress, 1))


@summary_bp.get("/summary/<job_id>")
@endpoint(tag="summary", path_parameters=SUMMARY_JOB, responses={
    200: (SummaryResult, "The summary"),
    404: UNKNOWN_SUMMARY,
    409: "The summary is not completed (queued, processing, failed or canceled)"})
def summary_result(job_id: str):
    """A completed summary"""
    job = job_or_404(job_id, "summary")
    if job.status != LlmJobStatus.COMPLETED:
        reason = f": {job.error}" if job.error else ""
        raise ApiError(409, f"summary {job.id} is {job.status}{reason}")
    return SummaryResult.model_validate(job.result)


# --- chat -----------------------------------------------------------------------------------------
CHAT_ANSWERS = {200: (ChatCompletion, "The answer"), 202: (ChatPending, "Not answered yet (or canceled)")}


@summary_bp.get("/chat/models")
@endpoint(tag="summary", responses={200: (ChatModelList, "The models")})
def chat_models():
    """Models POST /api/chat/ and POST /api/summary/ accept as model_name"""
    from services import llmstore

    row = llm_config.current()
    active = row.active_model
    models = [ChatModel(id=alias, name=alias, description=f"Served by the configured model ({active or 'none yet'})")
              for alias in sorted(aliases())]
    if llm_config.is_local(row.base_url):
        models += [ChatModel(id=i.name, name=f"{i.architecture} {i.parameter_size} {i.quantization}",
                             description=f"Local GGUF model, context {i.context_length}")
                   for i in llmstore.list_models(settings())]
    elif active:
        models.append(ChatModel(id=active, name=active, description=f"Served by {row.base_url}"))
    return ChatModelList(models=models)


@summary_bp.post("/chat/")
@endpoint(tag="summary", operation_id="chat_completion", json=ChatCompletionRequest, responses={
    **CHAT_ANSWERS,
    400: f"Body not a JSON object; messages empty or malformed, a content over {MESSAGE_MAX} characters, or the last "
         f"message not the user's; temperature not in 0..2; max_tokens not in 1..4096; a malformed transcript; "
         f"{BAD_MODEL}",
    503: f"{QUEUE_DOWN}, or the model could not answer"})
def chat(json: ChatCompletionRequest):
    """Ask the model about a transcript

    Waits for the answer up to PARLEY_CHAT_WAIT_S seconds (120 by default); after that answers 202 with the job id
    to poll at GET /api/chat/result/{job_id}. A transcript too long for the context is cut to its head and tail
    (is_truncated).
    """
    if json.messages[-1].role != "user":
        raise bad_request("the last message must come from the user")
    model = model_for(json.model_name)
    job = queue_llm_job("completion", model=model, params={
        "messages": [m.model_dump() for m in json.messages], "transcript_text": json.text(),
        "temperature": json.temperature, "max_tokens": json.max_tokens})
    q = hub().register(job.id)
    try:
        wait_until_finished(q, lambda: LlmJob.get_by_id(job.id).status in TERMINAL,
                            timeout_s=settings().chat_wait_s)
    finally:
        hub().unregister(job.id, q)
    return _answer(job.id)


@summary_bp.get("/chat/result/<job_id>")
@endpoint(tag="summary", operation_id="chat_completion_result", path_parameters={
    "job_id": "job_id of a 202 answer of POST /api/chat/"}, responses={
    **CHAT_ANSWERS, 404: "Unknown chat job", 503: "The model could not answer"})
def chat_result(job_id: str):
    """The answer of a chat request that took too long"""
    return _answer(job_id)


def _answer(job_id: str) -> ChatCompletion | tuple[ChatPending, int]:
    """The answer once there is one, else 202 with the job to poll."""
    job = job_or_404(job_id, "completion")
    if job.status == LlmJobStatus.COMPLETED:
        return ChatCompletion.model_validate(job.result)
    if job.status == LlmJobStatus.FAILED:
        raise ApiError(503, f"the language model could not answer: {job.error}")
    return ChatPending.of(job, message=f"still running; fetch /api/chat/result/{job.id}"), 202
