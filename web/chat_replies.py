"""A chat's next reply (chats area): the message request, context usage, and the reply streamed as SSE."""
from __future__ import annotations

import queue
import time
import uuid
from typing import Literal, Union

import redis
from flask import Response, current_app
from pydantic import ConfigDict, RootModel

from models import Chat, LlmJob, Message as MessageRow
from models.statuses import TERMINAL, LlmJobStatus
from services import chats, job_control, llm_config, llmstore
from services.chat_context import RESERVED_OUTPUT_TOKENS
from services.templates import get_template_text
from services.tokens import active_model_path, count_tokens
from web import sse
from web.context import hub, settings
from web.declared import (NONBLANK, Field, OutputModel, QueryModel, SparseWireModel, WireModel, event_stream,
                          lenient_integer, one_of, query_integer)
from web.openapi_schema import header, integer
from web.streams import RESYNC

MAX_MESSAGE_CHARS = 10_000
MAX_REPLY_TOKENS = 32768
MAX_RESERVED_TOKENS = 1_000_000


# --- shapes ---------------------------------------------------------------------------------------
class ChatMessageRequest(WireModel):
    text: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS, pattern=NONBLANK,
                      description=f"The user's message; trimmed, then at most {MAX_MESSAGE_CHARS} characters")
    # The client's own cap on the reply; the worker's PARLEY_CHAT_MAX_TOKENS still bounds it.
    max_tokens: lenient_integer(minimum=1, maximum=MAX_REPLY_TOKENS) | None = Field(
        None, description="Optional cap on the reply's tokens; the server's PARLEY_CHAT_MAX_TOKENS (default 512) "
        "still bounds it")


class UsageQuery(QueryModel):
    input_draft: str = Field("", alias="inputDraft", description="Text being typed; its tokens are counted into "
                             "breakdown.inputDraftTokens")
    reserved_output_tokens: query_integer(minimum=0, maximum=MAX_RESERVED_TOKENS, signed=True,
                                          blank_is_default=True) = Field(
        RESERVED_OUTPUT_TOKENS, alias="reservedOutputTokens", description="Tokens kept for the answer")


class ContextUsageModel(OutputModel):
    name: str = Field(description="The active model; empty when none is configured")
    configured_context_size: int | None = Field(ge=1)
    default_context_size: int | None = Field(ge=1, description="The model's maximum (local models only)")
    effective_context_size: int | None = Field(ge=1, description="configured, else min(default, "
                                               "PARLEY_LLM_DEFAULT_CONTEXT), else null")


class ContextUsageBreakdown(WireModel):
    system_tokens: int | None = Field(ge=0)
    transcript_tokens: int | None = Field(ge=0, description="The session's transcriptTokenCount; null for a "
                                          "standalone chat")
    chat_history_tokens: int | None = Field(ge=0, description="From the first user message on")
    input_draft_tokens: int | None = Field(ge=0, description="Tokens of inputDraft; null when none was given")


class ContextUsageReserved(WireModel):
    output_tokens: int = Field(ge=0, json_schema_extra={"default": RESERVED_OUTPUT_TOKENS})


class ContextUsageTotals(WireModel):
    prompt_tokens: int | None = Field(ge=0, description="Sum of the non-null breakdown parts")
    percent_used: float | None = Field(ge=0, le=1, description="min(1, promptTokens / effectiveContextSize)")
    remaining_for_prompt: int | None = Field(ge=0)
    remaining_for_output: int | None = Field(ge=0, description="remainingForPrompt - reserved, at least 0")


class ContextUsageThresholds(WireModel):
    warn_at: float = Field(json_schema_extra={"example": 0.75})
    danger_at: float = Field(json_schema_extra={"example": 0.9})


class ContextUsage(WireModel):
    """How much of the model's context the next reply would use, counted with the model's tokenizer"""

    model: ContextUsageModel
    breakdown: ContextUsageBreakdown
    reserved: ContextUsageReserved
    totals: ContextUsageTotals
    thresholds: ContextUsageThresholds


# --- the frames stream_reply sends, each carrying one key --------------------------------------------
class ChatStreamStatus(WireModel):
    """Phase: thinking first, responding once before the first chunk"""

    status: Literal["thinking", "responding"]


