"""Starting a transcription, for both APIs: the session, its job and first event stored together, then the job sent."""
from __future__ import annotations

import dataclasses
import datetime
import uuid
from pathlib import Path

from models import Job, Session, db
from models.statuses import SessionStatus
from services import events
from services.queue import send_job


@dataclasses.dataclass(frozen=True)
class StoredAudio:
    """A recording stored in the audio directory under a generated name (the web tier's upload, once checked)."""

    path: Path  # final location
    stored_name: str  # generated name inside the audio directory
    original_name: str  # sanitised client file name, for display only
    sha256: str
    size: int


# A job of the transcription API is a session of the sessions app too (one store, one search). The
# sessions contract requires these fields to be non-empty; the values say where the session came from,
# and the user can edit them there like any other session's.
TRANSCRIPTION_API_SESSION = {"client_name": "Transcription API", "session_type": "Transcription API",
                             "therapy": "N/A"}


def today_noon_utc() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT12:00:00.000Z")


def start_transcription(upload: StoredAudio, *, model_name: str, language: str | None, diarize: bool,
                        num_speakers: int | None, session_fields: dict,
                        owner_token_id: int | None = None) -> tuple[Session, Job]:
    """Create the session and its job, log the first event and send the job; nothing is left if any step fails
    (QueueUnavailable when Redis does not take the message).

    owner_token_id: the API token that asked for it (None without tokens): its speakers are compared with that
    token's voice profiles only (services.voice_labels)."""
    try:
        with db.atomic():
            session = Session.create(
                file_name=upload.original_name, audio_path=upload.stored_name, audio_sha256=upload.sha256,
                audio_bytes=upload.size, status=SessionStatus.QUEUED, num_speakers=num_speakers if diarize else None,
                **session_fields,
            )
            job = Job.create(
                id=str(uuid.uuid4()), session=session, kind="transcribe", model_name=model_name, language=language,
                diarize=diarize, num_speakers=num_speakers, audio_path=upload.stored_name,
                audio_sha256=upload.sha256, message="Queued for transcription",
                params={} if owner_token_id is None else {"owner_token_id": owner_token_id},
            )
            session.whisper_job_id = job.id
            session.save(only=[Session.whisper_job_id])
            first = events.record(job.id, "status", events.status_payload(job))
    except Exception:
        upload.path.unlink(missing_ok=True)  # the database refused (locked, full): keep no orphan recording
        raise

    def undo():
        with db.atomic():
            Job.delete().where(Job.id == job.id).execute()
            Session.delete().where(Session.id == session.id).execute()
        upload.path.unlink(missing_ok=True)

    send_job("transcribe", job.id, undo=undo)
    events.publish(first)
    return session, job
