"""Model downloads of the LLM management API: start a pull, follow it, cancel it (wire contract §7)."""
from __future__ import annotations

import re

from flask import Blueprint, current_app, jsonify, request

from models import ModelPull
from services import model_pulls
from services.model_sources import resolve_source
from web.context import settings
from web.errors import bad_request, not_found

model_pulls_bp = Blueprint("model_pulls", __name__, url_prefix="/api/llm")

SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
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
    resolve_source(text or "")  # a source that cannot be downloaded is a 400 before anything else is read
    sha256 = body.get("sha256")
    if sha256 in (None, ""):
        sha256 = None
    elif not isinstance(sha256, str) or not SHA256.match(sha256.strip()):
        raise bad_request("sha256 must be 64 hexadecimal characters")
    else:
        sha256 = sha256.strip().lower()

    pull = model_pulls.start_pull(settings(), current_app.extensions["parley_redis"], text, sha256=sha256)
    return jsonify(jobId=pull.id, message=f"Download of {pull.model_name} started. Check its status."), 202


@model_pulls_bp.get("/pull-status/<job_id>")
def pull_status(job_id: str):
    return jsonify(pull_body(pull_or_404(job_id)))


@model_pulls_bp.post("/cancel-pull/<job_id>")
def cancel_pull(job_id: str):
    model_pulls.cancel_pull(job_id)
    return jsonify(message=f"Cancellation request sent for job {job_id}.")
