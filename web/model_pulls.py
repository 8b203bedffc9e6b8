"""Model downloads of the LLM management API: start a pull, follow it, cancel it (wire contract §7)."""
from __future__ import annotations

import re
import uuid

import redis
from flask import Blueprint, current_app, jsonify, request

from models import ModelPull
from models.statuses import PULL_CANCELABLE, TERMINAL
from parley.timestamps import now_ms
from services.llmstore import llm_dir
from services.model_sources import SourceError, resolve_source
from web.errors import ApiError, bad_request, not_found
from web.transcribe import enqueue, settings

model_pulls_bp = Blueprint("model_pulls", __name__, url_prefix="/api/llm")

SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
START_LOCK_S = 30  # holds a model name while its pull is checked, created and enqueued


def _lock_key(name: str) -> str:
    return f"parley:model-pull:{name}"


def pull_body(pull: ModelPull) -> dict:
    """The pull-status body; optional fields are left out, not null (the client's schema has no nulls)."""
    body = {"jobId": pull.id, "modelName": pull.model_name, "status": pull.status, "message": pull.message,
            "completedBytes": pull.completed_bytes, "startTime": pull.start_ms}
    if pull.total_bytes:
        body["totalBytes"] = pull.total_bytes
        body["progress"] = round(min(100.0, 100.0 * pull.completed_bytes / pull.total_bytes), 1)
    if pull.end_ms is not None:
        body["endTime"] = pull.end_ms
    if pull.error:
        body["error"] = pull.error
    return body


def pull_or_404(job_id: str) -> ModelPull:
    pull = ModelPull.get_or_none(ModelPull.id == job_id)
    if pull is None:
        raise not_found(f"Pull job {job_id} not found.")
    return pull


@model_pulls_bp.post("/pull-model")
def pull_model():
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object with modelUrl")
    text = body.get("modelUrl")
    if text is not None and not isinstance(text, str):
        raise bad_request("modelUrl must be a string")
    try:
        source = resolve_source(text or "")
    except SourceError as exc:
        raise bad_request(str(exc)) from None
    sha256 = body.get("sha256")
    if sha256 in (None, ""):
        sha256 = None
    elif not isinstance(sha256, str) or not SHA256.match(sha256.strip()):
        raise bad_request("sha256 must be 64 hexadecimal characters")
    else:
        sha256 = sha256.strip().lower()

    name = source.file_name
    conn = current_app.extensions["parley_redis"]
    # Two requests for one name at once must not both pass the checks below. redis-py's Lock releases only
    # its own token: a request that outlived START_LOCK_S cannot free the next request's lock.
    lock = conn.lock(_lock_key(name), timeout=START_LOCK_S, blocking=False)
    try:
        if not lock.acquire():
            raise ApiError(409, f"A pull of {name} is already being started.")
    except redis.RedisError as exc:
        raise ApiError(503, f"the job queue is unavailable ({type(exc).__name__}); try again shortly") from None
    try:
        if (llm_dir(settings()) / name).exists():
            raise ApiError(409, f"The model {name} is already in the store.")
        running = (ModelPull.select().where((ModelPull.model_name == name) & ModelPull.status.not_in(TERMINAL))
                   .first())
        if running is not None:
            raise ApiError(409, f"A pull of {name} is already running (job {running.id}).")
        pull = ModelPull.create(id=str(uuid.uuid4()), source=text.strip(), model_name=name,
                                expected_sha256=sha256, start_ms=now_ms(),
                                message=f"Queued download of {name}")
        enqueue("pull_model", pull, cleanup=lambda: ModelPull.delete().where(ModelPull.id == pull.id).execute())
    finally:
        try:
            lock.release()
        except redis.RedisError:  # LockNotOwnedError included: it expired, and another request holds it now
            pass
    return jsonify(jobId=pull.id, message=f"Download of {name} started. Check its status."), 202


@model_pulls_bp.get("/pull-status/<job_id>")
def pull_status(job_id: str):
    return jsonify(pull_body(pull_or_404(job_id)))


@model_pulls_bp.post("/cancel-pull/<job_id>")
def cancel_pull(job_id: str):
    pull = pull_or_404(job_id)
    ended_ms = now_ms()
    # A queued pull has no worker yet: it ends here, and its message will find it finished.
    moved = (ModelPull.update(status="canceled", message=f"Download of {pull.model_name} canceled", end_ms=ended_ms)
             .where((ModelPull.id == pull.id) & (ModelPull.status == "queued")).execute()
             or ModelPull.update(status="canceling", message=f"Canceling download of {pull.model_name}")
             .where((ModelPull.id == pull.id) & ModelPull.status.in_(("parsing", "downloading"))).execute())
    if not moved:
        status = ModelPull.select(ModelPull.status).where(ModelPull.id == pull.id).scalar()
        if status not in PULL_CANCELABLE:
            raise ApiError(409, f"Pull job {job_id} is {status} and can no longer be canceled.")
    return jsonify(message=f"Cancellation request sent for job {job_id}.")
