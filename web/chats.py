"""Chats about a session and standalone chats: CRUD, context usage and replies streamed as SSE, with declared shapes."""
from __future__ import annotations

import queue
import time
import uuid
from typing import Annotated, Literal, Union

import redis
from flask import Blueprint, Response, current_app
from pydantic import ConfigDict, RootModel, field_validator

from models import Chat, LlmJob, Message as MessageRow
from models.statuses import TERMINAL, LlmJobStatus
from services import chats, job_control, llm_config, llmstore
from services.chat_context import RESERVED_OUTPUT_TOKENS
from services.templates import get_template_text
from services.tokens import active_model_path, count_tokens
from web import sse
from web.context import hub, settings
from web.declared import (ID_DIGITS, Confirmation, Field, OutputModel, QueryModel, SparseWireModel, WireModel, endpoint,
                          event_stream, lenient_integer, one_of, query_integer)
from web.errors import not_found
from web.openapi_schema import header, integer
from web.sessions import SessionChatMeta, numeric_id, session_or_404
from web.streams import RESYNC

chats_bp = Blueprint("chats", __name__, url_prefix="/api")

TAG = "chats"
MAX_MESSAGE_CHARS = 10_000
MAX_NAME_CHARS = 200
MAX_TAGS, MAX_TAG_CHARS = 10, 50
MAX_REPLY_TOKENS = 32768
MAX_RESERVED_TOKENS = 1_000_000
MESSAGE_STATES = ("complete", "cancelled", "failed")  # models.Message.status
NONBLANK = r"\S"  # documents that a blank value is refused: values are trimmed before the length checks
CREATED = "Creation time (Unix epoch milliseconds)"


# --- shapes ---------------------------------------------------------------------------------------
class StandaloneChatMeta(OutputModel):
    id: int = Field(ge=1, description="Chat id")
    session_id: int | None = Field(description="Always null for a standalone chat")
    timestamp: int = Field(description=CREATED)
    name: str | None = Field(description="Chat name; null when unnamed")
    tags: list[str] | None = Field(description="Tags, sorted; null when there are none")

    @classmethod
    def of(cls, chat: Chat) -> StandaloneChatMeta:
        return cls(id=chat.id, session_id=None, timestamp=chat.timestamp_ms, name=chat.name, tags=chat.tags or None)


class Message(OutputModel):
    """A chat message; AI fields (tokens, duration, isTruncated) are null on user messages"""

    id: int = Field(ge=1)
    chat_id: int = Field(ge=1)
    sender: Literal["user", "ai"]
    text: str = Field(description="AI text may start with a <think>...</think> block holding the model's reasoning")
    timestamp: int = Field(description=CREATED)
    prompt_tokens: int | None = Field(ge=0)
    completion_tokens: int | None = Field(ge=0)
    duration: int | None = Field(ge=0, description="Generation time in milliseconds")
    is_truncated: bool | None = Field(description="The history was cut to fit the context")
    thinking_tokens: int | None = Field(ge=0)
    status: Literal[MESSAGE_STATES] = Field(description="complete; cancelled when the client went away mid-reply "
                                            "(the partial text is kept); failed. A Parley extension to the sessions "
                                            "client's Message")

    @classmethod
    def of(cls, m: MessageRow) -> Message:
        return cls(id=m.id, chat_id=m.chat_id, sender=m.sender, text=m.text, timestamp=m.timestamp_ms,
                   prompt_tokens=m.prompt_tokens, completion_tokens=m.completion_tokens, duration=m.duration_ms,
                   is_truncated=m.is_truncated, thinking_tokens=m.thinking_tokens, status=m.status)


def messages_of(chat: Chat) -> list[Message]:
    return [Message.of(m) for m in MessageRow.select().where(MessageRow.chat == chat.id).order_by(MessageRow.id)]


class SessionChatDetail(SessionChatMeta):
    """A session chat with its messages"""

    messages: list[Message] = Field(description="Ordered by id")


class StandaloneChatDetail(StandaloneChatMeta):
    """A standalone chat with its messages"""

    messages: list[Message] = Field(description="Ordered by id")


