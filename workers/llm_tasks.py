"""What an LLM worker does for one job: a chat reply, a completion, a summary, or loading a model."""
from __future__ import annotations

import itertools
import json
import logging

from models import Chat, LlmJob, Message, db
from models.statuses import TERMINAL, LlmJobStatus
from parley.config import Settings, get_settings
from parley.redisconn import client
from parley.timestamps import now_ms
from services import events, llm_config, search, usage
from services.chat_context import assemble
from services.job_control import cancel_key
from workers import llm

log = logging.getLogger(__name__)

EMPTY_REPLY = "The model returned an empty response. Try again or reduce the context size."


class Publisher:
    """Numbered events of one LLM job on its pub/sub channel (tokens are not logged: they are many)."""

    def __init__(self, job_id: str):
        self.job_id = job_id
        self.seq = itertools.count(1)

    def __call__(self, type_: str, **payload) -> None:
        events.publish({"type": type_, "seq": next(self.seq), "job_id": self.job_id, **payload})


def _record_end(job: LlmJob, status: str, *, result=None, error: str | None = None) -> None:
    """Store the job's end state (inside the caller's transaction, where it has one)."""
    progress = 100.0 if status == LlmJobStatus.COMPLETED else job.progress
    now = now_ms()
    LlmJob.update(status=status, result=result, error=error, progress=progress,
                  message=error or status, updated_at_ms=now, finished_at_ms=now).where(
        LlmJob.id == job.id).execute()


def _finish(job: LlmJob, publish: Publisher, status: str, *, result=None, error: str | None = None) -> None:
    _record_end(job, status, result=result, error=error)
    publish("status", status=status, error=error, result=result)


