"""Model downloads of the LLM management API: start a pull, follow it, cancel it (wire contract §7), declared."""
from __future__ import annotations

from typing import Literal

from flask import Blueprint, current_app
from pydantic import field_validator

from models import ModelPull
from services import model_pulls
from services.model_sources import resolve_source
from web.context import settings
from web.declared import NONBLANK, Confirmation, Field, SparseWireModel, WireModel, endpoint
from web.errors import not_found

model_pulls_bp = Blueprint("model_pulls", __name__, url_prefix="/api/llm")

JOB_ID = Field(description="Job id (a UUID)", json_schema_extra={"format": "uuid"})
PULL_JOB = {"job_id": "jobId returned by POST /api/llm/pull-model"}


class ModelPullRequest(WireModel):
    model_url: str | None = Field(None, min_length=1, pattern=NONBLANK, description=(
        "An http(s) URL whose path ends in .gguf, or a Hugging Face name owner/repo/path/file.gguf (downloaded "
        "from {HF_ENDPOINT or https://huggingface.co}/owner/repo/resolve/main/path/file.gguf)"),
        json_schema_extra={"example": "bartowski/gemma-2-2b-it-GGUF/gemma-2-2b-it-Q4_K_M.gguf"})
    sha256: str | None = Field(None, pattern="^[0-9a-fA-F]{64}$", description="Expected sha256 of the file; the "
                               "download fails when it differs")

    @field_validator("sha256", mode="before")
    @classmethod
    def blank_is_none(cls, value):
        return None if value == "" else value


class ModelPullAccepted(WireModel):
    job_id: str = JOB_ID
    message: str = Field(json_schema_extra={"example": "Download of gemma-2-2b-it-Q4_K_M.gguf started. Check its "
                                                       "status."})


class ModelPullStatus(SparseWireModel):
    """A pull; optional fields are left out, not null (the sessions client's schema has no nulls)."""

    job_id: str = JOB_ID
    model_name: str = Field(description="File name the model gets in the store (letters, digits, . _ -)")
    status: Literal["queued", "parsing", "downloading", "verifying", "completed", "failed", "canceling",
                    "canceled"] = Field(description="State of the download")
    message: str = Field(json_schema_extra={"example": "Downloading gemma.gguf: 12.3 of 253.1 MB (5%)"})
    progress: float | None = Field(None, ge=0, le=100, description="Percent done; present once the size is known")
    completed_bytes: int = Field(ge=0, description="Bytes received so far")
    total_bytes: int | None = Field(None, ge=0, description="Size of the file; present once the server told it")
    start_time: int = Field(description="When the pull was asked for (Unix epoch milliseconds)")
    end_time: int | None = Field(None, description="When it completed, failed or was canceled (Unix epoch "
                                 "milliseconds)")
    error: str | None = Field(None, description="Why it failed, e.g. not a GGUF file or a sha256 mismatch")

    @classmethod
    def of(cls, pull: ModelPull) -> ModelPullStatus:
        known = bool(pull.total_bytes)
        return cls(job_id=pull.id, model_name=pull.model_name, status=pull.status, message=pull.message,
                   completed_bytes=pull.completed_bytes, start_time=pull.start_ms,
                   total_bytes=pull.total_bytes if known else None,
                   progress=round(min(100.0, 100.0 * pull.completed_bytes / pull.total_bytes), 1) if known else None,
                   end_time=pull.end_ms, error=pull.error or None)


def pull_or_404(job_id: str) -> ModelPull:
    pull = ModelPull.get_or_none(ModelPull.id == job_id)
    if pull is None:
        raise not_found(f"Pull job {job_id} not found.")
    return pull


@model_pulls_bp.post("/pull-model")
@endpoint(tag="llm", json=ModelPullRequest, responses={
    202: (ModelPullAccepted, "Download queued; follow it with GET /api/llm/pull-status/{job_id}"),
    400: "modelUrl missing or blank; a scheme other than http or https; a URL or name that does not end in .gguf; "
         "a sha256 that is not 64 hexadecimal characters",
    409: "A model of that file name is in the store, or a pull of it is running",
    503: "Job queue unavailable; nothing was created"})
def pull_model(json: ModelPullRequest):
    """Download a GGUF model into the store

    The file is written next to the store as <name>.part, resumed with a Range request after a broken
    connection, and renamed into the store only once it is proven to be a GGUF file (with the given sha256,
    when one is given).
    """
    resolve_source(json.model_url or "")  # a source that cannot be downloaded is a 400 before anything else
    pull = model_pulls.start_pull(settings(), current_app.extensions["parley_redis"], json.model_url,
                                  sha256=json.sha256.lower() if json.sha256 else None)
    return ModelPullAccepted(job_id=pull.id, message=f"Download of {pull.model_name} started. Check its status."), 202


@model_pulls_bp.get("/pull-status/<job_id>")
@endpoint(tag="llm", path_parameters=PULL_JOB, responses={200: (ModelPullStatus, "The pull"),
                                                          404: "Unknown pull job"})
def pull_status(job_id: str):
    """Progress of a model download"""
    return ModelPullStatus.of(pull_or_404(job_id))


@model_pulls_bp.post("/cancel-pull/<job_id>")
@endpoint(tag="llm", path_parameters=PULL_JOB, responses={
    200: (Confirmation, '"Cancellation request sent for job <job_id>."'), 404: "Unknown pull job",
    409: "The pull is verifying, completed, failed or canceled: nothing to cancel"})
def cancel_pull(job_id: str):
    """Cancel a model download

    A queued pull is canceled at once; a running one becomes canceling and then canceled, with its partial file
    deleted.
    """
    model_pulls.cancel_pull(job_id)
    return Confirmation(message=f"Cancellation request sent for job {job_id}.")
