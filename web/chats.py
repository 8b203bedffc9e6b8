"""Chats about a session and standalone chats: CRUD, context usage, and replies streamed as SSE."""
from __future__ import annotations

import queue
import time
import uuid

import redis
from flask import Blueprint, Response, current_app, jsonify, request

from models import Chat, LlmJob, Message
from models.statuses import TERMINAL, LlmJobStatus
from services import chats, job_control, llm_config, llmstore
from services.chat_context import RESERVED_OUTPUT_TOKENS
from services.templates import get_template_text
from services.tokens import active_model_path, count_tokens
from web import forms, sse
from web.context import hub, settings
from web.errors import bad_request, not_found
from web.sessions import json_body, numeric_id, session_or_404
from web.streams import RESYNC

chats_bp = Blueprint("chats", __name__, url_prefix="/api")

MAX_MESSAGE_CHARS = 10_000
MAX_NAME_CHARS = 200
MAX_TAGS, MAX_TAG_CHARS = 10, 50


# --- shapes ---------------------------------------------------------------------------------------
def message_dict(m: Message) -> dict:
    return {"id": m.id, "chatId": m.chat_id, "sender": m.sender, "text": m.text, "timestamp": m.timestamp_ms,
            "promptTokens": m.prompt_tokens, "completionTokens": m.completion_tokens, "duration": m.duration_ms,
            "isTruncated": m.is_truncated, "thinkingTokens": m.thinking_tokens, "status": m.status}


def chat_meta(c: Chat) -> dict:
    meta = {"id": c.id, "sessionId": c.session_id, "timestamp": c.timestamp_ms, "name": c.name}
    if c.session_id is None:
        meta["tags"] = c.tags or None
    return meta


def chat_detail(c: Chat) -> dict:
    messages = Message.select().where(Message.chat == c.id).order_by(Message.id)
    return {**chat_meta(c), "messages": [message_dict(m) for m in messages]}


# --- lookups --------------------------------------------------------------------------------------
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
def context_usage(chat: Chat, *, input_draft: str = "", reserved: int = RESERVED_OUTPUT_TOKENS) -> dict:
    """How much of the model's context the next reply would use (counted with the model's tokenizer)."""
    row = llm_config.current()
    gguf = active_model_path()
    count = lambda text: count_tokens(text, gguf=gguf)  # noqa: E731
    info = llmstore.find(settings(), row.active_model) if llm_config.is_local(row.base_url) else None
    default = info.context_length if info else None
    effective = row.context_size or (min(default, llm_config.default_context_cap()) if default else None)
    system = get_template_text("system_prompt" if chat.session_id else "system_standalone_prompt")
    history = list(Message.select().where(Message.chat == chat.id).order_by(Message.id))
    while history and history[0].sender != "user":
        history.pop(0)
    parts = {
        "systemTokens": count(system),
        "transcriptTokens": chat.session.transcript_token_count if chat.session_id else None,
        "chatHistoryTokens": sum(count(m.text) for m in history),
        "inputDraftTokens": count(input_draft) if input_draft else None,
    }
    prompt = sum(v for v in parts.values() if v is not None)
    remaining = max(0, effective - prompt) if effective else None
    return {
        "model": {"name": row.active_model, "configuredContextSize": row.context_size,
                  "defaultContextSize": default, "effectiveContextSize": effective},
        "breakdown": parts,
        "reserved": {"outputTokens": reserved},
        "totals": {"promptTokens": prompt, "percentUsed": min(1.0, prompt / effective) if effective else None,
                   "remainingForPrompt": remaining,
                   "remainingForOutput": max(0, remaining - reserved) if remaining is not None else None},
        "thresholds": {"warnAt": 0.75, "dangerAt": 0.9},
    }


def usage_response(chat: Chat):
    reserved = forms.as_int("reservedOutputTokens", request.args.get("reservedOutputTokens"),
                            default=RESERVED_OUTPUT_TOKENS, lo=0, hi=1_000_000)
    return jsonify(context_usage(chat, input_draft=request.args.get("inputDraft", ""), reserved=reserved))