class ChatMessageRequest(WireModel):
    text: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS, pattern=NONBLANK,
                      description=f"The user's message; trimmed, then at most {MAX_MESSAGE_CHARS} characters")
    # The client's own cap on the reply; the worker's PARLEY_CHAT_MAX_TOKENS still bounds it.
    max_tokens: lenient_integer(minimum=1, maximum=MAX_REPLY_TOKENS) | None = Field(
        None, description="Optional cap on the reply's tokens; the server's PARLEY_CHAT_MAX_TOKENS (default 512) "
        "still bounds it")


def _blank_is_none(value: str | None) -> str | None:
    return value or None  # the value is trimmed by now


class ChatNameUpdate(WireModel):
    name: str | None = Field(max_length=MAX_NAME_CHARS, json_schema_extra={"minLength": 1}, description=(
        f"New name; trimmed, at most {MAX_NAME_CHARS} characters; blank or null clears it. An empty string is "
        "refused"))

    @field_validator("name", mode="before")
    @classmethod
    def refuse_empty(cls, value):
        if value == "":
            raise ValueError("must be a non-empty string or null (null or a blank name clears it)")
        return value

    _clear_blank = field_validator("name")(_blank_is_none)


class ChatDetailsUpdate(WireModel):
    """Both fields are replaced: a missing key clears that field"""

    name: str | None = Field(None, max_length=MAX_NAME_CHARS, description=(
        f"Trimmed, at most {MAX_NAME_CHARS} characters; blank, null or absent clears it"))
    tags: list[Annotated[str, Field(max_length=MAX_TAG_CHARS)]] | None = Field(None, description=(
        f"Trimmed, blanks dropped, de-duplicated and sorted; then at most {MAX_TAGS} tags of at most "
        f"{MAX_TAG_CHARS} characters. Empty, null or absent clears them"))

    _clear_blank = field_validator("name")(_blank_is_none)

    @field_validator("tags")
    @classmethod
    def tidy(cls, tags: list[str] | None) -> list[str] | None:
        if tags is None:
            return None
        tags = sorted({tag for tag in tags if tag})
        if len(tags) > MAX_TAGS:  # counted once duplicates and blanks are gone
            raise ValueError(f"at most {MAX_TAGS} tags of at most {MAX_TAG_CHARS} characters each")
        return tags


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


# --- lookups --------------------------------------------------------------------------------------
SESSION = {"session_id": ("Session id", ID_DIGITS)}
STANDALONE_CHAT = {"chat_id": ("Chat id", ID_DIGITS)}
SESSION_CHAT = {**SESSION, **STANDALONE_CHAT}
BAD_IDS = "Session id or chat id is not a non-negative integer"
BAD_CHAT_ID = "Chat id is not a non-negative integer"
UNKNOWN = "Unknown session, or no chat of that id in the session"
UNKNOWN_STANDALONE = "No standalone chat of that id (a session's chat is not one)"
BAD_USAGE_QUERY = f"reservedOutputTokens not an integer in 0..{MAX_RESERVED_TOKENS}"
BAD_MESSAGE = (f"body not a JSON object; text missing, blank or over {MAX_MESSAGE_CHARS} characters; maxTokens not "
               f"an integer in 1..{MAX_REPLY_TOKENS}")
NO_REPLY = "No language model is configured, or the job queue is unavailable (nothing is stored)"
DELETED = '"Chat <id> deleted successfully."'


def session_chat_or_404(session_id: str, chat_id: str) -> Chat:
    cid = numeric_id(chat_id, "chatId")
    session = session_or_404(session_id)
    chat = Chat.get_or_none((Chat.id == cid) & (Chat.session == session.id))
    if chat is None:
        raise not_found(f"Chat {cid} not found in session {session.id}.")
    return chat


