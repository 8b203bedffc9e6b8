"""Re-transcription of one segment, answered synchronously while the worker is quick enough; declared shapes."""
from __future__ import annotations

import uuid
from typing import Annotated

from flask import Blueprint
from pydantic import BeforeValidator

from models import Job
from models.statuses import JobStatus
from services import modelstore, retranscriptions
from web import forms
from web.context import hub, settings
from web.declared import NONBLANK, Field, FormModel, QueryModel, SpecWireModel, StoredModel, endpoint, lenient_number
from web.errors import ApiError
from web.streams import wait_until_finished
from web.transcribe import SPEC_STATE, STATE, JobState, SpecJobState, Word, receive_audio, spec_status

retranslate_bp = Blueprint("retranslate", __name__, url_prefix="/api/retranslate")

# A segment's id is text; a client that sends it as a JSON number was always understood.
SegmentId = Annotated[str, BeforeValidator(lambda v: str(v) if isinstance(v, int) and not isinstance(v, bool) else v)]


class RetranslateResult(StoredModel):
    """A segment transcribed again."""

    segment_id: str
    text: str = Field(description="New transcription of the segment")
    confidence: float = Field(ge=0, le=1, description="Mean word probability")
    speaker: str | None = Field(description="Speaker of the overlapping original segment, when known")
    model_used: str
    language: str | None = Field(None, description="The language it was transcribed in (ISO 639-1)")
    words: list[Word] = Field(default_factory=list, description="Word-level timestamps")


class RetranslateAccepted(SpecWireModel):
    """The worker did not answer in time; the job continues in the background."""

    job_id: str = Field(description="Job id to poll at /api/transcribe/status/{job_id}")
    status: SpecJobState = Field(description=SPEC_STATE)
    state: JobState = Field(description=STATE)
    message: str


class SegmentForm(FormModel):
    """The segment to transcribe again, beside its audio in `file`."""

    segment_id: str = Field(min_length=1, description="Id of the segment being redone")
    start_time: lenient_number(minimum=0) = Field(0.0, description="Segment start in seconds")
    end_time: lenient_number(minimum=0) | None = Field(None, description="Segment end in seconds")
    model_name: str | None = Field(None, description="Whisper model name")
    language: str | None = Field(None, description="ISO 639-1 language code")


class RetranslateFromFullRequest(SpecWireModel):
    """A time range of a job's stored audio to transcribe again."""

    segment_id: SegmentId = Field(min_length=1)
    start_time: lenient_number(minimum=0) = Field(description="Start of the range in seconds")
    end_time: lenient_number(minimum=0) = Field(description="End of the range in seconds")
    model_name: str | None = Field(None, description="Whisper model to use; defaults to the job's model")
    language: str | None = Field(None, description="ISO 639-1 language code")


class SourceJob(QueryModel):
    job_id: str = Field(min_length=1, pattern=NONBLANK, description="Job id returned by POST /api/transcribe/")


ACCEPTED = (RetranslateAccepted, "The worker did not answer in time; poll /api/transcribe/status/{job_id}")


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
        return RetranslateResult.model_validate(job.result)
    if job.status == JobStatus.FAILED:
        raise ApiError(422, f"the segment could not be re-transcribed: {job.error}")
    return RetranslateAccepted.model_validate(spec_status({
        "job_id": job.id, "status": job.status, "message": f"still running after {wait_s:.0f} s; poll "
        f"/api/transcribe/status/{job.id} and fetch /api/transcribe/result/{job.id}"})), 202


@retranslate_bp.post("/segment")
@endpoint(tag="retranslate", operation_id="retranslate_segment", form=SegmentForm,
          files={"file": "Audio (or video) file"},
          responses={200: (RetranslateResult, "New transcription of the segment"), 202: ACCEPTED,
                     400: "Invalid upload or parameters", 413: "Upload exceeds the size limit",
                     422: "The worker could not transcribe the segment",
                     507: "Not enough disk space to store the upload; nothing was kept",
                     503: "Job queue unavailable"})
def segment(form: SegmentForm):
    """Re-transcribe an uploaded audio snippet"""
    cfg = settings()
    model = forms.whisper_model(cfg, form.model_name, default=_default_model(cfg.default_model))
    language = forms.language(form.language, model=model)
    upload = receive_audio("file")
    return _queue_and_wait(lambda job_id: retranscriptions.retranscribe_clip(
        upload, segment_id=form.segment_id, start=form.start_time, end=form.end_time, model=model,
        language=language, job_id=job_id))


@retranslate_bp.post("/segment-from-full")
@endpoint(tag="retranslate", operation_id="retranslate_segment_from_full", query=SourceJob,
          json=RetranslateFromFullRequest,
          responses={200: (RetranslateResult, "New transcription; speaker is that of the overlapping original "
                                              "segment when known"),
                     202: ACCEPTED, 400: "Invalid time range or JSON body",
                     404: "Unknown job, or its audio is gone", 422: "The worker could not transcribe the segment",
                     503: "Job queue unavailable"})
def segment_from_full(query: SourceJob, json: RetranslateFromFullRequest):
    """Re-transcribe a time range of a job's stored audio"""
    source = retranscriptions.source_job(query.job_id.strip(), audio_dir=settings().audio_dir)
    retranscriptions.check_range(json.start_time, json.end_time, source.audio_duration)
    cfg = settings()
    model = forms.whisper_model(cfg, json.model_name, default=_default_model(source.model_name))
    language = forms.language(json.language or source.detected_language or source.language, model=model)
    return _queue_and_wait(lambda job_id: retranscriptions.retranscribe_stored(
        source, segment_id=json.segment_id, start=json.start_time, end=json.end_time, model=model,
        language=language, job_id=job_id))
