"""Re-transcription of one segment, answered synchronously while the worker is quick enough."""
from __future__ import annotations

import uuid

from flask import Blueprint, jsonify, request

from models import Job
from models.statuses import JobStatus
from services import modelstore, retranscriptions
from web import forms
from web.context import hub, settings
from web.errors import ApiError, bad_request
from web.streams import wait_until_finished
from web.transcribe import receive_audio, spec_status

retranslate_bp = Blueprint("retranslate", __name__, url_prefix="/api/retranslate")


def _default_model(fallback: str) -> str:
    cfg = settings()
    preferred = cfg.retranslate_model
    if modelstore.is_downloaded(cfg.model_dir, preferred):
        return preferred
    return fallback


def _queue_and_wait(queue_job):
    """Queue the job (`queue_job(job_id)`), then wait for its end up to the configured time; 202 if it runs on."""
    wait_s = settings().retranslate_wait_s
    job_id = str(uuid.uuid4())
    q = hub().register(job_id)  # before the job is sent: the worker may finish before we would listen
    try:
        queue_job(job_id)
        wait_until_finished(q, lambda: Job.get_by_id(job_id).status in Job.TERMINAL, timeout_s=wait_s)
    finally:
        hub().unregister(job_id, q)
    job = Job.get_by_id(job_id)
    if job.status == JobStatus.COMPLETED:
        return jsonify(job.result)
    if job.status == JobStatus.FAILED:
        raise ApiError(422, f"the segment could not be re-transcribed: {job.error}")
    return jsonify(spec_status({"job_id": job.id, "status": job.status,
                                "message": f"still running after {wait_s:.0f} s; poll /api/transcribe/status/"
                                           f"{job.id} and fetch /api/transcribe/result/{job.id}"})), 202


@retranslate_bp.post("/segment")
def segment():
    form = request.form
    segment_id = (form.get("segment_id") or "").strip()
    if not segment_id:
        raise bad_request("segment_id is required")
    start = forms.as_float("start_time", form.get("start_time"), default=0.0, lo=0.0)
    end = forms.as_float("end_time", form.get("end_time"), default=None, lo=0.0)
    cfg = settings()
    model = forms.whisper_model(cfg, form.get("model_name"), default=_default_model(cfg.default_model))
    language = forms.language(form.get("language"), model=model)
    upload = receive_audio("file")
    return _queue_and_wait(lambda job_id: retranscriptions.retranscribe_clip(
        upload, segment_id=segment_id, start=start, end=end, model=model, language=language, job_id=job_id))


@retranslate_bp.post("/segment-from-full")
def segment_from_full():
    source_id = request.args.get("job_id", "").strip()
    if not source_id:
        raise bad_request("the query parameter job_id is required")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object with segment_id, start_time and end_time")
    source = retranscriptions.source_job(source_id, audio_dir=settings().audio_dir)
    segment_id = str(body.get("segment_id") or "").strip()
    if not segment_id:
        raise bad_request("segment_id is required")
    if body.get("start_time") is None or body.get("end_time") is None:
        raise bad_request("start_time and end_time are required")
    start = forms.as_float("start_time", body.get("start_time"), lo=0.0)
    end = forms.as_float("end_time", body.get("end_time"), lo=0.0)
    retranscriptions.check_range(start, end, source.audio_duration)
    cfg = settings()
    model = forms.whisper_model(cfg, body.get("model_name"), default=_default_model(source.model_name))
    language = forms.language(body.get("language") or source.detected_language or source.language, model=model)
    return _queue_and_wait(lambda job_id: retranscriptions.retranscribe_stored(
        source, segment_id=segment_id, start=start, end=end, model=model, language=language, job_id=job_id))
