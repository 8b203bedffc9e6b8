"""Model downloads (LLM management): start a pull of a model file, and cancel one; the `io` worker downloads."""
from __future__ import annotations

import uuid

import redis

from models import ModelPull
from models.statuses import PULL_CANCELABLE, TERMINAL, PullStatus
from parley.config import Settings
from parley.errors import Conflict, NotFound
from parley.timestamps import now_ms
from services.llmstore import llm_dir
from services.model_sources import resolve_source
from services.queue import QueueUnavailable, send_job

START_LOCK_S = 30  # holds a model name while its pull is checked, created and sent


def _lock_key(name: str) -> str:
    return f"parley:model-pull:{name}"


def start_pull(settings: Settings, conn: redis.Redis, source_text: str, *, sha256: str | None) -> ModelPull:
    """A queued pull of what the user typed (a URL or a Hugging Face name); `sha256` (lower-case hex) is checked
    once the file is in. SourceError for a source that cannot be downloaded, Conflict for a model already in
    the store or a pull of it already running or being started, QueueUnavailable when Redis does not answer."""
    source_text = source_text or ""
    source = resolve_source(source_text)
    name = source.file_name
    # Two requests for one name at once must not both pass the checks below. redis-py's Lock releases only
    # its own token: a request that outlived START_LOCK_S cannot free the next request's lock.
    lock = conn.lock(_lock_key(name), timeout=START_LOCK_S, blocking=False)
    try:
        if not lock.acquire():
            raise Conflict(f"A pull of {name} is already being started.")
    except redis.RedisError as exc:
        raise QueueUnavailable.because(exc) from None
    try:
        if (llm_dir(settings) / name).exists():
            raise Conflict(f"The model {name} is already in the store.")
        running = (ModelPull.select().where((ModelPull.model_name == name) & ModelPull.status.not_in(TERMINAL))
                   .first())
        if running is not None:
            raise Conflict(f"A pull of {name} is already running (job {running.id}).")
        pull = ModelPull.create(id=str(uuid.uuid4()), source=source_text.strip(), model_name=name,
                                expected_sha256=sha256, start_ms=now_ms(), message=f"Queued download of {name}")
        send_job("pull_model", pull.id, undo=lambda: ModelPull.delete().where(ModelPull.id == pull.id).execute())
    finally:
        try:
            lock.release()
        except redis.RedisError:  # LockNotOwnedError included: it expired, and another request holds it now
            pass
    return pull


def cancel_pull(job_id: str) -> None:
    """Cancel a pull: a queued one ends now, a running one at the worker's next chunk. NotFound, or Conflict
    for a pull that has already ended."""
    pull = ModelPull.get_or_none(ModelPull.id == job_id)
    if pull is None:
        raise NotFound(f"Pull job {job_id} not found.")
    # A queued pull has no worker yet: it ends here, and its message will find it finished.
    moved = (ModelPull.update(status=PullStatus.CANCELED, message=f"Download of {pull.model_name} canceled",
                              end_ms=now_ms())
             .where((ModelPull.id == pull.id) & (ModelPull.status == PullStatus.QUEUED)).execute()
             or ModelPull.update(status=PullStatus.CANCELING, message=f"Canceling download of {pull.model_name}")
             .where((ModelPull.id == pull.id)
                    & ModelPull.status.in_((PullStatus.PARSING, PullStatus.DOWNLOADING))).execute())
    if not moved:
        status = ModelPull.select(ModelPull.status).where(ModelPull.id == pull.id).scalar()
        if status not in PULL_CANCELABLE:
            raise Conflict(f"Pull job {job_id} is {status} and can no longer be canceled.")
