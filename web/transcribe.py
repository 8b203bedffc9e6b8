"""The transcription API: upload, job list, status, result and exports, debug (live streams: transcribe_live)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Literal

from flask import Blueprint, Response, jsonify, request
from pydantic import BeforeValidator

from models import Job, Segment as SegmentRow
from models.statuses import JobStatus as Status
from parley import formats
from parley.timestamps import seconds
from services import events, modelstore, voice_labels
from services.media import MediaError, probe
from services.transcriptions import TRANSCRIPTION_API_SESSION, StoredAudio, start_transcription, today_noon_utc
from web import forms
from web.auth import token_id
from web.context import hub, settings
from web.declared import (Documented, Field, FormModel, LenientBoolean, QueryModel, SpecWireModel, StoredModel,
                          endpoint, lenient_integer, query_integer)
from web.errors import ApiError, bad_request, error_body, not_found
from web.uploads import claim

transcribe_bp = Blueprint("transcribe", __name__, url_prefix="/api/transcribe")


def receive_audio(field: str) -> StoredAudio:
    """The uploaded file of form field `field`, stored and proven to be audio, or a 400."""
    part = request.files.get(field)
    if part is None:
        raise bad_request(f"the form field {field!r} with an audio file is required")
    upload = claim(part, settings().audio_dir)
    try:
        if upload.size == 0:
            raise MediaError("the file is empty")
        probe(upload.path)
    except MediaError as exc:
        upload.path.unlink(missing_ok=True)
        raise bad_request(f"{upload.original_name}: {exc}") from None
    return upload


JobState = Literal["queued", "processing", "completed", "failed", "canceled"]
SpecJobState = Literal["processing", "completed", "failed"]
DISPLAY_TIME = r"^\d{2,}:\d{2}:\d{2}\.\d{3}$"
SEQ = "Event sequence number (also the SSE event id)"
STATE = "Parley's state of a job"
SPEC_STATE = ("The job's state as the transcription service speaks it: processing (queued or running), completed, or "
              "failed (failed or canceled); `state` carries Parley's own")


class Word(StoredModel):
    """A word with its time, as recognised."""

    start: float = Field(description="Start time in seconds")
    end: float = Field(description="End time in seconds")
    word: str
    probability: float = Field(description="Recognition probability")
    speaker: str | None = Field(None, description="Speaker active at this word (the dominant one in overlapped "
                                "speech); present when speakers are labelled")
    overlap: list[str] = Field(default_factory=list, description="Other speakers heard during this word; present "
                               "only where speech overlaps")


class ChunkInfo(SpecWireModel):
    """Progress of chunked processing."""

    current_chunk: int = Field(description="Chunk being processed")
    total_chunks: int = Field(description="Number of chunks in the recording")
    chunk_progress: float = Field(description="Progress within the current chunk")


class Segment(StoredModel):
    """A transcribed segment with its speaker."""

    id: int = Field(description="Segment index")
    start: float = Field(description="Start time in seconds")
    end: float = Field(description="End time in seconds")
    text: str
    speaker: str | None = Field(description="Speaker label, e.g. SPEAKER_00")
    speaker_confidence: float | None = Field(ge=0, le=1, description="Confidence of the speaker label")
    start_display: str = Field(pattern=DISPLAY_TIME, description="Start time as HH:MM:SS.mmm",
                               json_schema_extra={"example": "00:01:02.345"})
    end_display: str = Field(pattern=DISPLAY_TIME, description="End time as HH:MM:SS.mmm",
                             json_schema_extra={"example": "00:01:04.000"})
    words: list[Word] = Field(description="Word-level timestamps")
    overlap_speakers: list[str] = Field(default_factory=list, description="Other speakers heard during this segment "
                                        "(overlapped speech); `speaker` is the dominant one. Empty when none")


class KnownVoice(SpecWireModel):
    """A speaker named after a known voice (a voice profile, /api/voices)."""

    speaker: str = Field(description="The speaker's label: the profile's name")
    profile_id: int | None = Field(description="The voice profile that matched (null: deleted since)")
    similarity: float = Field(description="Cosine similarity of the speaker's voiceprint and the profile's voice; "
                                          "it is also folded into the segments' speaker_confidence")


class Transcript(StoredModel):
    """A completed job's transcript."""

    job_id: str = Field(description="Job id")
    status: JobState = Field(description=STATE)
    segments: list[Segment]
    text: str = Field(description="Full transcript text")
    language: str | None = Field(description="Detected or requested language (ISO 639-1)")
    audio_duration: float | None = Field(description="Audio duration in seconds")
    model_used: str = Field(description="Model that produced the transcript")
    voices: list[KnownVoice] = Field(description="Speakers named after known voices; empty when none was")


