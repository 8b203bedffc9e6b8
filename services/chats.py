"""Chats: create, rename and delete one, and post a user's message with the queued job that writes the reply."""
from __future__ import annotations

import dataclasses
import uuid

from models import Chat, LlmJob, Message, db
from parley.errors import Unavailable
from parley.timestamps import now_ms
from services import llm_config, search
from services.queue import send_job


class NoModelConfigured(Unavailable):
    """No language model is chosen yet, so nobody can reply."""


def create_chat(*, session_id: int | None = None) -> Chat:
    """A new, empty chat about a session, or a standalone one (session_id None)."""
    return Chat.create(session=session_id, timestamp_ms=now_ms(), name=None, tags=None)


def rename_chat(chat: Chat, name: str | None) -> Chat:
    """Set the chat's name (None: unnamed)."""
    chat.name = name
    chat.save(only=[Chat.name])
    search.request_index_chat(chat.id)
    return chat


def set_details(chat: Chat, name: str | None, tags: list[str] | None) -> Chat:
    """Set a standalone chat's name and tags (None or []: none)."""
    chat.name, chat.tags = name, tags or None
    chat.save(only=[Chat.name, Chat.tags])
    search.request_index_chat(chat.id)
    return chat


def delete_chat(chat: Chat) -> None:
    """Delete a chat with its messages (ON DELETE CASCADE) and take it out of the search index."""
    chat.delete_instance()
    search.request_remove_chat(chat.id)


@dataclasses.dataclass
class PostedMessage:
    message: Message  # the user's message, stored
    job: LlmJob  # the reply's job, queued


def post_message(chat: Chat, text: str, *, source: str, max_tokens: int | None = None,
                 job_id: str | None = None) -> PostedMessage:
    """Store `text` as the user's message in `chat` and queue the reply.

    source: "session" or "standalone" (which chat API the message came through; the worker builds the
    prompt accordingly). max_tokens: the client's cap on the reply (None: the worker's own bound).
    job_id: the reply job's id, default a new UUID; a caller that relays the reply chooses it so it can
    listen for the job's events before the job is sent. When the queue refuses the job, neither the message
    nor the job stays stored (QueueUnavailable).
    """
    row = llm_config.current()
    if not row.active_model:
        raise NoModelConfigured("no language model is configured; choose one (POST /api/llm/set-model)")
    with db.atomic():
        message = Message.create(chat=chat.id, sender="user", text=text, timestamp_ms=now_ms())
        job = LlmJob.create(id=job_id or str(uuid.uuid4()), kind="chat_reply", chat=chat.id,
                            model_name=row.active_model,
                            params={"source": source, "user_message_id": message.id, "max_tokens": max_tokens})

    def undo():
        with db.atomic():
            LlmJob.delete().where(LlmJob.id == job.id).execute()
            message.delete_instance()

    send_job("generate", job.id, undo=undo)
    search.request_index_chat(chat.id)
    return PostedMessage(message, job)
