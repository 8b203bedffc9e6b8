"""Re-transcription of one segment, answered synchronously while the worker is quick enough."""
from __future__ import annotations

import uuid

from flask import Blueprint, jsonify, request

from models import Job, db
from services import events, modelstore
from services.queue import send_job
from web import forms
from web.context import hub, settings
from web.errors import ApiError, bad_request, not_found
from web.streams import wait_until_finished
from web.transcribe import receive_audio, spec_status

retranslate_bp = Blueprint("retranslate", __name__, url_prefix="/api/retranslate")

MAX_SEGMENT_S = 600.0  # a "segment" longer than this is a transcription job, not a re-transcription


def _default_model(fallback: str) -> str:
    cfg = settings()
    preferred = cfg.retranslate_model
    if modelstore.is_downloaded(cfg.model_dir, preferred):
        return preferred
    return fallback


def _check_range(start: float, end: float, duration: float | None) -> None:
    if end <= start:
        raise bad_request(f"end_time ({end}) must be greater than start_time ({start})")
    if end - start > MAX_SEGMENT_S:
        raise bad_request(f"a segment may be at most {MAX_SEGMENT_S:.0f} s long; got {end - start:.1f} s")
    if duration is not None and start >= duration:
        raise bad_request(f"start_time ({start}) is beyond the end of the audio ({duration:.2f} s)")


def _run_and_wait(job: Job, *, cleanup):
    """Enqueue the job, then wait for its terminal event up to the configured time; 202 if it runs on."""
    wait_s = settings().retranslate_wait_s
    q = hub().register(job.id)  # before enqueueing: the worker may finish before we would listen
    try:
        send_job("retranscribe", job.id, undo=cleanup)
        wait_until_finished(q, lambda: Job.get_by_id(job.id).status in Job.TERMINAL, timeout_s=wait_s)
    finally:
        hub().unregister(job.id, q)
    job = Job.get_by_id(job.id)
    if job.status == "completed":
        return jsonify(job.result)
    if job.status == "failed":
        raise ApiError(422, f"the segment could not be re-transcribed: {job.error}")
    return jsonify(spec_status({"job_id": job.id, "status": job.status,
                                "message": f"still running after {wait_s:.0f} s; poll /api/transcribe/status/"
                                           f"{job.id} and fetch /api/transcribe/result/{job.id}"})), 202


def _create_job(*, model: str, language: str | None, params: dict, audio_path: str | None) -> Job:
    with db.atomic():
        job = Job.create(id=str(uuid.uuid4()), kind="retranscribe", model_name=model, language=language,
                         diarize=False, audio_path=audio_path, params=params, message="Queued for re-transcription")
        events.record(job.id, "status", events.status_payload(job))
    return job


def _delete_job(job: Job):
    Job.delete().where(Job.id == job.id).execute()


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
    if end is not None:
        _check_range(start, end, None)
    job = _create_job(model=model, language=language, audio_path=upload.stored_name,
                      params={"segment_id": segment_id, "start_time": start, "end_time": end if end is not None else start,
                              "clip": True})

    def cleanup():
        _delete_job(job)
        upload.path.unlink(missing_ok=True)

    return _run_and_wait(job, cleanup=cleanup)


@retranslate_bp.post("/segment-from-full")
def segment_from_full():
    source_id = request.args.get("job_id", "").strip()
    if not source_id:
        raise bad_request("the query parameter job_id is required")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object with segment_id, start_time and end_time")
    source = Job.get_or_none((Job.id == source_id) & (Job.kind == "transcribe"))
    if source is None:
        raise not_found(f"transcription job {source_id} not found")
    if not source.audio_path or not (settings().audio_dir / source.audio_path).exists():
        raise not_found(f"the audio of job {source_id} is no longer stored")
    segment_id = str(body.get("segment_id") or "").strip()
    if not segment_id:
        raise bad_request("segment_id is required")
    if body.get("start_time") is None or body.get("end_time") is None:
        raise bad_request("start_time and end_time are required")
    start = forms.as_float("start_time", body.get("start_time"), lo=0.0)
    end = forms.as_float("end_time", body.get("end_time"), lo=0.0)
    _check_range(start, end, source.audio_duration)
    cfg = settings()
    model = forms.whisper_model(cfg, body.get("model_name"), default=_default_model(source.model_name))
    language = forms.language(body.get("language") or source.detected_language or source.language, model=model)
    job = _create_job(model=model, language=language, audio_path=None,
                      params={"segment_id": segment_id, "start_time": start, "end_time": end,
                              "source_job_id": source.id, "clip": False})
    return _run_and_wait(job, cleanup=lambda: _delete_job(job))