class TranscriptionForm(FormModel):
    """The options of a transcription, beside its audio in `file`."""

    model_name: str | None = Field(None, description="Whisper model name (default: PARLEY_DEFAULT_MODEL, tiny.en)")
    language: str | None = Field(None, description="ISO 639-1 language code; detected when omitted")
    diarize: LenientBoolean = Field(True, description="Label speakers")
    num_speakers: lenient_integer(minimum=1, maximum=10) | None = Field(None, description="Expected number of "
                                                                        "speakers")


class JobAccepted(SpecWireModel):
    """A transcription job was queued."""

    job_id: str = Field(description="Job id (a UUID)", json_schema_extra={"format": "uuid"})
    status: Literal["processing"] = Field(description="Always processing: the job is queued")
    state: Literal["queued"] = Field(description="Parley's state")
    message: str = Field(description="With the position in the queue",
                         json_schema_extra={"example": "Transcription queued (position 1)"})


class JobStatus(SpecWireModel):
    """A job's progress."""

    job_id: str = Field(description="Job id")
    status: SpecJobState = Field(description=SPEC_STATE)
    state: JobState = Field(description=STATE)
    message: str = Field(description="Progress; while queued, the position in the queue")
    progress: float = Field(ge=0, le=100, description="Percent complete")
    updated_at: float = Field(description="Last update time (Unix epoch seconds)")
    chunk_info: ChunkInfo | None
    error: str | None = Field(description="Failure reason when status is failed")


class JobNotFound(SpecWireModel):
    """Status body for an unknown or expired job."""

    job_id: str = Field(description="The requested job id")
    status: Literal["not_found"]
    message: str = Field(json_schema_extra={"example": "Transcription job not found or expired"})
    progress: float = Field(description="Always 0", json_schema_extra={"example": 0})
    updated_at: float = Field(description="Time of the lookup (Unix epoch seconds)")
    detail: str
    error: str = Field(description="Error class name", json_schema_extra={"example": "NotFoundError"})


class DebugInfo(SpecWireModel):
    """Diagnostics for a job; fields may be added."""

    job_id: str
    kind: str
    status: JobState
    message: str
    progress: float
    cached_segments: int = Field(description="Segments stored so far")
    latest_time: float | None = Field(description="End time (s) of the latest segment")
    chunks_done: int | None
    total_chunks: int | None
    chunk_plan: list[Any] | None = Field(description="The chunks' time ranges, once planned")
    event_seq: int | None = Field(description="Sequence number of the latest live event")
    attempts: int | None = Field(description="Processing attempts")
    worker: str | None = Field(description="host:pid that last ran it")
    error: str | None
    model_name: str | None
    language: str | None
    detected_language: str | None
    diarize: bool | None
    num_speakers: int | None
    audio_duration: float | None
    audio_sha256: str | None
    audio_path_exists: bool
    created_at: float | None = Field(description="Unix epoch seconds")
    started_at: float | None = Field(description="Unix epoch seconds")
    finished_at: float | None = Field(description="Unix epoch seconds")
    session_id: int | None
    live_clients: int = Field(description="Live stream clients of this web process")


class ResultQuery(QueryModel):
    # Any case, and empty for the default, as it always was.
    format: Annotated[Literal["json", "srt", "vtt", "txt"],
                      BeforeValidator(lambda v: v.strip().lower() or "json" if isinstance(v, str) else v)] = Field(
        "json", description="Output format")


class ModelInfo(SpecWireModel):
    name: str = Field(description="Short model name used in requests", json_schema_extra={"example": "tiny.en"})
    full_name: str = Field(description="Full model identifier")
    is_downloaded: bool = Field(description="Whether the weights are available locally")
    size_mb: float = Field(description="Approximate model size in MB")
    description: str
    languages: Literal["en", "multilingual"] = Field(description="English-only or multilingual model")


class ModelList(SpecWireModel):
    models: list[ModelInfo]


class JobsQuery(QueryModel):
    status: Literal["queued", "processing", "completed", "failed", "canceled", ""] = Field(
        "", description="Only jobs in this state (processing: queued or running)")
    limit: query_integer(minimum=1, maximum=500, signed=True, blank_is_default=True) = Field(
        100, description="Maximum jobs returned")


