"""The transcription service's summary and chat APIs, answered by the LLM worker."""
from __future__ import annotations

from flask import Blueprint, jsonify

from models import LlmJob
from models.statuses import TERMINAL, LlmJobStatus
from services import llm_config
from services.llm_jobs import queue_llm_job
from web import forms
from web.context import hub, settings
from web.errors import ApiError, bad_request, not_found
from web.sessions import json_body
from web.streams import wait_until_finished
from web.transcribe import spec_status

summary_bp = Blueprint("summary", __name__, url_prefix="/api")

FORMATS = ("paragraph", "bullet_points", "key_points")
ROLES = ("system", "user", "assistant")


def aliases() -> set[str]:
    """Model names of other products that mean "the model the operator configured" (PARLEY_LLM_ALIASES)."""
    return {a.strip() for a in settings().llm_aliases.split(",") if a.strip()}


def model_for(name) -> str:
    if name is not None and not isinstance(name, str):
        raise bad_request("model_name must be a string")
    try:
        return llm_config.resolve_model_name(settings(), name, aliases())
    except ValueError as exc:
        raise bad_request(str(exc)) from None


def transcript_text(body: dict) -> str:
    """The transcript to work on: full_text, else the segments joined (with speakers when they have them)."""
    full = body.get("full_text")
    if full is not None and not isinstance(full, str):
        raise bad_request("full_text must be a string")
    if full and full.strip():
        return full.strip()
    segments = body.get("transcript") or []
    if not isinstance(segments, list):
        raise bad_request("transcript must be a list of segments")
    lines = []
    for n, seg in enumerate(segments):
        if not isinstance(seg, dict) or not isinstance(seg.get("text"), str):
            raise bad_request(f"transcript[{n}] must be an object with a text string")
        speaker = seg.get("speaker")
        lines.append(f"{speaker}: {seg['text'].strip()}" if isinstance(speaker, str) and speaker else seg["text"].strip())
    return "\n".join(line for line in lines if line)


def job_or_404(job_id: str, kind: str) -> LlmJob:
    job = LlmJob.get_or_none((LlmJob.id == job_id) & (LlmJob.kind == kind))
    if job is None:
        raise not_found(f"{kind} job {job_id} not found")
    return job


# --- summaries ------------------------------------------------------------------------------------
@summary_bp.post("/summary/")
def create_summary():
    body = json_body(dict, "object with transcript or full_text")
    text = transcript_text(body)
    if not text:
        raise bad_request("nothing to summarise: give full_text or a non-empty transcript")
    fmt = body.get("format") or "paragraph"
    if fmt not in FORMATS:
        raise bad_request(f"format must be one of {', '.join(FORMATS)}")
    max_length = forms.as_int("max_length", body.get("max_length"), default=500, lo=10, hi=5000)
    model = model_for(body.get("model_name"))
    job = queue_llm_job("summary", model=model, params={"text": text, "max_length": max_length, "format": fmt})
    return jsonify(spec_status({"job_id": job.id, "status": job.status, "message": "Summary queued"}))


@summary_bp.get("/summary/status/<job_id>")
def summary_status(job_id: str):
    job = job_or_404(job_id, "summary")
    return jsonify(spec_status({"job_id": job.id, "status": job.status, "message": job.error or job.message,
                                "progress": round(job.progress, 1)}))


@summary_bp.get("/summary/<job_id>")
def summary_result(job_id: str):
    job = job_or_404(job_id, "summary")
    if job.status != LlmJobStatus.COMPLETED:
        reason = f": {job.error}" if job.error else ""
        raise ApiError(409, f"summary {job.id} is {job.status}{reason}")
    result = job.result
    return jsonify(summary=result["summary"], topics=result["topics"], length=result["length"],
                   model_used=result["model_used"])


# --- chat -----------------------------------------------------------------------------------------
@summary_bp.get("/chat/models")
def chat_models():
    from services import llmstore

    row = llm_config.current()
    active = row.active_model
    models = [{"id": alias, "name": alias, "description": f"Served by the configured model ({active or 'none yet'})"}
              for alias in sorted(aliases())]
    if llm_config.is_local(row.base_url):
        models += [{"id": i.name, "name": f"{i.architecture} {i.parameter_size} {i.quantization}",
                    "description": f"Local GGUF model, context {i.context_length}"} for i in llmstore.list_models(settings())]
    elif active:
        models.append({"id": active, "name": active, "description": f"Served by {row.base_url}"})
    return jsonify(models=models)


@summary_bp.post("/chat/")
def chat():
    body = json_body(dict, "object with messages")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages must be a non-empty list of {role, content}")
    for n, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise bad_request(f"messages[{n}] must be {{role: {'|'.join(ROLES)}, content: string}}")
        if len(m["content"]) > 10_000:
            raise bad_request(f"messages[{n}] is longer than 10000 characters")
    if messages[-1]["role"] != "user":
        raise bad_request("the last message must come from the user")
    temperature = forms.as_float("temperature", body.get("temperature"), default=0.7, lo=0.0)
    if temperature > 2:
        raise bad_request(f"temperature must be between 0 and 2, got {temperature}")
    max_tokens = forms.as_int("max_tokens", body.get("max_tokens"), default=500, lo=1, hi=4096)
    model = model_for(body.get("model_name"))
    job = queue_llm_job("completion", model=model, params={"messages": messages, "transcript_text": transcript_text(body),
                                          "temperature": temperature, "max_tokens": max_tokens})
    return wait_for(job)


def wait_for(job: LlmJob):
    """Answer synchronously while the worker is quick enough (PARLEY_CHAT_WAIT_S), else 202 with the job id."""
    q = hub().register(job.id)
    try:
        wait_until_finished(q, lambda: LlmJob.get_by_id(job.id).status in TERMINAL,
                            timeout_s=settings().chat_wait_s)
    finally:
        hub().unregister(job.id, q)
    return chat_result(job.id)


@summary_bp.get("/chat/result/<job_id>")
def chat_result(job_id: str):
    job = job_or_404(job_id, "completion")
    if job.status == LlmJobStatus.COMPLETED:
        return jsonify(job.result)
    if job.status == LlmJobStatus.FAILED:
        raise ApiError(503, f"the language model could not answer: {job.error}")
    return jsonify(spec_status({"job_id": job.id, "status": job.status,
                                "message": f"still running; fetch /api/chat/result/{job.id}"})), 202