# --- streaming a reply ----------------------------------------------------------------------------
def stream_reply(chat: Chat, *, source: str) -> Response:
    """Store the user's message, queue the reply on the LLM worker and relay its tokens as SSE."""
    body = json_body(dict, "object with text")
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        raise bad_request("text must be a non-empty string")
    text = text.strip()
    if len(text) > MAX_MESSAGE_CHARS:
        raise bad_request(f"text is {len(text)} characters long; the limit is {MAX_MESSAGE_CHARS}")
    # The client's own cap on the reply, if it sends one; the worker's PARLEY_CHAT_MAX_TOKENS still bounds it.
    max_tokens = forms.as_int("maxTokens", body.get("maxTokens"), default=None, lo=1, hi=32768)
    job_id = str(uuid.uuid4())
    q = hub().register(job_id)  # before the job is sent, so the first token cannot be missed
    try:
        posted = chats.post_message(chat, text, source=source, max_tokens=max_tokens, job_id=job_id)
    except BaseException:
        hub().unregister(job_id, q)
        raise
    job, user = posted.job, posted.message
    first_usage = context_usage(chat)
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
        message = Message.get_or_none(Message.id == job.result["message_id"])
        if message is not None:
            yield sse.event({"chunk": message.text})
            yield sse.event({"done": True, "completionTokens": message.completion_tokens, "duration": message.duration_ms,
                         "isTruncated": bool(message.is_truncated)})
    return True


# --- session chats --------------------------------------------------------------------------------
@chats_bp.post("/sessions/<session_id>/chats")
def create_session_chat(session_id: str):
    session = session_or_404(session_id)
    return jsonify(chat_meta(chats.create_chat(session_id=session.id))), 201


@chats_bp.get("/sessions/<session_id>/chats/<chat_id>")
def get_session_chat(session_id: str, chat_id: str):
    return jsonify(chat_detail(session_chat_or_404(session_id, chat_id)))


@chats_bp.get("/sessions/<session_id>/chats/<chat_id>/context-usage")
def session_chat_usage(session_id: str, chat_id: str):
    return usage_response(session_chat_or_404(session_id, chat_id))


@chats_bp.post("/sessions/<session_id>/chats/<chat_id>/messages")
def session_chat_message(session_id: str, chat_id: str):
    return stream_reply(session_chat_or_404(session_id, chat_id), source="session_chat")


def _name(value) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_request("name must be a string or null")
    value = value.strip()
    if len(value) > MAX_NAME_CHARS:
        raise bad_request(f"name may be at most {MAX_NAME_CHARS} characters")
    return value or None


@chats_bp.patch("/sessions/<session_id>/chats/<chat_id>/name")
def rename_session_chat(session_id: str, chat_id: str):
    chat = session_chat_or_404(session_id, chat_id)
    body = json_body(dict, "object with name")
    if "name" not in body or body["name"] == "":
        raise bad_request("name must be a non-empty string or null")
    return jsonify(chat_meta(chats.rename_chat(chat, _name(body["name"]))))


@chats_bp.delete("/sessions/<session_id>/chats/<chat_id>")
def delete_session_chat(session_id: str, chat_id: str):
    chat = session_chat_or_404(session_id, chat_id)
    chats.delete_chat(chat)
    return jsonify(message=f"Chat {chat.id} deleted successfully.")


# --- standalone chats -----------------------------------------------------------------------------
@chats_bp.post("/chats")
def create_chat():
    return jsonify(chat_meta(chats.create_chat())), 201


@chats_bp.get("/chats")
def list_chats():
    rows = Chat.select().where(Chat.session.is_null()).order_by(Chat.timestamp_ms.desc(), Chat.id.desc())
    return jsonify([chat_meta(c) for c in rows])


@chats_bp.get("/chats/<chat_id>")
def get_chat(chat_id: str):
    return jsonify(chat_detail(standalone_chat_or_404(chat_id)))


@chats_bp.get("/chats/<chat_id>/context-usage")
def chat_usage(chat_id: str):
    return usage_response(standalone_chat_or_404(chat_id))


@chats_bp.post("/chats/<chat_id>/messages")
def chat_message(chat_id: str):
    return stream_reply(standalone_chat_or_404(chat_id), source="standalone_chat")


@chats_bp.patch("/chats/<chat_id>/details")
def chat_details(chat_id: str):
    chat = standalone_chat_or_404(chat_id)
    body = json_body(dict, "object with name and tags")
    tags = body.get("tags")
    if tags is not None:
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise bad_request("tags must be a list of strings or null")
        tags = sorted({t.strip() for t in tags if t.strip()})
        if len(tags) > MAX_TAGS or any(len(t) > MAX_TAG_CHARS for t in tags):
            raise bad_request(f"at most {MAX_TAGS} tags of at most {MAX_TAG_CHARS} characters each")
    return jsonify(chat_meta(chats.set_details(chat, _name(body.get("name")), tags)))


@chats_bp.delete("/chats/<chat_id>")
def delete_chat(chat_id: str):
    chat = standalone_chat_or_404(chat_id)
    chats.delete_chat(chat)
    return jsonify(message=f"Chat {chat.id} deleted successfully.")
