"""Chats about a session and standalone chats (sessions API): their routes and shapes; replies in chat_replies."""
from __future__ import annotations

from typing import Annotated, Literal

from flask import Blueprint
from pydantic import field_validator

from models import Chat, Message as MessageRow
from services import chats
from web.chat_replies import (MAX_MESSAGE_CHARS, MAX_REPLY_TOKENS, MAX_RESERVED_TOKENS, REPLY_STREAM,
                              REPLY_STREAM_DESCRIPTION, ChatMessageRequest, ContextUsage, UsageQuery, context_usage,
                              stream_reply)
from web.declared import ID_DIGITS, Confirmation, Field, OutputModel, WireModel, endpoint
from web.errors import not_found
from web.sessions import SessionChatMeta, numeric_id, session_or_404

chats_bp = Blueprint("chats", __name__, url_prefix="/api")

TAG = "chats"
MAX_NAME_CHARS = 200
MAX_TAGS, MAX_TAG_CHARS = 10, 50
MESSAGE_STATES = ("complete", "cancelled", "failed")  # models.Message.status
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
