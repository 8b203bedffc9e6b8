"""The transcription API: upload, job list, status, result and exports, debug, live streams."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Literal

from flask import Blueprint, Response, jsonify, request
from simple_websocket import ConnectionClosed

from models import Job, Segment
from models.statuses import JobStatus
from parley import formats
from parley.timestamps import seconds
from services import events, modelstore
from services.media import MediaError, probe
from services.transcriptions import TRANSCRIPTION_API_SESSION, StoredAudio, start_transcription, today_noon_utc
from web import forms, sse
from web.context import hub, settings
from web.declared import Field, QueryModel, SpecWireModel, StoredModel, endpoint, query_integer
from web.errors import ApiError, bad_request, error_body, not_found
from web.streams import job_events
from web.uploads import claim
from web.websockets import sock

transcribe_bp = Blueprint("transcribe", __name__, url_prefix="/api/transcribe")

RESULT_FORMATS = {"json", "srt", "vtt", "txt"}


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


@transcribe_bp.post("/")
def create_job():
    cfg = settings()
    model_name = forms.whisper_model(cfg, request.form.get("model_name"), default=cfg.default_model)
    language = forms.language(request.form.get("language"), model=model_name)
    diarize = forms.as_bool("diarize", request.form.get("diarize"), default=True)
    num_speakers = forms.as_int("num_speakers", request.form.get("num_speakers"), lo=1, hi=10)
    upload = receive_audio("file")
    _, job = start_transcription(
        upload, model_name=model_name, language=language, diarize=diarize, num_speakers=num_speakers,
        session_fields={"session_name": Path(upload.original_name).stem, "date": today_noon_utc(),
                        **TRANSCRIPTION_API_SESSION},
    )
    return jsonify(spec_status({"job_id": job.id, "status": job.status,
                                "message": f"Transcription queued (position {queue_position(job)})"}))


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
    return Job.select().where((Job.status == JobStatus.QUEUED) & (Job.kind == job.kind)
                              & (Job.created_at_ms < job.created_at_ms)).count() + 1


def status_body(job: Job) -> dict:
    payload = events.status_payload(job)
    if job.status == JobStatus.QUEUED:
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
def job_status(job_id: str):
    # Only what the status shape needs: the poll clients repeat every second or so.
    job = Job.select(*STATUS_FIELDS).where(Job.id == job_id).first()
    if job is None:
        message = "Transcription job not found or expired"
        body = {**error_body(404, message), "job_id": job_id, "status": "not_found", "progress": 0,
                "updated_at": time.time()}
        return jsonify(body), 404
    return jsonify(status_body(job))


def transcript_segments(job: Job) -> list[dict]:
    return [s.as_dict() for s in Segment.select().where(Segment.job == job.id).order_by(Segment.idx)]


@transcribe_bp.get("/result/<job_id>")
def job_result(job_id: str):
    job = job_or_404(job_id)
    fmt = (request.args.get("format") or "json").lower()
    if fmt not in RESULT_FORMATS:
        raise bad_request(f"format must be one of {', '.join(sorted(RESULT_FORMATS))}")
    if job.status != JobStatus.COMPLETED:
        reason = f": {job.error}" if job.error else ""
        raise ApiError(409, f"job {job.id} is {job.status}{reason}; the result exists once it is completed")
    if job.kind == "retranscribe":
        return jsonify(job.result)
    segments = transcript_segments(job)
    if fmt == "json":
        return jsonify(
            job_id=job.id, status=job.status, segments=segments, text=" ".join(s["text"] for s in segments),
            language=job.detected_language or job.language, audio_duration=job.audio_duration,
            model_used=job.model_name,
        )
    render = {"srt": formats.to_srt, "vtt": formats.to_vtt, "txt": formats.to_txt}[fmt]
    mimetype = {"srt": "text/plain", "vtt": "text/vtt", "txt": "text/plain"}[fmt]
    stem = Path(job.session.file_name).stem if job.session_id else job.id
    return Response(render(segments), mimetype=mimetype, headers={
        "Content-Disposition": f'attachment; filename="{stem}.{fmt}"'})


@transcribe_bp.get("/debug/<job_id>")
def job_debug(job_id: str):
    job = job_or_404(job_id)
    segments = Segment.select().where(Segment.job == job.id)
    audio = settings().audio_dir / job.audio_path if job.audio_path else None
    return jsonify(
        job_id=job.id, kind=job.kind, status=job.status, message=job.message, progress=job.progress,
        cached_segments=segments.count(),
        latest_time=Segment.select(Segment.end).where(Segment.job == job.id).order_by(Segment.end.desc()).scalar(),
        chunks_done=job.chunks_done, total_chunks=job.total_chunks, chunk_plan=job.chunk_plan,
        event_seq=job.event_seq, attempts=job.attempts, worker=job.worker, error=job.error,
        model_name=job.model_name, language=job.language, detected_language=job.detected_language,
        diarize=job.diarize, num_speakers=job.num_speakers, audio_duration=job.audio_duration,
        audio_sha256=job.audio_sha256, audio_path_exists=bool(audio and audio.exists()),
        created_at=seconds(job.created_at_ms), started_at=seconds(job.started_at_ms),
        finished_at=seconds(job.finished_at_ms),
        session_id=job.session_id, live_clients=hub().client_count(),
    )


def _last_seq() -> int | None:
    raw = request.headers.get("Last-Event-ID") or request.args.get("last_event_id")
    if raw is None or raw == "":
        return None
    return forms.as_int("Last-Event-ID", raw, lo=0)


@transcribe_bp.get("/events/<job_id>")
def job_events_sse(job_id: str):
    job_or_404(job_id)
    last = _last_seq()
    stream = job_events(hub(), job_id, last_seq=last, heartbeat_s=settings().heartbeat_s)

    def frames():
        yield sse.retry(2000)  # how soon EventSource reconnects
        for event in stream:
            if event is None:
                yield sse.comment("heartbeat")
            else:
                event = spec_event(event)
                yield sse.event(event, name=event["type"], id=event["seq"])

    return sse.response(frames())


@transcribe_bp.before_request
def _live_job_must_exist():
    # The WebSocket handler runs after the upgrade; an unknown job must be refused before it, as a 404.
    if request.endpoint == "transcribe.job_live":
        job_or_404(request.view_args["job_id"])


@sock.route("/live/<job_id>", bp=transcribe_bp, endpoint="job_live")
def job_live(ws, job_id: str):
    last = _last_seq()
    try:
        for event in job_events(hub(), job_id, last_seq=last, heartbeat_s=settings().heartbeat_s):
            ws.send(json.dumps(spec_event(event) if event is not None else {"type": "heartbeat"},
                               separators=(",", ":")))
        ws.close(reason=1000, message="job finished")
    except ConnectionClosed:
        pass
