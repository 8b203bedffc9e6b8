"""Queueing work for the LLM worker (summaries, transcription-API chat completions): the job row, then its message."""
from __future__ import annotations

import uuid

from models import LlmJob, db
from services import llm_config
from services.queue import send_job


def queue_llm_job(kind: str, *, model: str | None = None, params: dict | None = None) -> LlmJob:
    """Store an LLM job and send it to the `generate` actor; nothing stays stored when the queue is down
    (QueueUnavailable). `model` defaults to the configured model."""
    with db.atomic():
        job = LlmJob.create(id=str(uuid.uuid4()), kind=kind, params=params or {}, message="Queued",
                            model_name=model if model is not None else llm_config.current().active_model)
    send_job("generate", job.id, undo=lambda: LlmJob.delete().where(LlmJob.id == job.id).execute())
    return job
