"""Session transcripts: paragraphs from segments, finishing a transcription, keeping edits, deleting."""
from __future__ import annotations

import logging
from pathlib import Path

from models import Chat, Job, Message, Paragraph, Segment, Session, db
from models.statuses import ACTIVE_JOB, SessionStatus
from parley.errors import Conflict
from parley.timestamps import now_ms
from services.tokens import count_tokens

log = logging.getLogger(__name__)

PARAGRAPH_GAP_S = 2.0  # unlabelled speech is split into paragraphs at pauses this long
PARAGRAPH_MAX_CHARS = 600  # ... or when a paragraph grows this long


def build_paragraphs(segments: list[dict]) -> list[dict]:
    """Consecutive segments of one speaker become one paragraph.

    Without speaker labels every segment has the same (empty) speaker, so pauses and length decide
    where a paragraph ends instead.
    """
    paragraphs: list[dict] = []
    for seg in segments:
        text = seg["text"].strip()
        if not text:
            continue
        last = paragraphs[-1] if paragraphs else None
        same_speaker = last is not None and last["speaker"] == seg.get("speaker")
        if same_speaker and seg.get("speaker") is None:
            same_speaker = (seg["start"] - last["end"] < PARAGRAPH_GAP_S
                            and len(last["text"]) + len(text) < PARAGRAPH_MAX_CHARS)
        if same_speaker:
            last["text"] += " " + text
            last["end"] = seg["end"]
        else:
            paragraphs.append({"start": seg["start"], "end": seg["end"], "text": text, "speaker": seg.get("speaker")})
    return paragraphs


def transcript_text(session_id: int, *, with_speakers: bool = True) -> str:
    rows = live_paragraphs(session_id)
    return "\n".join(f"{p.speaker}: {p.text}" if with_speakers and p.speaker else p.text for p in rows)


def live_paragraphs(session_id: int) -> list[Paragraph]:
    return list(Paragraph.select().where((Paragraph.session == session_id) & (Paragraph.deleted == False))  # noqa: E712
                .order_by(Paragraph.idx))


def refresh_token_count(session: Session) -> None:
    from services.tokens import active_model_path

    session.transcript_token_count = count_tokens(transcript_text(session.id), gguf=active_model_path())
    session.save(only=[Session.transcript_token_count])


def _overlaps(a_start: int, a_end: int, b_start: int, b_end: int) -> bool:
    """True when more than half of a lies inside b."""
    inside = min(a_end, b_end) - max(a_start, b_start)
    return inside > 0.5 * max(a_end - a_start, 1)


def finish_transcription(job: Job) -> None:
    """Turn a completed job's segments into the session's transcript; call inside the job's transaction.

    With `keep_edits` in the job's params (a re-transcription), speaker renames are applied to the new
    labels, and paragraphs the user edited or deleted stay as they were, replacing the new paragraphs
    they overlap. Otherwise the new transcript replaces the old one whole.
    """
    session = Session.get_by_id(job.session_id)
    segments = [s.as_dict() for s in Segment.select().where(Segment.job == job.id).order_by(Segment.idx)]
    fresh = build_paragraphs(segments)
    keep_edits = bool(job.params.get("keep_edits"))
    names = (session.speaker_names or {}) if keep_edits else {}
    rows = [{"start_ms": int(round(p["start"] * 1000)), "end_ms": int(round(p["end"] * 1000)), "text": p["text"],
             "speaker": names.get(p["speaker"], p["speaker"]), "edited": False, "deleted": False} for p in fresh]
    if keep_edits:
        kept = [{f: getattr(p, f) for f in ("start_ms", "end_ms", "text", "speaker", "edited", "deleted")}
                for p in Paragraph.select().where((Paragraph.session == session.id)
                                                  & ((Paragraph.edited == True) | (Paragraph.deleted == True)))]  # noqa: E712
        rows = [r for r in rows if not any(_overlaps(r["start_ms"], r["end_ms"], k["start_ms"], k["end_ms"]) for k in kept)]
        rows = sorted(rows + kept, key=lambda r: (r["start_ms"], r["end_ms"]))
    Paragraph.delete().where(Paragraph.session == session.id).execute()
    for idx, row in enumerate(rows):
        Paragraph.create(session=session.id, idx=idx, **row)
    session.status = "completed"
    session.error_message = None
    session.speaker_names = names
    if job.audio_duration is not None:
        session.duration = int(round(job.audio_duration))
    session.save(only=[Session.status, Session.error_message, Session.speaker_names, Session.duration])
    refresh_token_count(session)
    if not Chat.select().where(Chat.session == session.id).exists():
        chat = Chat.create(session=session.id, timestamp_ms=now_ms(), name=None)
        title = session.session_name or session.file_name
        Message.create(chat=chat, sender="ai", timestamp_ms=now_ms(),
                       text=f'Session "{title}" has been transcribed and is ready for analysis.')


def delete_session(session: Session, audio_dir: Path) -> None:
    """Delete the session and everything attached to it; files go only once the rows are gone."""
    files = {session.audio_path} | {j.audio_path for j in Job.select(Job.audio_path).where(Job.session == session.id)}
    with db.atomic():
        session.delete_instance(recursive=False)  # ON DELETE CASCADE takes jobs, segments, events, paragraphs, chats
    for name in filter(None, files):
        try:
            (audio_dir / name).unlink(missing_ok=True)
        except OSError as exc:  # the rows are gone; a leftover file is logged for the operator
            log.warning("could not remove %s: %s", name, exc)


class SessionBusy(Conflict):
    """The session cannot be re-transcribed now; the message says why."""


def create_retranscription(session: Session, *, model_name: str | None, num_speakers: int | None,
                           keep_edits: bool) -> Job:
    """A queued job that transcribes the session's audio again; the caller enqueues or runs it.

    num_speakers: None keeps the session's setting; 0 or 1 means no speaker labels.
    """
    import uuid

    from services import events

    if not session.audio_path:
        raise SessionBusy(f"session {session.id} has no audio left to transcribe")
    active = Job.select().where((Job.session == session.id) & (Job.status.in_(ACTIVE_JOB))).first()
    if active is not None:
        raise SessionBusy(f"session {session.id} is already being transcribed by job {active.id}")
    previous = Job.select().where(Job.session == session.id).order_by(Job.created_at_ms.desc()).first()
    speakers = session.num_speakers if num_speakers is None else num_speakers
    diarize = bool(speakers and speakers >= 2) if num_speakers is not None or previous is None else previous.diarize
    with db.atomic():
        job = Job.create(
            id=str(uuid.uuid4()), session=session.id, kind="transcribe",
            model_name=model_name or (previous.model_name if previous else "tiny.en"),
            language=previous.language if previous else None, diarize=diarize,
            num_speakers=speakers if speakers and speakers >= 2 else None,
            audio_path=session.audio_path, audio_sha256=session.audio_sha256,
            params={"keep_edits": keep_edits, "retranscription": True}, message="Queued for re-transcription",
        )
        Session.update(status=SessionStatus.QUEUED, whisper_job_id=job.id, error_message=None,
                       num_speakers=job.num_speakers).where(Session.id == session.id).execute()
        events.record(job.id, "status", events.status_payload(job))
    return job