def run(job_id: str, *, settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    job = LlmJob.get_or_none(LlmJob.id == job_id)
    if job is None or job.status in TERMINAL:
        return
    publish = Publisher(job.id)
    LlmJob.update(status=LlmJobStatus.PROCESSING, updated_at_ms=now_ms()).where(LlmJob.id == job.id).execute()
    publish("status", status=LlmJobStatus.PROCESSING)
    task = {"chat_reply": _chat_reply, "completion": _completion, "summary": _summary,
            "load_model": _load_model, "unload_model": _unload_model}[job.kind]
    try:
        task(job, settings, publish)
    except llm.Canceled as exc:
        _finish(job, publish, "canceled", error=str(exc))
    except llm.LlmError as exc:
        publish("error", error=str(exc))
        _finish(job, publish, "failed", error=str(exc))
    except Exception as exc:  # noqa: BLE001  (the client must hear that it failed, whatever it was)
        log.exception("LLM job %s failed", job.id)
        publish("error", error=f"the language model failed: {type(exc).__name__}: {exc}")
        _finish(job, publish, "failed", error=str(exc))


def give_up(job_id: str, reason: str) -> None:
    """Fail a job whose message kept killing its worker (jobs/crashes.py); nothing if it is finished."""
    job = LlmJob.get_or_none(LlmJob.id == job_id)
    if job is None or job.status in TERMINAL:
        return
    publish = Publisher(job.id)
    error = f"the language model {reason}"
    publish("error", error=error)
    _finish(job, publish, "failed", error=error)


def _cancel_check(job_id: str):
    conn = client(get_settings().redis_url)
    return lambda: bool(conn.exists(cancel_key(job_id)))


# A reply ends where the model starts writing the next turn itself: a small or base model, having read a
# transcript of "SPEAKER_1: ..." lines and a chat of "USER:" turns, goes on in the same pattern until the
# token cap, holding the only LLM worker for a minute. The chat format's own end of turn still applies.
TURN_STARTS = ("\nUSER:", "\nUser:", "\nuser:", "\nASSISTANT:", "\nAssistant:", "\nAI:", "\nHuman:",
               "\nSYSTEM:", "\nSPEAKER_", "<end_of_turn>", "<start_of_turn>", "<|im_end|>", "<|im_start|>")


def chat_max_tokens() -> int:
    """The cap on a reply in the sessions chat (PARLEY_CHAT_MAX_TOKENS; 512 is about 380 words)."""
    return get_settings().chat_max_tokens


def _options(row, **overrides) -> llm.Options:
    overrides.setdefault("stop", TURN_STARTS)
    return llm.Options(temperature=row.temperature, top_p=row.top_p, repeat_penalty=row.repeat_penalty,
                       **overrides)


def _chat_reply(job: LlmJob, settings: Settings, publish: Publisher) -> None:
    row = llm_config.current()
    engine = llm.engine_for(settings, row)
    chat = Chat.get_by_id(job.chat_id)
    context = engine.context_size or row.context_size or llm_config.default_context_cap()
    assembled = assemble(chat, count=engine.count_tokens, context_size=context)
    state = {"responding": False}

    def on_piece(piece: llm.Piece) -> None:
        if piece.thinking:
            publish("thinking", text=piece.text)
        else:
            if not state["responding"]:
                publish("responding")
                state["responding"] = True
            publish("token", text=piece.text)

    cap = chat_max_tokens()
    max_tokens = min(job.params.get("max_tokens") or cap, cap)
    reply = engine.chat(assembled.messages, _options(row, max_tokens=max_tokens), should_cancel=_cancel_check(job.id),
                        on_piece=on_piece)
    empty = not reply.content.strip() and not reply.thinking.strip()
    status = "canceled" if reply.canceled else "completed"
    with db.atomic():
        message = None
        if not empty:
            message = Message.create(
                chat=chat.id, sender="ai", text=reply.stored_text, timestamp_ms=now_ms(),
                prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens,
                thinking_tokens=reply.thinking_tokens, duration_ms=reply.duration_ms,
                is_truncated=assembled.is_truncated, status="cancelled" if reply.canceled else "complete")
        usage.record_llm(source=job.params.get("source", "session_chat"), model=row.active_model,
                         prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens,
                         duration_ms=reply.duration_ms)
        # The reply and the job's end commit together: a worker killed right after cannot leave a stored reply
        # under a job still marked running, whose redelivery would write the reply a second time.
        result = {"message_id": message.id if message else None}
        _record_end(job, status, result=result)
    if message is not None:
        search.request_index_chat(chat.id)  # the AI's message, committed
    if empty and not reply.canceled:
        publish("error", error=EMPTY_REPLY)
    publish("done", promptTokens=reply.prompt_tokens, completionTokens=reply.completion_tokens if not empty else 0,
            thinkingTokens=reply.thinking_tokens, duration=reply.duration_ms, isTruncated=assembled.is_truncated,
            cancelled=reply.canceled, messageId=message.id if message else None)
    publish("status", status=status, error=None, result=result)


def _completion(job: LlmJob, settings: Settings, publish: Publisher) -> None:
    """The transcription API's chat: messages with the transcript as context, answered in one piece."""
    row = llm_config.current()
    engine = llm.engine_for(settings, row, model=job.model_name)
    params = job.params
    transcript = params.get("transcript_text", "")
    context = engine.context_size or llm_config.default_context_cap()
    system = "You answer questions about the transcript below. Base every answer on it.\n\n"
    budget = context - params.get("max_tokens", 500) - 64
    tokens = engine.count_tokens(transcript)
    truncated = tokens > budget // 2
    if truncated:
        from services.chat_context import head_and_tail
        transcript = head_and_tail(transcript, tokens=tokens, budget=budget // 2)
    messages = [{"role": "system", "content": system + f'TRANSCRIPT:\n"""\n{transcript}\n"""'}, *params["messages"]]
    options = llm.Options(max_tokens=params.get("max_tokens", 500), temperature=params.get("temperature", 0.7),
                          top_p=row.top_p, repeat_penalty=row.repeat_penalty, stop=TURN_STARTS)
    reply = engine.chat(messages, options, should_cancel=_cancel_check(job.id))
    usage.record_llm(source="chat_completion", model=llm.engine_model(engine), prompt_tokens=reply.prompt_tokens,
                     completion_tokens=reply.completion_tokens, duration_ms=reply.duration_ms)
    prompt, completion = reply.prompt_tokens or 0, reply.completion_tokens or 0
    _finish(job, publish, "completed", result={
        "message": {"role": "assistant", "content": reply.stored_text}, "model_used": llm.engine_model(engine),
        "usage": {"prompt": prompt, "completion": completion, "total": prompt + completion},
        "is_truncated": truncated})


SUMMARY_STYLES = {
    "paragraph": "Write the summary as one or two plain paragraphs.",
    "bullet_points": "Write the summary as a list of bullet points, one line each, starting with '- '.",
    "key_points": "Write the summary as a numbered list of the key points, decisions and action items.",
}
TOPICS_SCHEMA = {"type": "object", "properties": {"topics": {"type": "array", "maxItems": 6,
                                                            "items": {"type": "string", "maxLength": 60}}},
                 "required": ["topics"]}


def _summary(job: LlmJob, settings: Settings, publish: Publisher) -> None:
    """Summarise a transcript; one too long for the context is summarised part by part, then combined."""
    row = llm_config.current()
    engine = llm.engine_for(settings, row, model=job.model_name)
    params = job.params
    text, max_words, style = params["text"], params["max_length"], SUMMARY_STYLES[params["format"]]
    context = engine.context_size or llm_config.default_context_cap()
    out_tokens = min(int(max_words * 1.6) + 16, context // 3)
    budget = context - out_tokens - 160
    parts = _split_to_fit(text, count=engine.count_tokens, budget=budget)
    cancel = _cancel_check(job.id)
    prompt_total = completion_total = 0

    def ask(instruction: str, body: str, **option_overrides) -> str:
        nonlocal prompt_total, completion_total
        options = _options(row, max_tokens=option_overrides.pop("max_tokens", out_tokens), **option_overrides)
        reply = engine.chat([{"role": "system", "content": "You summarise conversation transcripts accurately."},
                             {"role": "user", "content": f'{instruction}\n\n"""\n{body}\n"""'}], options,
                            should_cancel=cancel)
        if reply.canceled:
            raise llm.Canceled("the summary was canceled")
        prompt_total += reply.prompt_tokens or 0
        completion_total += reply.completion_tokens or 0
        return reply.content.strip()

    limit = f"Use at most {max_words} words."
    if len(parts) == 1:
        summary = ask(f"Summarise this transcript. {style} {limit}", parts[0])
    else:
        notes = []
        for n, part in enumerate(parts, start=1):
            _progress(job, publish, 80.0 * (n - 1) / len(parts), f"Summarising part {n} of {len(parts)}")
            notes.append(ask(f"Summarise part {n} of {len(parts)} of a transcript in a short paragraph.", part))
        _progress(job, publish, 80.0, "Combining the parts")
        summary = ask(f"These are summaries of consecutive parts of one conversation. Combine them into one "
                      f"summary. {style} {limit}", "\n\n".join(notes))
    summary = _clip_words(summary, max_words)
    _progress(job, publish, 90.0, "Finding topics")
    raw = ask("List the main topics of this summary as JSON.", summary, max_tokens=256, json_schema=TOPICS_SCHEMA)
    try:
        topics = [t.strip() for t in json.loads(raw)["topics"] if isinstance(t, str) and t.strip()]
    except (ValueError, KeyError, TypeError):
        topics = []  # generation hit its token limit mid-JSON: no topics rather than a broken list
    usage.record_llm(source="summary", model=llm.engine_model(engine), prompt_tokens=prompt_total,
                     completion_tokens=completion_total, duration_ms=None)
    _finish(job, publish, "completed", result={
        "summary": summary, "topics": list(dict.fromkeys(topics)), "length": len(summary.split()),
        "model_used": llm.engine_model(engine), "parts": len(parts)})


def _progress(job: LlmJob, publish: Publisher, progress: float, message: str) -> None:
    LlmJob.update(progress=progress, message=message, updated_at_ms=now_ms()).where(LlmJob.id == job.id).execute()
    publish("status", status=LlmJobStatus.PROCESSING, progress=progress, message=message)


def _split_to_fit(text: str, *, count, budget: int) -> list[str]:
    """Consecutive pieces of `text`, cut at line breaks, each within `budget` tokens."""
    if count(text) <= budget:
        return [text]
    parts, current, used = [], [], 0
    for line in text.splitlines() or [text]:
        size = count(line) + 1
        if current and used + size > budget:
            parts.append("\n".join(current))
            current, used = [], 0
        current.append(line)
        used += size
    if current:
        parts.append("\n".join(current))
    return parts


def _clip_words(text: str, max_words: int) -> str:
    words = text.split()
    return text if len(words) <= max_words else " ".join(words[:max_words]).rstrip(",;:") + "…"


def _load_model(job: LlmJob, settings: Settings, publish: Publisher) -> None:
    engine = llm.engine_for(settings, llm_config.current())
    _finish(job, publish, "completed", result={"resident": llm.resident(), "context_size": engine.context_size})


def _unload_model(job: LlmJob, settings: Settings, publish: Publisher) -> None:
    _finish(job, publish, "completed", result={"unloaded": 1 if llm.unload() else 0})
