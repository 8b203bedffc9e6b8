"""The sessions API: upload with metadata, transcripts and their edits, speakers, audio, exports."""
from __future__ import annotations

import datetime
import math
import re

import redis
from flask import Blueprint, Response, current_app, jsonify, request, send_file
from werkzeug.http import parse_range_header

from jobs.heartbeats import alive_workers
from models import Chat, Job, Paragraph, Session, db
from models.statuses import SessionStatus
from parley import formats
from parley.timestamps import now_ms
from services import search, transcript_edits
from services.queue import QueueUnavailable
from services.sessions import delete_session, live_paragraphs
from services.transcriptions import start_transcription
from web.context import settings
from web.errors import ApiError, bad_request, not_found
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
EXPORT_FORMATS = {"srt", "vtt", "txt", "docx", "json"}
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
TEXT_FIELDS = {"clientName": "client_name", "sessionName": "session_name", "sessionType": "session_type",
               "therapy": "therapy"}
IGNORED_FIELDS = {"status", "whisperJobId", "transcriptTokenCount", "audioPath"}


# --- shapes ---------------------------------------------------------------------------------------
# The client's session shape: (column, wire name) in the order the list query selects them.
META = ((Session.id, "id"), (Session.file_name, "fileName"), (Session.client_name, "clientName"),
        (Session.session_name, "sessionName"), (Session.date, "date"), (Session.session_type, "sessionType"),
        (Session.therapy, "therapy"), (Session.audio_path, "audioPath"), (Session.status, "status"),
        (Session.whisper_job_id, "whisperJobId"), (Session.transcript_token_count, "transcriptTokenCount"),
        (Session.duration, "duration"), (Session.error_message, "errorMessage"),
        (Session.show_speakers, "showSpeakers"))
META_FIELDS = tuple(column for column, _ in META)
META_KEYS = tuple(key for _, key in META)


def session_meta(s: Session) -> dict:
    return {key: getattr(s, column.name) for column, key in META}


def session_chat_meta(c: Chat) -> dict:
    return {"id": c.id, "sessionId": c.session_id, "timestamp": c.timestamp_ms, "name": c.name}


def paragraph_dict(p: Paragraph) -> dict:
    out = {"id": p.idx, "timestamp": p.start_ms, "text": p.text}
    if p.speaker:
        out["speaker"] = p.speaker
    return out


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


def json_body(kind: type, what: str):
    body = request.get_json(silent=True)
    if not isinstance(body, kind):
        raise bad_request(f"the body must be a JSON {what}")
    return body