class ChatStreamUsage(WireModel):
    """Context usage including the new user message"""

    usage: ContextUsage


class ChatStreamThinkingChunk(WireModel):
    """A piece of the model's reasoning"""

    thinking_chunk: str


class ChatStreamChunk(WireModel):
    """A piece of the visible answer"""

    chunk: str


NULL_WHEN_UNKNOWN = {"nullable": True}  # a reply settled from the database may lack these figures


class ChatStreamDone(SparseWireModel):
    """The reply is complete and stored; keys without a value are omitted"""

    done: Literal[True]
    prompt_tokens: int | None = Field(None, ge=0)
    completion_tokens: int | None = Field(None, ge=0, description="0 for an empty reply",
                                          json_schema_extra=NULL_WHEN_UNKNOWN)
    thinking_tokens: int | None = Field(None, ge=0)
    duration: int | None = Field(None, ge=0, description="Generation time in milliseconds",
                                 json_schema_extra=NULL_WHEN_UNKNOWN)
    is_truncated: bool | None = None


class ChatStreamError(WireModel):
    """The reply failed; no done follows (except after an empty reply)"""

    error: str


REPLY_FRAMES = (ChatStreamStatus, ChatStreamUsage, ChatStreamThinkingChunk, ChatStreamChunk, ChatStreamDone,
                ChatStreamError)


class ChatStreamEvent(RootModel[Union[REPLY_FRAMES]]):
    """The JSON of one `data:` line; each frame carries exactly one of the keys status, usage, thinkingChunk, chunk,
    done, error"""

    model_config = ConfigDict(json_schema_extra=one_of)


REPLY_STREAM_DESCRIPTION = """\
The user's message is stored before the response starts; its id is in the `X-User-Message-Id` header. The reply
comes as Server-Sent Events: each event is exactly one line `data: <compact JSON>` and a blank line, with no
`event:`, `id:` or `retry:` lines; lines starting with `:` are keep-alive comments. Each JSON object carries one
kind of payload (schema `ChatStreamEvent` in components), in this order:

1. `{"status":"thinking"}`;
2. `{"usage":ContextUsage}`: context usage including the new message;
3. zero or more `{"thinkingChunk":"..."}`: the model's reasoning;
4. `{"status":"responding"}`, once, before the first chunk;
5. one or more `{"chunk":"..."}`: the answer;
6. `{"done":true,"promptTokens","completionTokens","thinkingTokens","duration","isTruncated"}` (keys without a
   value are omitted), then the stream closes. The AI message is stored by then.

A failure mid-stream sends `{"error":"..."}` and closes without `done`; an empty reply sends `{"error":...}` then
`{"done":true,"completionTokens":0}`. When the client disconnects the reply is canceled; the partial text is kept
as a message with status `cancelled`. Errors before the stream starts are JSON `Error` bodies."""
REPLY_STREAM = event_stream("Server-Sent Events stream of the reply", ChatStreamEvent, headers={
    "X-User-Message-Id": header("Id of the stored user message (decimal)", integer(minimum=1))})


# --- context usage --------------------------------------------------------------------------------
def context_usage(chat: Chat, *, input_draft: str = "", reserved: int = RESERVED_OUTPUT_TOKENS) -> ContextUsage:
    """How much of the model's context the next reply would use (counted with the model's tokenizer)."""
    row = llm_config.current()
    gguf = active_model_path()
    count = lambda text: count_tokens(text, gguf=gguf)  # noqa: E731
    info = llmstore.find(settings(), row.active_model) if llm_config.is_local(row.base_url) else None
    default = info.context_length if info else None
    effective = row.context_size or (min(default, llm_config.default_context_cap()) if default else None)
    system = get_template_text("system_prompt" if chat.session_id else "system_standalone_prompt")
    history = list(MessageRow.select().where(MessageRow.chat == chat.id).order_by(MessageRow.id))
    while history and history[0].sender != "user":
        history.pop(0)
    parts = ContextUsageBreakdown(
        system_tokens=count(system),
        transcript_tokens=chat.session.transcript_token_count if chat.session_id else None,
        chat_history_tokens=sum(count(m.text) for m in history),
        input_draft_tokens=count(input_draft) if input_draft else None,
    )
    prompt = sum(v for v in parts.model_dump().values() if v is not None)
    remaining = max(0, effective - prompt) if effective else None
    return ContextUsage(
        model=ContextUsageModel(name=row.active_model, configured_context_size=row.context_size,
                                default_context_size=default, effective_context_size=effective),
        breakdown=parts,
        reserved=ContextUsageReserved(output_tokens=reserved),
        totals=ContextUsageTotals(prompt_tokens=prompt, remaining_for_prompt=remaining,
                                  percent_used=min(1.0, prompt / effective) if effective else None,
                                  remaining_for_output=max(0, remaining - reserved) if remaining is not None else None),
        thresholds=ContextUsageThresholds(warn_at=0.75, danger_at=0.9),
    )


