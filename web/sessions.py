"""The sessions API: sessions (upload with metadata, details, deletion), their audio and transcription status."""
from __future__ import annotations

import datetime
import re
from typing import Annotated, Any, Literal

import redis
from flask import Blueprint, current_app, request, send_file
from pydantic import AfterValidator, ConfigDict, TypeAdapter
from pydantic.alias_generators import to_camel
from werkzeug.http import parse_range_header

from jobs.heartbeats import alive_workers
from models import Chat, Job, Session, db
from parley.timestamps import now_ms
from services import search, transcript_edits, voice_labels
from services.queue import QueueUnavailable
from services.sessions import delete_session
from services.transcriptions import start_transcription
from web.auth import token_id
from web.context import settings
from web.declared import (ID_DIGITS, NONBLANK, Confirmation, Documented, Field, FormModel, OutputModel,
                          SparseWireModel, SpecWireModel, WireModel, endpoint, lenient_number)
from web.errors import ApiError, bad_request, not_found
from web.openapi_schema import header, integer, string
from web.transcribe import receive_audio
from web.uploads import safe_display_name

sessions_bp = Blueprint("sessions", __name__, url_prefix="/api")

# The part content types the sessions client may send (contract §2.2).
AUDIO_CONTENT_TYPES = {
    "audio/mpeg", "audio/mp3", "audio/mp4", "audio/wav", "audio/x-wav", "audio/aac", "audio/ogg", "audio/webm",
    "audio/flac", "audio/x-m4a", "audio/x-flac", "video/mp4", "video/mpeg", "video/webm", "video/quicktime",
    "video/x-msvideo", "video/x-matroska", "video/x-flv",
}
AUDIO_MIMETYPES = {".mp3": "audio/mpeg", ".wav": "audio/wav", ".ogg": "audio/ogg", ".m4a": "audio/mp4",
                   ".aac": "audio/aac", ".flac": "audio/flac", ".webm": "audio/webm"}
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


