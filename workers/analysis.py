"""A multi-session analysis on the LLM worker: title, optional strategy, one map step per session, a reduce.

Each session's summary is stored the moment it is finished, so a worker killed mid-job resumes with the
sessions still pending. Cancel is seen between two tokens; finished summaries are kept.
"""
from __future__ import annotations

import json
import logging
import time
import types

from models import AnalysisJob, AnalysisSummary, Session
from models.statuses import TERMINAL, AnalysisStatus, AnalysisSummaryStatus
from parley.config import Settings, get_settings
from parley.errors import Canceled
from parley.timestamps import now_ms
from services import events, llm_config, usage
from services.chat_context import head_and_tail
from services.sessions import transcript_text
from services.templates import get_template_text
from workers import llm

log = logging.getLogger(__name__)

MAP_OUTPUT_TOKENS = get_settings().analysis_map_tokens  # longest answer per session
REDUCE_OUTPUT_TOKENS = get_settings().analysis_reduce_tokens  # longest final answer
DEFAULT_MAP_PROMPT = ("You read one therapy or interview session transcript and answer a question about it. "
                      "Answer only from the transcript, concisely, citing speakers where it helps.")
STRATEGY_SCHEMA = {"type": "object", "properties": {"intermediate_question": {"type": "string", "maxLength": 600},
                                                   "final_synthesis_instructions": {"type": "string", "maxLength": 800}},
                   "required": ["intermediate_question", "final_synthesis_instructions"]}


def channel_id(job_id: int) -> str:
    return f"analysis-{job_id}"


class Stream:
    """Publishes the job's events in the shape of the sessions client's analysis stream."""

    def __init__(self, job_id: int):
        self.job_id = job_id
        self.seq = 0

    def __call__(self, type_: str, phase: str, **fields) -> None:
        self.seq += 1
        events.publish({"type": type_, "phase": phase, "jobId": self.job_id, "timestamp": now_ms(),
                        "seq": self.seq, "job_id": channel_id(self.job_id), **fields})


