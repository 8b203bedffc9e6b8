"""Starting a multi-session analysis: check the sessions and the model, store the job and its sessions, send it."""
from __future__ import annotations

import dataclasses

from models import AnalysisJob, AnalysisSummary, LlmSettings, Session, db
from parley.config import Settings
from parley.errors import InvalidInput
from parley.timestamps import now_ms
from services import llm_config, llmstore
from services.queue import send_job
from services.tokens import active_model_path, count_tokens

CONTEXT_BUFFER = 4096  # room for instructions and the answer when the server estimates the context


@dataclasses.dataclass
class AnalysisRequest:
    """What the user asked for, its shapes already checked (web/analysis.py)."""

    session_ids: list[int]
    prompt: str
    map_prompt: str | None = None
    base_url: str | None = None  # None: the local engine
    model: str | None = None  # None: the active model
    context_size: int | None = None
    advanced: bool = False
    params: dict = dataclasses.field(default_factory=dict)  # temperature, top_p, repeat_penalty, num_gpu_layers, thinking_budget


def start_analysis(settings: Settings, request: AnalysisRequest) -> AnalysisJob:
    """Store the job (and make its model and parameters the active LLM settings, as the sessions client's backend
    does) and send it to the `analyze` actor. InvalidInput names what cannot be analysed; QueueUnavailable when
    Redis does not take the message (nothing stays stored)."""
    ids = request.session_ids
    sessions = {s.id: s for s in Session.select().where(Session.id.in_(ids))}
    missing = [i for i in ids if i not in sessions]
    if missing:
        raise InvalidInput(f"unknown session id(s): {', '.join(map(str, missing))}")
    unready = [i for i in ids if sessions[i].status != "completed"]
    if unready:
        raise InvalidInput(f"session(s) without a finished transcript: {', '.join(map(str, unready))}")
    row = llm_config.current()
    model = request.model or row.active_model
    if not isinstance(model, str) or not model:
        raise InvalidInput("modelName is required when no model is active")
    context = request.context_size
    max_context = None
    if request.base_url is None:
        info = llmstore.find(settings, model)
        if info is None:
            raise InvalidInput(f"model {model!r} is not in the model store")
        max_context = info.context_length
    if context is not None and max_context and context > max_context:
        raise InvalidInput(f"contextSize {context} is larger than the model's maximum of {max_context}")
    if context is None and max_context:
        largest = max(s.transcript_token_count or 0 for s in sessions.values())
        needed = largest + count_tokens(request.prompt, gguf=active_model_path()) + CONTEXT_BUFFER
        if needed > max_context:
            raise InvalidInput(f"the longest transcript needs about {needed} tokens of context; the model has "
                               f"{max_context}")
    params = request.params
    with db.atomic():
        job = AnalysisJob.create(
            original_prompt=request.prompt, short_prompt=f'Analysis of "{request.prompt[:30]}..." (summarizing)',
            status="generating_strategy" if request.advanced else "pending", created_at_ms=now_ms(),
            use_advanced_strategy=request.advanced, model_name=model, context_size=context,
            llm_base_url=request.base_url, map_phase_system_prompt=request.map_prompt or None, **params)
        for sid in ids:
            AnalysisSummary.create(analysis_job=job, session=sid)
        LlmSettings.update(active_model=model, base_url=request.base_url, context_size=context,
                           **{k: v for k, v in params.items() if v is not None and k != "thinking_budget"}).where(
            LlmSettings.id == row.id).execute()
    send_job("analyze", job.id, undo=lambda: job.delete_instance(recursive=True))
    return job