# --- lookups and validation -----------------------------------------------------------------------
def numeric_id(value: str, name: str) -> int:
    if not re.fullmatch(r"[0-9]{1,18}", value or ""):
        raise bad_request(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def session_or_404(session_id: str) -> Session:
    sid = numeric_id(session_id, "sessionId")
    session = Session.get_or_none(Session.id == sid)
    if session is None:
        raise not_found(f"Session with ID {sid} not found.")
    return session


def noon_utc(value: str) -> str:
    """A YYYY-MM-DD date as the stored noon UTC, so the date does not shift in any time zone."""
    if not DATE.match(value):
        raise ValueError(f"must be a date as YYYY-MM-DD, got {value!r}")
    try:
        datetime.date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a real date") from None
    return f"{value}T12:00:00.000Z"


def speaker_count(number: float) -> int:
    """numSpeakers rounded and clamped to 0..10; 0 and 1 mean "do not label speakers"."""
    return int(min(10, max(0, round(number))))


def readiness_gate(diarize: bool) -> None:
    """503 unless a live worker can transcribe (and label speakers, when asked)."""
    try:
        workers = [w for w in alive_workers(current_app.extensions["parley_redis"]) if "asr" in w.get("queues", [])]
    except redis.RedisError as exc:
        raise QueueUnavailable.because(exc) from None
    if not workers:
        raise ApiError(503, "no transcription worker is running; start one (see the Procfile) and try again")
    if diarize and not any(w.get("diarization") for w in workers):
        raise ApiError(503, "speaker diarization is not available on any running transcription worker "
                            "(switched off, or its speaker-encoder model is missing); upload with numSpeakers 0 or fix the worker")


# --- shapes ---------------------------------------------------------------------------------------
SessionState = Literal["pending", "queued", "transcribing", "completed", "failed"]
Text = Annotated[str, Field(min_length=1, pattern=NONBLANK)]
# noon_utc checks the pattern itself, to answer in the user's terms (YYYY-MM-DD).
IsoDate = Annotated[str, Field(description="Session date; stored as noon UTC", json_schema_extra={
    "format": "date", "pattern": DATE.pattern}), AfterValidator(noon_utc)]


class SessionMeta(OutputModel):
    """A session as listed and as returned by PUT /api/sessions/{session_id}/metadata."""

    id: int = Field(ge=0, description="Session id")
    file_name: str = Field(description="Original upload name; shown when sessionName is empty")
    client_name: str
    session_name: str
    date: str = Field(description="Session date, stored as noon UTC so it does not shift in any time zone",
                      json_schema_extra={"format": "date-time", "example": "2026-06-23T12:00:00.000Z"})
    session_type: str = Field(description="Free text, e.g. Individual or Couples")
    therapy: str = Field(description="Free text, e.g. CBT or DBT")
    audio_path: str | None = Field(description="Opaque name of the stored audio; null once the audio is deleted")
    status: SessionState = Field(description="State of a session's transcription")
    whisper_job_id: str | None = Field(description="Transcription job id, set once transcription starts; poll "
                                       "/api/transcription/status/{job_id}")
    transcript_token_count: int | None = Field(ge=0, description="Tokens in the transcript")
    duration: int | None = Field(ge=0, description="Audio duration in whole seconds")
    error_message: str | None = Field(description="Why transcription failed, when status is failed")
    show_speakers: int | None = Field(ge=0, le=1, description="1 shows speaker labels, 0 hides them (a boolean in "
                                      "PUT .../metadata); null means shown")

    @classmethod
    def of(cls, session: Session) -> SessionMeta:
        return cls.model_validate({name: getattr(session, name) for name in cls.model_fields})


class SessionChatMeta(OutputModel):
    """A chat of a session, without its messages."""

    id: int = Field(description="Chat id")
    session_id: int = Field(ge=0, description="Session id")
    timestamp: int = Field(description="Creation time (Unix epoch milliseconds)")
    name: str | None = Field(description="Chat name")

    @classmethod
    def of(cls, chat: Chat) -> SessionChatMeta:
        return cls(id=chat.id, session_id=chat.session_id, timestamp=chat.timestamp_ms, name=chat.name)


class KnownVoice(OutputModel):
    """A speaker of the session named after a known voice (a voice profile, /api/voices)."""

    speaker: str = Field(description="The speaker's label: the profile's name")
    profile_id: int | None = Field(description="The voice profile that matched (null: deleted since)")
    similarity: float = Field(description="Cosine similarity of the speaker's voiceprint and the profile's voice")


class SessionDetail(SessionMeta):
    """A session with its chats."""

    chats: list[SessionChatMeta] = Field(description="The session's chats, newest first")
    known_voices: list[KnownVoice] = Field(description="Speakers named after known voices; empty when none was")


class SessionUploadForm(FormModel):
    """A session's metadata, beside its audio in `audioFile`."""

    model_config = ConfigDict(alias_generator=to_camel)

    client_name: Text
    session_name: Text
    date: IsoDate
    session_type: Text
    therapy: Text
    num_speakers: lenient_number() = Field(0, description="Expected number of speakers, rounded and clamped to 0..10 "
                                           "(empty or omitted: 0). 0 and 1 switch speaker labelling off; 2 or more "
                                           "switch it on and need a worker that can label speakers")


class SessionUploadAccepted(WireModel):
    """The session was created with status queued; follow it with GET /api/sessions/{session_id}."""

    session_id: int = Field(ge=0, description="Session id")
    message: str = Field(json_schema_extra={"example": "Upload successful, transcription queued."})


IGNORED = "Accepted and ignored"


def _at_least_one_field(schema: dict[str, Any], model: type) -> None:
    SparseWireModel.model_config["json_schema_extra"](schema, model)  # optional fields: absent, not null
    schema["minProperties"] = 1


class SessionMetadataUpdate(SparseWireModel):
    """A partial update. At least one of clientName, sessionName, date, sessionType, therapy, fileName or
    showSpeakers is needed; a body holding only the ignored keys leaves the session unchanged. Other keys are
    ignored."""

    model_config = ConfigDict(json_schema_extra=_at_least_one_field)

    client_name: Text | None = None
    session_name: Text | None = None
    date: IsoDate | None = None
    session_type: Text | None = None
    therapy: Text | None = None
    file_name: Text | None = Field(None, description="Display file name; sanitised by the server")
    show_speakers: bool | None = Field(None, description="Show (true) or hide (false) speaker labels; stored as 1/0")
    status: Any = Field(None, description=IGNORED)
    whisper_job_id: Any = Field(None, description=IGNORED)
    transcript_token_count: Any = Field(None, description=IGNORED)
    audio_path: Any = Field(None, description=IGNORED)


# The list reads only these columns: the rest (speaker names as JSON above all) would be read for nothing.
META_NAMES = tuple(SessionMeta.model_fields)
META_FIELDS = tuple(getattr(Session, name) for name in META_NAMES)
SESSION_LIST = TypeAdapter(list[SessionMeta])  # one validation call for the whole list
_LIST_SQL: dict[type, tuple[str, list]] = {}
EDITABLE = ("client_name", "session_name", "date", "session_type", "therapy", "file_name", "show_speakers")


class TranscriptionStatus(SpecWireModel):
    """A transcription job as the sessions client sees it."""

    job_id: str = Field(description="Job id")
    status: Literal["queued", "processing", "completed", "failed", "canceled"] = Field(
        description="Parley's state of a job")
    progress: float = Field(ge=0, le=100, description="Percent complete, one decimal")
    error: str | None = Field(description="Failure reason when status is failed")
    duration: float | None = Field(description="Audio duration in seconds, once known")
    message: str = Field(description="Progress message of the worker")


class TranscriptionNotFound(SpecWireModel):
    """404 body of GET /api/transcription/status/{job_id}; unlike Error it has no detail."""

    error: Literal["Not Found"]
    message: str = Field(json_schema_extra={"example": "Transcription job 0b5c... not found."})


SESSION_ID = {"session_id": ("Session id", ID_DIGITS)}
BAD_SESSION_ID = "Session id is not a non-negative integer"
UNKNOWN_SESSION = "Unknown session"
NOT_COMPLETED = "session is not completed"


# --- sessions -------------------------------------------------------------------------------------
@sessions_bp.get("/sessions")
@endpoint(tag="sessions", responses={200: (list[SessionMeta], "Sessions, newest date first (then highest id)")})
def list_sessions():
    """List sessions

    Also answers `/api/sessions/` (trailing slash) directly.
    """
    return SESSION_LIST.validate_python([dict(zip(META_NAMES, row)) for row in db.execute_sql(*_list_sql())])


def _list_sql() -> tuple[str, list]:
    # Clients poll the list: its SQL is built once per database engine, and the rows are validated in one call;
    # together that took a fifth off the request (1.9 -> 1.5 ms for 200 sessions, in-process, this 2-core CPU).
    dialect = type(db.obj)
    if dialect not in _LIST_SQL:
        _LIST_SQL[dialect] = Session.select(*META_FIELDS).order_by(Session.date.desc(), Session.id.desc()).sql()
    return _LIST_SQL[dialect]


@sessions_bp.post("/sessions/upload")
@endpoint(tag="sessions", form=SessionUploadForm, files={
    "audioFile": "The session's audio (or video). Its part content type must be one of the encoding's; a missing "
                 "file name becomes upload_<ms>.<subtype>"}, file_types=", ".join(sorted(AUDIO_CONTENT_TYPES)),
    responses={202: (SessionUploadAccepted, "Session created (status queued) and transcription queued"),
               400: "audioFile missing, of a content type not allowed, empty or not audio; a blank text field; a "
                    "date that is not a real YYYY-MM-DD date; a non-numeric numSpeakers",
               413: "Upload exceeds the size limit", 507: "Not enough disk space to store the upload; nothing was kept",
               503: "Job queue unavailable, no transcription worker running, or numSpeakers >= 2 and no running "
                    "worker can label speakers"})
def upload_session(form: SessionUploadForm):
    """Upload a session's audio with its metadata and queue its transcription

    The transcription uses the server's default model and detects the language. Follow progress with
    GET /api/sessions/{session_id} and, once whisperJobId is set, GET /api/transcription/status/{job_id}.
    """
    part = request.files.get("audioFile")
    if part is None:
        raise bad_request("audioFile is required: the multipart field with the session's audio")
    if part.mimetype not in AUDIO_CONTENT_TYPES:
        raise bad_request(f"audioFile has content type {part.mimetype or 'none'!r}; "
                          f"allowed: {', '.join(sorted(AUDIO_CONTENT_TYPES))}")
    fields = form.model_dump(include={"client_name", "session_name", "date", "session_type", "therapy"})
    speakers = speaker_count(form.num_speakers)
    diarize = speakers >= 2
    if not part.filename:
        subtype = part.mimetype.split("/", 1)[1].replace("x-", "")
        part.filename = f"upload_{now_ms()}.{subtype}"
    upload = receive_audio("audioFile")  # bad files are a 400 before readiness is even asked
    try:
        readiness_gate(diarize)
    except ApiError:
        upload.path.unlink(missing_ok=True)
        raise
    cfg = settings()
    session, _ = start_transcription(upload, model_name=cfg.default_model, language=None, diarize=diarize,
                                     num_speakers=speakers if diarize else None, session_fields=fields,
                                     owner_token_id=token_id())
    return SessionUploadAccepted(session_id=session.id, message="Upload successful, transcription queued."), 202


@sessions_bp.get("/sessions/<session_id>")
@endpoint(tag="sessions", path_parameters=SESSION_ID,
          responses={200: (SessionDetail, "The session"), 400: BAD_SESSION_ID, 404: UNKNOWN_SESSION})
def get_session(session_id: str):
    """A session with its chats"""
    session = session_or_404(session_id)
    chats = Chat.select().where(Chat.session == session.id).order_by(Chat.timestamp_ms.desc(), Chat.id.desc())
    return SessionDetail(**dict(SessionMeta.of(session)), chats=[SessionChatMeta.of(c) for c in chats],
                         known_voices=voice_labels.recognised(session.id))


@sessions_bp.put("/sessions/<session_id>/metadata")
@endpoint(tag="sessions", operation_id="update_session_metadata", path_parameters=SESSION_ID,
          json=SessionMetadataUpdate,
          responses={200: (SessionMeta, "The updated session (without chats)"),
                     400: f"{BAD_SESSION_ID}; body not a JSON object; nothing to update; a blank text field, a bad "
                          "date, or a showSpeakers that is not a boolean", 404: UNKNOWN_SESSION})
def update_metadata(session_id: str, json: SessionMetadataUpdate):
    """Change a session's metadata"""
    session = session_or_404(session_id)
    given = json.model_fields_set
    for name in given & set(EDITABLE):
        if getattr(json, name) is None:  # present but null: a value is needed, as for any edit
            kind = "true or false" if name == "show_speakers" else "a non-empty string"
            raise bad_request(f"{to_camel(name)} must be {kind}")
    changes = {name: getattr(json, name) for name in EDITABLE if name in given}
    if "file_name" in changes:
        changes["file_name"] = safe_display_name(changes["file_name"], "upload")
    if "show_speakers" in changes:
        changes["show_speakers"] = int(changes["show_speakers"])
    if not given:
        raise bad_request("nothing to update: give at least one of clientName, sessionName, date, sessionType, "
                          "therapy, fileName, showSpeakers")
    transcript_edits.update_details(session, changes)
    return SessionMeta.of(Session.get_by_id(session.id))


@sessions_bp.delete("/sessions/<session_id>")
@endpoint(tag="sessions", operation_id="delete_session", path_parameters=SESSION_ID,
          responses={200: (Confirmation, "Deleted"), 400: BAD_SESSION_ID, 404: UNKNOWN_SESSION})
def remove_session(session_id: str):
    """Delete a session, its audio, chats and transcript"""
    session = session_or_404(session_id)
    delete_session(session, settings().audio_dir)
    search.request_remove_session(session.id)
    return Confirmation(message=f"Session {session.id} and associated data deleted successfully.")


# --- audio ----------------------------------------------------------------------------------------
def audio_path_or_404(session: Session):
    if not session.audio_path:
        raise not_found(f"Session {session.id} has no audio file.")
    path = settings().audio_dir / session.audio_path
    if not path.is_file():
        raise not_found(f"The audio file of session {session.id} is missing.")
    return path


def _audio(description: str, *, partial: bool = False) -> Documented:
    headers = {"Accept-Ranges": header("Always bytes", string(enum=["bytes"])),
               "Content-Length": header("Bytes in this response", integer(minimum=0)),
               "ETag": header("Entity tag of the file, for If-None-Match / If-Range"),
               "Last-Modified": header("Modification time of the file")}
    if partial:
        headers["Content-Range"] = header("The part sent, e.g. bytes 0-1023/52311",
                                          string(example="bytes 0-1023/52311"))
    audio = {"schema": string("Audio bytes", format="binary")}
    return Documented(description, {"audio/*": audio, "application/octet-stream": audio}, headers=headers)


AUDIO_HEADERS = [
    {"name": "Range", "in": "header", "required": False, "description": "Byte range, e.g. bytes=0-1023 or bytes=1024-",
     "schema": {"type": "string", "pattern": "^bytes=", "example": "bytes=0-1023"}},
    {"name": "If-None-Match", "in": "header", "required": False, "description": "ETag of a cached copy; a match gives "
     "304", "schema": {"type": "string"}}]


@sessions_bp.get("/sessions/<session_id>/audio")
@endpoint(tag="sessions", operation_id="get_session_audio", path_parameters=SESSION_ID,
          header_parameters=AUDIO_HEADERS, responses={
              200: _audio("The whole file"), 206: _audio("The requested byte range", partial=True),
              304: Documented("Not modified (If-None-Match matched)", headers={"ETag": {
                  "description": "Entity tag", "schema": {"type": "string"}}}),
              400: BAD_SESSION_ID, 404: "Unknown session, the session has no audio, or its file is missing",
              416: Documented("Range not satisfiable", {"application/json": {"schema": {
                  "$ref": "#/components/schemas/Error"}}}, headers={"Content-Range": {
                      "description": "bytes */<size>", "schema": {"type": "string", "example": "bytes */52311"}}})})
def get_audio(session_id: str):
    """Stream the session's audio

    Content-Type follows the file extension: .mp3 audio/mpeg, .wav audio/wav, .ogg audio/ogg, .m4a audio/mp4,
    .aac audio/aac, .flac audio/flac, .webm audio/webm, anything else application/octet-stream. Supports Range
    requests for seeking.
    """
    session = session_or_404(session_id)
    path = audio_path_or_404(session)
    # Werkzeug serves Range requests (206, 416 with Content-Range) and streams the file in blocks. A Range
    # header it can't parse is ignored, as RFC 9110 (14.2) asks: the whole file, 200; Werkzeug would say 416.
    if "HTTP_RANGE" in request.environ and parse_range_header(request.environ["HTTP_RANGE"]) is None:
        del request.environ["HTTP_RANGE"]
    response = send_file(path, mimetype=AUDIO_MIMETYPES.get(path.suffix.lower(), "application/octet-stream"),
                         conditional=True, etag=True, max_age=0)
    response.headers["Accept-Ranges"] = "bytes"
    return response


@sessions_bp.delete("/sessions/<session_id>/audio")
@endpoint(tag="sessions", operation_id="delete_session_audio", path_parameters=SESSION_ID,
          responses={200: (Confirmation, "Deleted; the session's audioPath is now null"), 400: BAD_SESSION_ID,
                     404: "Unknown session, or the session has no audio"})
def delete_audio(session_id: str):
    """Delete the session's original audio"""
    session = session_or_404(session_id)
    transcript_edits.delete_audio(session, settings().audio_dir)
    return Confirmation(message=f"Original audio file for session {session.id} deleted successfully.")


# --- transcription status, the sessions client's view of a job --------------------------------------
@sessions_bp.get("/transcription/status/<job_id>")
@endpoint(tag="sessions", path_parameters={"job_id": "A session's whisperJobId"},
          responses={200: (TranscriptionStatus, "Job progress"), 404: (TranscriptionNotFound, "Unknown job")})
def transcription_status(job_id: str):
    """Progress of a session's transcription job"""
    job = Job.get_or_none(Job.id == job_id)
    if job is None:
        return TranscriptionNotFound(error="Not Found", message=f"Transcription job {job_id} not found."), 404
    return TranscriptionStatus(job_id=job.id, status=job.status, progress=round(job.progress, 1), error=job.error,
                               duration=job.audio_duration, message=job.message)