# --- streaming a reply ----------------------------------------------------------------------------
HUB_CONNECT_WAIT_S = 2.0  # at most; when Redis is down the job cannot be sent anyway (a 503 follows)
def stream_reply(chat: Chat, message: ChatMessageRequest, *, source: str) -> Response:
    """Store the user's message, queue the reply on the LLM worker and relay its tokens as SSE."""
    job_id = str(uuid.uuid4())
    q = hub().register(job_id)  # before the job is sent, so the first token cannot be missed
    # ...once the hub is subscribed: a hub this request just started (a greenlet under gevent) subscribes only
    # when this one yields, and a reply's events are not logged for a later resync, unlike a job's.
    hub().connected.wait(timeout=HUB_CONNECT_WAIT_S)
    try:
        posted = chats.post_message(chat, message.text, source=source, max_tokens=message.max_tokens, job_id=job_id)
    except BaseException:
        hub().unregister(job_id, q)
        raise
    job, user = posted.job, posted.message
    first_usage = context_usage(chat).model_dump()
    conn: redis.Redis = current_app.extensions["parley_redis"]
    events = hub()

    def relay():
        finished = False
        try:
            yield sse.event({"status": "thinking"})
            yield sse.event({"usage": first_usage})
            quiet_since = time.monotonic()
            while not finished:
                try:
                    item = q.get(timeout=1.0)
                except queue.Empty:
                    # A comment line: it keeps proxies open and makes a gone client show up as a failed write.
                    yield sse.comment("keep-alive")
                    if time.monotonic() - quiet_since > 5:
                        finished = yield from _settle_from_database(job.id)
                    continue
                quiet_since = time.monotonic()
                if item is RESYNC:
                    continue
                kind = item["type"]
                if kind == "thinking":
                    yield sse.event({"thinkingChunk": item["text"]})
                elif kind == "responding":
                    yield sse.event({"status": "responding"})
                elif kind == "token":
                    yield sse.event({"chunk": item["text"]})
                elif kind == "error":
                    yield sse.event({"error": item["error"]})
                elif kind == "done":
                    yield sse.event({"done": True, **{k: item[k] for k in ("promptTokens", "completionTokens",
                                                                       "thinkingTokens", "duration", "isTruncated")
                                                  if item.get(k) is not None}})
                elif kind == "status" and item["status"] in TERMINAL:
                    finished = True
        finally:
            events.unregister(job.id, q)
            if not finished:
                # The client went away (closed the tab, pressed Stop): the worker stops at its next token.
                try:
                    job_control.ask_llm_job_to_stop(conn, job.id)
                except redis.RedisError:
                    pass

    return sse.response(relay(), headers={"X-User-Message-Id": str(user.id)})


def _settle_from_database(job_id: str):
    """When no event came for a while, look at the job itself: it may have ended while Redis was away."""
    job = LlmJob.get_by_id(job_id)
    if job.status not in TERMINAL:
        return False
    if job.status == LlmJobStatus.FAILED:
        yield sse.event({"error": job.error or "the reply failed"})
    elif job.result and job.result.get("message_id"):
        message = MessageRow.get_or_none(MessageRow.id == job.result["message_id"])
        if message is not None:
            yield sse.event({"chunk": message.text})
            yield sse.event({"done": True, "completionTokens": message.completion_tokens,
                             "duration": message.duration_ms, "isTruncated": bool(message.is_truncated)})
    return True