def standalone_chat_or_404(chat_id: str) -> Chat:
    cid = numeric_id(chat_id, "chatId")
    chat = Chat.get_or_none((Chat.id == cid) & (Chat.session.is_null()))
    if chat is None:
        raise not_found(f"Standalone Chat {cid} not found.")
    return chat


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
def stream_reply(chat: Chat, message: ChatMessageRequest, *, source: str) -> Response:
    """Store the user's message, queue the reply on the LLM worker and relay its tokens as SSE."""
    job_id = str(uuid.uuid4())
    q = hub().register(job_id)  # before the job is sent, so the first token cannot be missed
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


# --- session chats --------------------------------------------------------------------------------
@chats_bp.post("/sessions/<session_id>/chats")
@endpoint(tag=TAG, path_parameters=SESSION, responses={
    201: (SessionChatMeta, "The new chat (name null)"), 400: "Session id is not a non-negative integer",
    404: "Unknown session"})
def create_session_chat(session_id: str):
    """Start a chat about a session

    No body. Also answers `/api/sessions/{session_id}/chats/` (trailing slash).
    """
    session = session_or_404(session_id)
    return SessionChatMeta.of(chats.create_chat(session_id=session.id)), 201


@chats_bp.get("/sessions/<session_id>/chats/<chat_id>")
@endpoint(tag=TAG, path_parameters=SESSION_CHAT, responses={200: (SessionChatDetail, "The chat"), 400: BAD_IDS,
                                                             404: UNKNOWN})
def get_session_chat(session_id: str, chat_id: str):
    """A session chat with its messages"""
    chat = session_chat_or_404(session_id, chat_id)
    return SessionChatDetail(**dict(SessionChatMeta.of(chat)), messages=messages_of(chat))


@chats_bp.get("/sessions/<session_id>/chats/<chat_id>/context-usage")
@endpoint(tag=TAG, query=UsageQuery, path_parameters=SESSION_CHAT, operation_id="session_chat_context_usage",
          responses={200: (ContextUsage, "Context usage; transcriptTokens is the session's"),
                     400: f"{BAD_IDS}, or {BAD_USAGE_QUERY}", 404: UNKNOWN})
def session_chat_usage(session_id: str, chat_id: str, query: UsageQuery):
    """How much of the model's context the session chat uses"""
    return context_usage(session_chat_or_404(session_id, chat_id), input_draft=query.input_draft,
                         reserved=query.reserved_output_tokens)


@chats_bp.post("/sessions/<session_id>/chats/<chat_id>/messages")
@endpoint(tag=TAG, json=ChatMessageRequest, path_parameters=SESSION_CHAT, operation_id="send_session_chat_message",
          shared_description=REPLY_STREAM_DESCRIPTION,
          responses={200: REPLY_STREAM, 400: f"{BAD_IDS}; {BAD_MESSAGE}", 404: UNKNOWN, 503: NO_REPLY})
def session_chat_message(session_id: str, chat_id: str, json: ChatMessageRequest):
    """Send a message and stream the reply (the session's transcript is the context)"""
    return stream_reply(session_chat_or_404(session_id, chat_id), json, source="session_chat")


@chats_bp.patch("/sessions/<session_id>/chats/<chat_id>/name")
@endpoint(tag=TAG, json=ChatNameUpdate, path_parameters=SESSION_CHAT, responses={
    200: (SessionChatMeta, "The chat"), 404: UNKNOWN,
    400: f"{BAD_IDS}; body not a JSON object; name missing, an empty string, not a string or null, or over "
         f"{MAX_NAME_CHARS} characters"})
def rename_session_chat(session_id: str, chat_id: str, json: ChatNameUpdate):
    """Rename a session chat"""
    return SessionChatMeta.of(chats.rename_chat(session_chat_or_404(session_id, chat_id), json.name))


@chats_bp.delete("/sessions/<session_id>/chats/<chat_id>")
@endpoint(tag=TAG, path_parameters=SESSION_CHAT, responses={200: (Confirmation, DELETED), 400: BAD_IDS,
                                                             404: UNKNOWN})
def delete_session_chat(session_id: str, chat_id: str):
    """Delete a session chat and its messages"""
    chat = session_chat_or_404(session_id, chat_id)
    chats.delete_chat(chat)
    return Confirmation(message=f"Chat {chat.id} deleted successfully.")