def nonblank(value, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise bad_request(f"{name} must be a non-empty string")
    return value.strip()


def iso_date(value, name: str = "date") -> str:
    if not isinstance(value, str) or not DATE.match(value):
        raise bad_request(f"{name} must be a date as YYYY-MM-DD, got {value!r}")
    try:
        datetime.date.fromisoformat(value)
    except ValueError:
        raise bad_request(f"{name} {value!r} is not a real date") from None
    return f"{value}T12:00:00.000Z"  # noon UTC, so the date does not shift in any time zone


def num_speakers(value) -> int:
    """Rounded and clamped to 0..10, default 0; 0 and 1 mean "do not label speakers"."""
    if value is None or str(value).strip() == "":
        return 0
    try:
        number = float(value)
    except ValueError:
        raise bad_request(f"numSpeakers must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise bad_request(f"numSpeakers must be a finite number, got {value!r}")
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


# --- sessions -------------------------------------------------------------------------------------
@sessions_bp.get("/sessions")
def list_sessions():
    # Only the listed columns: the rest (speaker names as JSON above all) would be read and decoded for nothing.
    # Raw rows, not model instances: every listed column is text or an integer, which needs no conversion,
    # and building 200 instances cost more than the query itself.
    query = Session.select(*META_FIELDS).order_by(Session.date.desc(), Session.id.desc())
    return jsonify([dict(zip(META_KEYS, row)) for row in db.execute(query)])


@sessions_bp.post("/sessions/upload")
def upload_session():
    form = request.form
    part = request.files.get("audioFile")
    if part is None:
        raise bad_request("audioFile is required: the multipart field with the session's audio")
    if part.mimetype not in AUDIO_CONTENT_TYPES:
        raise bad_request(f"audioFile has content type {part.mimetype or 'none'!r}; "
                          f"allowed: {', '.join(sorted(AUDIO_CONTENT_TYPES))}")
    fields = {column: nonblank(form.get(key), key) for key, column in TEXT_FIELDS.items()}
    fields["date"] = iso_date(form.get("date"))
    speakers = num_speakers(form.get("numSpeakers"))
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
                                     num_speakers=speakers if diarize else None, session_fields=fields)
    return jsonify(sessionId=session.id, message="Upload successful, transcription queued."), 202


@sessions_bp.get("/sessions/<session_id>")
def get_session(session_id: str):
    session = session_or_404(session_id)
    chats = Chat.select().where(Chat.session == session.id).order_by(Chat.timestamp_ms.desc(), Chat.id.desc())
    return jsonify({**session_meta(session), "chats": [session_chat_meta(c) for c in chats]})


@sessions_bp.put("/sessions/<session_id>/metadata")
def update_metadata(session_id: str):
    session = session_or_404(session_id)
    body = json_body(dict, "object")
    changes = {}
    for key, column in TEXT_FIELDS.items():
        if key in body:
            changes[column] = nonblank(body[key], key)
    if "date" in body:
        changes["date"] = iso_date(body["date"])
    if "fileName" in body:
        changes["file_name"] = safe_display_name(nonblank(body["fileName"], "fileName"), "upload")
    if "showSpeakers" in body:
        if not isinstance(body["showSpeakers"], bool):
            raise bad_request("showSpeakers must be true or false")
        changes["show_speakers"] = int(body["showSpeakers"])
    if not changes and not (IGNORED_FIELDS & set(body)):
        raise bad_request("nothing to update: give at least one of clientName, sessionName, date, sessionType, "
                          "therapy, fileName, showSpeakers")
    transcript_edits.update_details(session, changes)
    return jsonify(session_meta(Session.get_by_id(session.id)))


@sessions_bp.delete("/sessions/<session_id>")
def remove_session(session_id: str):
    session = session_or_404(session_id)
    delete_session(session, settings().audio_dir)
    search.request_remove_session(session.id)
    return jsonify(message=f"Session {session.id} and associated data deleted successfully.")


# --- transcript -----------------------------------------------------------------------------------
def transcript_response(session: Session):
    return jsonify([paragraph_dict(p) for p in live_paragraphs(session.id)])


@sessions_bp.get("/sessions/<session_id>/transcript")
def get_transcript(session_id: str):
    session = session_or_404(session_id)
    fmt = request.args.get("format")
    if fmt is None:
        if session.status != SessionStatus.COMPLETED:
            return jsonify([])
        return transcript_response(session)
    if fmt not in EXPORT_FORMATS:
        raise bad_request(f"format must be one of {', '.join(sorted(EXPORT_FORMATS))}")
    if session.status != SessionStatus.COMPLETED:
        raise ApiError(409, f"Session {session.id} is {session.status}; its transcript can be exported once completed.")
    return export(session, fmt)


def export(session: Session, fmt: str) -> Response:
    rows = [{"id": p.idx, "start": p.start_ms / 1000, "end": p.end_ms / 1000, "speaker": p.speaker, "text": p.text}
            for p in live_paragraphs(session.id)]
    stem = safe_display_name(session.session_name or session.file_name, f"session-{session.id}")
    headers = {"Content-Disposition": f'attachment; filename="{stem}.{fmt}"'}
    if fmt == "json":
        return Response(current_app.json.dumps({"session": session_meta(session), "paragraphs": rows}),
                        mimetype="application/json", headers=headers)
    if fmt == "docx":
        details = " · ".join(filter(None, [session.client_name, session.date[:10], session.session_type, session.therapy]))
        # Word's XML cannot hold control characters, which stored text may contain (an edit, an import).
        rows = [{**r, "text": _xml_safe(r["text"]), "speaker": _xml_safe(r["speaker"])} for r in rows]
        title = _xml_safe(session.session_name or session.file_name)
        return Response(formats.to_docx(rows, title=title, details=_xml_safe(details)),
                        mimetype="application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                        headers=headers)
    render = {"srt": formats.to_srt, "vtt": formats.to_vtt, "txt": formats.to_txt}[fmt]
    return Response(render(rows), mimetype="text/vtt" if fmt == "vtt" else "text/plain", headers=headers)


_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml_safe(text: str | None) -> str | None:
    return _NOT_XML.sub("", text) if text else text


def paragraph_or_error(session: Session, index: int, *, status: int) -> Paragraph:
    paragraph = transcript_edits.live_paragraph(session, index)
    if paragraph is None:
        raise ApiError(status, f"Paragraph {index} not found in session {session.id}.")
    return paragraph


@sessions_bp.patch("/sessions/<session_id>/transcript")
def edit_paragraph(session_id: str):
    session = session_or_404(session_id)
    body = json_body(dict, "object with paragraphIndex and newText")
    index = body.get("paragraphIndex")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < 2 ** 63:  # the database's range
        raise bad_request("paragraphIndex must be an integer from 0 to 2^63-1")
    text = nonblank(body.get("newText"), "newText")
    transcript_edits.require_completed(session)
    transcript_edits.edit_text(session, paragraph_or_error(session, index, status=400), text)
    return transcript_response(session)


@sessions_bp.delete("/sessions/<session_id>/transcript/<paragraph_index>")
def delete_paragraph(session_id: str, paragraph_index: str):
    index = numeric_id(paragraph_index, "paragraphIndex")  # a malformed id is a 400 before any lookup
    session = session_or_404(session_id)
    transcript_edits.require_completed(session)
    transcript_edits.delete_paragraph(session, paragraph_or_error(session, index, status=404))
    return transcript_response(session)


@sessions_bp.patch("/sessions/<session_id>/transcript/<paragraph_index>/speaker")
def set_paragraph_speaker(session_id: str, paragraph_index: str):
    index = numeric_id(paragraph_index, "paragraphIndex")
    session = session_or_404(session_id)
    speaker = nonblank(json_body(dict, "object with speaker").get("speaker"), "speaker")
    transcript_edits.require_completed(session)
    transcript_edits.set_speaker(session, paragraph_or_error(session, index, status=400), speaker)
    return jsonify(message=f"Speaker updated for paragraph {index} in session {session.id}.")


@sessions_bp.patch("/sessions/<session_id>/speakers")
def rename_speakers(session_id: str):
    session = session_or_404(session_id)
    body = json_body(list, "array of {from, to}")
    pairs = []
    for n, item in enumerate(body):
        if not isinstance(item, dict):
            raise bad_request(f"entry {n} must be an object with from and to")
        pairs.append((nonblank(item.get("from"), f"entry {n} from"), nonblank(item.get("to"), f"entry {n} to")))
    if not transcript_edits.rename_speakers(session, pairs):
        return jsonify(message="No changes needed.")
    return jsonify(message=f"Speaker labels updated for session {session.id}.")


# --- audio ----------------------------------------------------------------------------------------
def audio_path_or_404(session: Session):
    if not session.audio_path:
        raise not_found(f"Session {session.id} has no audio file.")
    path = settings().audio_dir / session.audio_path
    if not path.is_file():
        raise not_found(f"The audio file of session {session.id} is missing.")
    return path


@sessions_bp.get("/sessions/<session_id>/audio")
def get_audio(session_id: str):
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
def delete_audio(session_id: str):
    session = session_or_404(session_id)
    transcript_edits.delete_audio(session, settings().audio_dir)
    return jsonify(message=f"Original audio file for session {session.id} deleted successfully.")


# --- transcription status, the sessions client's view of a job --------------------------------------
@sessions_bp.get("/transcription/status/<job_id>")
def transcription_status(job_id: str):
    job = Job.get_or_none(Job.id == job_id)
    if job is None:
        return jsonify(error="Not Found", message=f"Transcription job {job_id} not found."), 404
    return jsonify(job_id=job.id, status=job.status, progress=round(job.progress, 1), error=job.error,
                   duration=job.audio_duration, message=job.message)