class JobSummary(SpecWireModel):
    job_id: str = Field(description="Job id")
    status: SpecJobState = Field(description=SPEC_STATE)
    state: JobState = Field(description=STATE)
    progress: float = Field(ge=0, le=100, description="Percent complete")
    updated_at: float = Field(description="Last update time (Unix epoch seconds)")
    message: str
    kind: Literal["transcribe", "retranscribe"] = Field(description="A full transcription or a segment's")


class JobList(SpecWireModel):
    jobs: list[JobSummary]
    count: int = Field(ge=0, description="Number of jobs returned")


@transcribe_bp.get("/models")
@endpoint(tag="transcribe", responses={200: (ModelList, "Known models")})
def list_models():
    """List available Whisper models"""
    return ModelList.model_validate({"models": modelstore.list_models(settings().model_dir)})


JOB_ID = {"job_id": "Job id returned by POST /api/transcribe/"}
UNKNOWN_JOB = "Unknown job"


@transcribe_bp.post("/")
@endpoint(tag="transcribe", operation_id="create_transcription", form=TranscriptionForm,
          files={"file": "Audio (or video) file"},
          responses={200: (JobAccepted, "Job queued"), 400: "Not an audio file, empty file, unknown model or language",
                     413: "Upload exceeds the size limit",
                     507: "Not enough disk space to store the upload; nothing was kept", 503: "Job queue unavailable"})
def create_job(form: TranscriptionForm):
    """Upload audio and queue a transcription job"""
    cfg = settings()
    model_name = forms.whisper_model(cfg, form.model_name, default=cfg.default_model)
    language = forms.language(form.language, model=model_name)
    upload = receive_audio("file")
    _, job = start_transcription(
        upload, model_name=model_name, language=language, diarize=form.diarize, num_speakers=form.num_speakers,
        session_fields={"session_name": Path(upload.original_name).stem, "date": today_noon_utc(),
                        **TRANSCRIPTION_API_SESSION},
        owner_token_id=token_id(),
    )
    return JobAccepted.model_validate(spec_status({
        "job_id": job.id, "status": job.status, "message": f"Transcription queued (position {queue_position(job)})"}))


def job_or_404(job_id: str) -> Job:
    job = Job.get_or_none(Job.id == job_id)
    if job is None:
        raise not_found(f"job {job_id} not found")
    return job


STATUS_FIELDS = (Job.id, Job.kind, Job.status, Job.message, Job.progress, Job.chunk_plan, Job.chunks_done,
                 Job.chunk_progress, Job.error, Job.updated_at_ms, Job.created_at_ms)

# The transcription service's spec speaks three job states; Parley's finer one travels in `state`:
# queued -> processing (the queue position is in `message`), canceled -> failed. The sessions API
# keeps Parley's own states.
SPEC_STATUS = {"queued": "processing", "processing": "processing", "completed": "completed", "failed": "failed",
               "canceled": "failed"}


def spec_status(payload: dict) -> dict:
    """A payload with a `status` in the spec's states, Parley's own kept as `state`."""
    state = payload.get("status")
    return {**payload, "status": SPEC_STATUS.get(state, state), "state": state}


def spec_event(event: dict | None) -> dict | None:
    """A live event as the transcription API sends it (status events in the spec's states)."""
    return spec_status(event) if event is not None and event.get("type") == "status" else event


def queue_position(job: Job) -> int:
    """1 for the next job its queue will run; counts the jobs of the same kind queued before it."""
    return Job.select().where((Job.status == Status.QUEUED) & (Job.kind == job.kind)
                              & (Job.created_at_ms < job.created_at_ms)).count() + 1


def status_body(job: Job) -> dict:
    payload = events.status_payload(job)
    if job.status == Status.QUEUED:
        ahead = queue_position(job) - 1
        payload["message"] = (f"Queued: {ahead} job{'s' if ahead != 1 else ''} ahead in the queue" if ahead
                              else "Queued: next in the queue")
    return spec_status({"job_id": job.id, **payload})


@transcribe_bp.get("/jobs")
@endpoint(tag="transcribe", query=JobsQuery, responses={200: (JobList, "Jobs, newest first"),
                                                        400: "Invalid status or limit"})
def list_jobs(query: JobsQuery):
    """List recent jobs"""
    jobs = Job.select().order_by(Job.created_at_ms.desc()).limit(query.limit)
    if query.status:
        # A spec state means every finer state it stands for (processing: queued or running).
        jobs = jobs.where(Job.status.in_([s for s, spec in SPEC_STATUS.items() if query.status in (s, spec)]))
    listed = [JobSummary.model_validate(spec_status({
        "job_id": j.id, "status": j.status, "progress": round(j.progress, 1), "updated_at": seconds(j.updated_at_ms),
        "message": j.message, "kind": j.kind})) for j in jobs]
    return JobList(jobs=listed, count=len(listed))