# --- standalone chats -----------------------------------------------------------------------------
@chats_bp.post("/chats")
@endpoint(tag=TAG, responses={201: (StandaloneChatMeta, "The new chat (name and tags null)")})
def create_chat():
    """Start a standalone chat

    No body.
    """
    return StandaloneChatMeta.of(chats.create_chat()), 201


@chats_bp.get("/chats")
@endpoint(tag=TAG, responses={200: (list[StandaloneChatMeta], "Standalone chats, newest first")})
def list_chats():
    """List standalone chats"""
    rows = Chat.select().where(Chat.session.is_null()).order_by(Chat.timestamp_ms.desc(), Chat.id.desc())
    return [StandaloneChatMeta.of(c) for c in rows]


@chats_bp.get("/chats/<chat_id>")
@endpoint(tag=TAG, path_parameters=STANDALONE_CHAT, responses={200: (StandaloneChatDetail, "The chat"),
                                                                400: BAD_CHAT_ID, 404: UNKNOWN_STANDALONE})
def get_chat(chat_id: str):
    """A standalone chat with its messages"""
    chat = standalone_chat_or_404(chat_id)
    return StandaloneChatDetail(**dict(StandaloneChatMeta.of(chat)), messages=messages_of(chat))


@chats_bp.get("/chats/<chat_id>/context-usage")
@endpoint(tag=TAG, query=UsageQuery, path_parameters=STANDALONE_CHAT, operation_id="chat_context_usage",
          responses={200: (ContextUsage, "Context usage; transcriptTokens is null"),
                     400: f"{BAD_CHAT_ID}, or {BAD_USAGE_QUERY}", 404: UNKNOWN_STANDALONE})
def chat_usage(chat_id: str, query: UsageQuery):
    """How much of the model's context the standalone chat uses"""
    return context_usage(standalone_chat_or_404(chat_id), input_draft=query.input_draft,
                         reserved=query.reserved_output_tokens)


@chats_bp.post("/chats/<chat_id>/messages")
@endpoint(tag=TAG, json=ChatMessageRequest, path_parameters=STANDALONE_CHAT, operation_id="send_chat_message",
          shared_description=REPLY_STREAM_DESCRIPTION,
          responses={200: REPLY_STREAM, 400: f"{BAD_CHAT_ID}; {BAD_MESSAGE}", 404: UNKNOWN_STANDALONE,
                     503: NO_REPLY})
def chat_message(chat_id: str, json: ChatMessageRequest):
    """Send a message to a standalone chat and stream the reply"""
    return stream_reply(standalone_chat_or_404(chat_id), json, source="standalone_chat")


@chats_bp.patch("/chats/<chat_id>/details")
@endpoint(tag=TAG, json=ChatDetailsUpdate, path_parameters=STANDALONE_CHAT, operation_id="update_chat_details",
          responses={200: (StandaloneChatMeta, "The chat"), 404: UNKNOWN_STANDALONE,
                     400: f"{BAD_CHAT_ID}; body not a JSON object; name not a string or null or over "
                          f"{MAX_NAME_CHARS} characters; tags not a list of strings or null, more than {MAX_TAGS}, "
                          f"or one over {MAX_TAG_CHARS} characters"})
def chat_details(chat_id: str, json: ChatDetailsUpdate):
    """Set a standalone chat's name and tags"""
    chat = standalone_chat_or_404(chat_id)
    return StandaloneChatMeta.of(chats.set_details(chat, json.name, json.tags))


@chats_bp.delete("/chats/<chat_id>")
@endpoint(tag=TAG, path_parameters=STANDALONE_CHAT, responses={200: (Confirmation, DELETED), 400: BAD_CHAT_ID,
                                                                404: UNKNOWN_STANDALONE})
def delete_chat(chat_id: str):
    """Delete a standalone chat and its messages"""
    chat = standalone_chat_or_404(chat_id)
    chats.delete_chat(chat)
    return Confirmation(message=f"Chat {chat.id} deleted successfully.")