def run(job_id: int, *, settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    job = AnalysisJob.get_or_none(AnalysisJob.id == job_id)
    if job is None or job.status in TERMINAL:
        return
    stream = Stream(job.id)
    try:
        if job.status == AnalysisStatus.CANCELING:
            raise Canceled()
        engine = llm.engine_for(settings, _config(job))
        _title(job, engine)
        if job.use_advanced_strategy and not job.strategy_json:
            _advance(job, "generating_strategy")
            _strategy(job, engine)
        _advance(job, "mapping")
        stream("status", "map", status=AnalysisStatus.MAPPING)
        # Read the list whole first: writing while a SELECT is still open keeps an old SQLite snapshot,
        # and its upgrade to a write fails at once ("database is locked") once another process wrote.
        pending = list(job.summaries.where(AnalysisSummary.status != AnalysisSummaryStatus.COMPLETED)
                       .order_by(AnalysisSummary.id))
        for summary in pending:
            _advance(job, "mapping")  # a cancel that came between two sessions is honoured here
            _map(job, summary, engine, stream)
        _advance(job, "reducing")
        stream("status", "reduce", status=AnalysisStatus.REDUCING)
        _reduce(job, engine, stream)
        _advance(job, "completed", completed_at_ms=now_ms())
        stream("status", "status", status=AnalysisStatus.COMPLETED)
    except Canceled:
        _set(job, status=AnalysisStatus.CANCELED, completed_at_ms=now_ms())
        stream("status", "status", status=AnalysisStatus.CANCELED)
    except Exception as exc:  # noqa: BLE001  (every failure must end the job, and the stream, visibly)
        log.exception("analysis %s failed", job.id)
        message = str(exc) if isinstance(exc, llm.LlmError) else f"{type(exc).__name__}: {exc}"
        _set(job, status=AnalysisStatus.FAILED, error_message=message, completed_at_ms=now_ms())
        stream("error", "status", status=AnalysisStatus.FAILED, message=message)
        stream("status", "status", status=AnalysisStatus.FAILED)


def give_up(job_id: int, reason: str) -> None:
    """Fail an analysis whose message kept killing its worker (jobs/crashes.py); nothing if it is finished."""
    job = AnalysisJob.get_or_none(AnalysisJob.id == job_id)
    if job is None or job.status in TERMINAL:
        return
    message = f"the analysis {reason}"
    _set(job, status=AnalysisStatus.FAILED, error_message=message, completed_at_ms=now_ms())
    stream = Stream(job.id)
    stream("error", "status", status=AnalysisStatus.FAILED, message=message)
    stream("status", "status", status=AnalysisStatus.FAILED)


def _config(job: AnalysisJob):
    """The job's own snapshot of the LLM settings (the API token is never snapshotted: it stays in one place)."""
    current = llm_config.current()
    return types.SimpleNamespace(
        active_model=job.model_name or current.active_model, base_url=job.llm_base_url,
        api_token=current.api_token, context_size=job.context_size, num_gpu_layers=job.num_gpu_layers)


def _options(job: AnalysisJob, max_tokens: int, **extra) -> llm.Options:
    return llm.Options(max_tokens=max_tokens, temperature=job.temperature if job.temperature is not None else 0.7,
                       top_p=job.top_p if job.top_p is not None else 0.9,
                       repeat_penalty=job.repeat_penalty if job.repeat_penalty is not None else 1.1, **extra)


def _advance(job: AnalysisJob, status: str, **changes) -> None:
    """Move to `status` unless a cancel was asked for meanwhile: that request is never overwritten."""
    moved = AnalysisJob.update(status=status, **changes).where(
        (AnalysisJob.id == job.id) & (AnalysisJob.status != AnalysisStatus.CANCELING)).execute()
    if not moved:
        raise Canceled()
    job.status = status
    for name, value in changes.items():
        setattr(job, name, value)


def _set(job: AnalysisJob, **changes) -> None:
    AnalysisJob.update(**changes).where(AnalysisJob.id == job.id).execute()
    for name, value in changes.items():
        setattr(job, name, value)


def _should_stop(job_id: int):
    last = {"at": 0.0, "stop": False}

    def check() -> bool:
        # One row read every half second at most: cheap, and well within "stop within a second".
        now = time.monotonic()
        if now - last["at"] >= 0.5:
            last["at"] = now
            last["stop"] = AnalysisJob.select(AnalysisJob.status).where(AnalysisJob.id == job_id).scalar() == "canceling"
        return last["stop"]
    return check


def _title(job: AnalysisJob, engine) -> None:
    if "(summarizing)" not in job.short_prompt:
        return
    reply = engine.chat([{"role": "system", "content": get_template_text("system_short_prompt_generator")},
                         {"role": "user", "content": job.original_prompt}], _options(job, 24))
    title = " ".join(reply.content.replace("\n", " ").strip(" \"'").split()[:8])
    _set(job, short_prompt=title or job.original_prompt[:60])
    usage.record_llm(source="analysis_short_prompt", model=job.model_name or "", prompt_tokens=reply.prompt_tokens,
                     completion_tokens=reply.completion_tokens, duration_ms=reply.duration_ms)


def _strategy(job: AnalysisJob, engine) -> None:
    reply = engine.chat([{"role": "system", "content": get_template_text("system_analysis_strategist")},
                         {"role": "user", "content": job.original_prompt}],
                        _options(job, 512, json_schema=STRATEGY_SCHEMA))
    try:
        strategy = json.loads(reply.content)
        strategy = {k: str(strategy[k]).strip() for k in ("intermediate_question", "final_synthesis_instructions")}
    except (ValueError, KeyError, TypeError):
        # A strategy cut off mid-JSON is replaced by the plain one rather than failing the job.
        strategy = {"intermediate_question": job.original_prompt,
                    "final_synthesis_instructions": f"Answer this across all sessions: {job.original_prompt}"}
    _set(job, strategy_json=json.dumps(strategy))
    _advance(job, "pending")
    usage.record_llm(source="analysis_strategy", model=job.model_name or "", prompt_tokens=reply.prompt_tokens,
                     completion_tokens=reply.completion_tokens, duration_ms=reply.duration_ms)


def _generate(job: AnalysisJob, engine, messages, *, max_tokens: int, phase: str, stream: Stream, **ids) -> llm.Reply:
    state = {"responding": False}

    def on_piece(piece: llm.Piece) -> None:
        if piece.thinking:
            stream("thinking", phase, delta=piece.text, **ids)
        else:
            if not state["responding"]:
                stream("status", phase, status="responding", **ids)
                state["responding"] = True
            stream("token", phase, delta=piece.text, **ids)

    stream("status", phase, status="thinking", **ids)
    reply = engine.chat(messages, _options(job, max_tokens), should_cancel=_should_stop(job.id), on_piece=on_piece)
    if reply.canceled:
        raise Canceled()
    return reply


def _map(job: AnalysisJob, summary: AnalysisSummary, engine, stream: Stream) -> None:
    session = Session.get_by_id(summary.session_id)
    question = json.loads(job.strategy_json)["intermediate_question"] if job.strategy_json else job.original_prompt
    system = job.map_phase_system_prompt or DEFAULT_MAP_PROMPT
    text = transcript_text(session.id, with_speakers=session.show_speakers != 0)
    context = engine.context_size or job.context_size or llm_config.default_context_cap()
    budget = context - MAP_OUTPUT_TOKENS - engine.count_tokens(system + question) - 64
    tokens = engine.count_tokens(text)
    ids = {"sessionId": session.id, "summaryId": summary.id}
    if tokens > budget:
        before = text.count("\n") + 1
        text = head_and_tail(text, tokens=tokens, budget=max(budget, 0))
        stream("truncated", "map", originalTokens=tokens, finalTokens=engine.count_tokens(text),
               droppedParagraphs=max(0, before - text.count("\n")), **ids)
    AnalysisSummary.update(status="processing").where(AnalysisSummary.id == summary.id).execute()
    messages = [{"role": "system", "content": system},
                {"role": "user", "content": f'SESSION: {session.session_name or session.file_name} '
                                            f'({session.date[:10]})\nTRANSCRIPT:\n"""\n{text}\n"""\n\nQUESTION:\n{question}'}]
    prompt_tokens = sum(engine.count_tokens(m["content"]) for m in messages)
    stream("start", "map", promptTokens=prompt_tokens, **ids)
    try:
        reply = _generate(job, engine, messages, max_tokens=MAP_OUTPUT_TOKENS, phase="map", stream=stream, **ids)
    except llm.LlmError as exc:  # one session failing does not fail the analysis
        AnalysisSummary.update(status=AnalysisSummaryStatus.FAILED, error_message=str(exc)).where(
            AnalysisSummary.id == summary.id).execute()
        stream("error", "map", message=str(exc), **ids)
        return
    AnalysisSummary.update(status=AnalysisSummaryStatus.COMPLETED, summary_text=reply.stored_text,
                           prompt_tokens=reply.prompt_tokens,
                           completion_tokens=reply.completion_tokens, duration_ms=reply.duration_ms).where(
        AnalysisSummary.id == summary.id).execute()
    usage.record_llm(source="analysis_map", model=job.model_name or "", prompt_tokens=reply.prompt_tokens,
                     completion_tokens=reply.completion_tokens, duration_ms=reply.duration_ms)
    stream("end", "map", promptTokens=reply.prompt_tokens, completionTokens=reply.completion_tokens,
           duration=reply.duration_ms, **ids)


def _reduce(job: AnalysisJob, engine, stream: Stream) -> None:
    rows = (AnalysisSummary.select(AnalysisSummary, Session).join(Session)
            .where((AnalysisSummary.analysis_job == job.id)
                   & (AnalysisSummary.status == AnalysisSummaryStatus.COMPLETED))
            .order_by(Session.date, Session.id))
    if not rows:
        raise llm.LlmError("no session could be summarised, so there is nothing to combine")
    instructions = (json.loads(job.strategy_json)["final_synthesis_instructions"] if job.strategy_json
                    else f"Answer the question across all sessions: {job.original_prompt}")
    notes = "\n\n".join(f"## {r.session.session_name or r.session.file_name} ({r.session.date[:10]})\n"
                        f"{_without_thinking(r.summary_text)}" for r in rows)
    context = engine.context_size or job.context_size or llm_config.default_context_cap()
    budget = context - REDUCE_OUTPUT_TOKENS - 200
    tokens = engine.count_tokens(notes)
    if tokens > budget:
        notes = head_and_tail(notes, tokens=tokens, budget=max(budget, 0))
    messages = [{"role": "system", "content": "You combine per-session findings into one well-organised answer."},
                {"role": "user", "content": f"{instructions}\n\nFINDINGS PER SESSION:\n{notes}"}]
    stream("start", "reduce", promptTokens=sum(engine.count_tokens(m["content"]) for m in messages))
    reply = _generate(job, engine, messages, max_tokens=REDUCE_OUTPUT_TOKENS, phase="reduce", stream=stream)
    _set(job, final_result=reply.stored_text)
    usage.record_llm(source="analysis_reduce", model=job.model_name or "", prompt_tokens=reply.prompt_tokens,
                     completion_tokens=reply.completion_tokens, duration_ms=reply.duration_ms)
    stream("end", "reduce", promptTokens=reply.prompt_tokens, completionTokens=reply.completion_tokens,
           duration=reply.duration_ms)


def _without_thinking(text: str | None) -> str:
    import re

    return re.sub(r"<think>.*?</think>", "", text or "", flags=re.S).strip()