@transcribe_bp.get("/status/<job_id>")
@endpoint(tag="transcribe", path_parameters=JOB_ID,
          responses={200: (JobStatus, "Job status"), 404: (JobNotFound, "Job not found or expired")})
def job_status(job_id: str):
    """Status of a transcription job"""
    # Only what the status shape needs: the poll clients repeat every second or so.
    job = Job.select(*STATUS_FIELDS).where(Job.id == job_id).first()
    if job is None:
        message = "Transcription job not found or expired"
        return JobNotFound.model_validate({**error_body(404, message), "job_id": job_id, "status": "not_found",
                                           "progress": 0, "updated_at": time.time()}), 404
    return JobStatus.model_validate(status_body(job))


def transcript_segments(job: Job) -> list[dict]:
    return [s.as_dict() for s in SegmentRow.select().where(SegmentRow.job == job.id).order_by(SegmentRow.idx)]


TRANSCRIPT_TEXTS = {"text/plain": {"schema": {"type": "string", "description": "SubRip subtitles (format=srt) or "
                                              "plain text (format=txt)"}},
                    "text/vtt": {"schema": {"type": "string", "description": "WebVTT subtitles (format=vtt)"}}}


@transcribe_bp.get("/result/<job_id>")
@endpoint(tag="transcribe", query=ResultQuery, path_parameters=JOB_ID, responses={
    200: Documented("Transcript: JSON for format=json (a segment's re-transcription for a job of kind retranscribe), "
                    "SubRip (text/plain) for srt, WebVTT for vtt, plain text for txt",
                    {"application/json": {"schema": Transcript}, **TRANSCRIPT_TEXTS}),
    400: "Unknown format", 404: UNKNOWN_JOB, 409: "Job has not completed yet"})
def job_result(job_id: str, query: ResultQuery):
    """Transcript of a completed job"""
    job = job_or_404(job_id)
    if job.status != Status.COMPLETED:
        reason = f": {job.error}" if job.error else ""
        raise ApiError(409, f"job {job.id} is {job.status}{reason}; the result exists once it is completed")
    if job.kind == "retranscribe":
        return jsonify(job.result)
    segments = transcript_segments(job)
    if query.format == "json":
        return Transcript.model_validate({
            "job_id": job.id, "status": job.status, "segments": segments,
            "text": " ".join(s["text"] for s in segments), "language": job.detected_language or job.language,
            "audio_duration": job.audio_duration, "model_used": job.model_name,
            "voices": voice_labels.recognised(job.session_id)})
    render = {"srt": formats.to_srt, "vtt": formats.to_vtt, "txt": formats.to_txt}[query.format]
    mimetype = {"srt": "text/plain", "vtt": "text/vtt", "txt": "text/plain"}[query.format]
    stem = Path(job.session.file_name).stem if job.session_id else job.id
    return Response(render(segments), mimetype=mimetype, headers={
        "Content-Disposition": f'attachment; filename="{stem}.{query.format}"'})


@transcribe_bp.get("/debug/<job_id>")
@endpoint(tag="transcribe", path_parameters=JOB_ID, responses={200: (DebugInfo, "Diagnostics"), 404: UNKNOWN_JOB})
def job_debug(job_id: str):
    """Diagnostic information about a job"""
    job = job_or_404(job_id)
    segments = SegmentRow.select().where(SegmentRow.job == job.id)
    audio = settings().audio_dir / job.audio_path if job.audio_path else None
    return DebugInfo(
        job_id=job.id, kind=job.kind, status=job.status, message=job.message, progress=job.progress,
        cached_segments=segments.count(),
        latest_time=SegmentRow.select(SegmentRow.end).where(SegmentRow.job == job.id)
        .order_by(SegmentRow.end.desc()).scalar(),
        chunks_done=job.chunks_done, total_chunks=job.total_chunks, chunk_plan=job.chunk_plan,
        event_seq=job.event_seq, attempts=job.attempts, worker=job.worker, error=job.error,
        model_name=job.model_name, language=job.language, detected_language=job.detected_language,
        diarize=job.diarize, num_speakers=job.num_speakers, audio_duration=job.audio_duration,
        audio_sha256=job.audio_sha256, audio_path_exists=bool(audio and audio.exists()),
        created_at=seconds(job.created_at_ms), started_at=seconds(job.started_at_ms),
        finished_at=seconds(job.finished_at_ms),
        session_id=job.session_id, live_clients=hub().client_count(),
    )
