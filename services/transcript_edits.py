"""Editing a session by hand: its details, paragraph text and speakers, speaker renames, and its audio.

Each use case changes the database in one transaction, keeps the session's token count true, and asks
the search index to follow. Web handlers (web/sessions.py) parse the request and shape the answer.
"""
from __future__ import annotations

from pathlib import Path

from models import Paragraph, Session, db
from models.statuses import SessionStatus
from parley.errors import InvalidInput, NotFound
from services import search
from services.sessions import refresh_token_count


def require_completed(session: Session) -> None:
    """A transcript is edited only once its transcription is complete (the worker would overwrite it)."""
    if session.status != SessionStatus.COMPLETED:
        raise InvalidInput(f"Session {session.id} is {session.status}; its transcript can be edited once completed.")


def live_paragraph(session: Session, index: int) -> Paragraph | None:
    """The paragraph at `index`, unless it was deleted."""
    return Paragraph.get_or_none((Paragraph.session == session.id) & (Paragraph.idx == index)
                                 & (Paragraph.deleted == False))  # noqa: E712


def update_details(session: Session, changes: dict) -> None:
    """Set the given columns (client name, session name, date, ...) and reindex the session."""
    if changes:
        Session.update(**changes).where(Session.id == session.id).execute()
        search.request_index_session(session.id)


def edit_text(session: Session, paragraph: Paragraph, text: str) -> None:
    """Replace a paragraph's words; it is marked edited, so a re-transcription keeps it."""
    require_completed(session)
    if paragraph.text == text:
        return
    with db.atomic():
        paragraph.text, paragraph.edited = text, True
        paragraph.save(only=[Paragraph.text, Paragraph.edited])
        refresh_token_count(session)
    search.request_index_session(session.id)


def delete_paragraph(session: Session, paragraph: Paragraph) -> None:
    """Delete a paragraph's words, leaving a tombstone: its index stays taken and its span stays deleted."""
    require_completed(session)
    with db.atomic():
        paragraph.text, paragraph.deleted = "", True
        paragraph.save(only=[Paragraph.text, Paragraph.deleted])
        refresh_token_count(session)
    search.request_index_session(session.id)


def set_speaker(session: Session, paragraph: Paragraph, speaker: str) -> None:
    """Give one paragraph another speaker."""
    require_completed(session)
    with db.atomic():
        paragraph.speaker, paragraph.edited = speaker, True
        paragraph.save(only=[Paragraph.speaker, Paragraph.edited])
        refresh_token_count(session)
    search.request_index_session(session.id)


def rename_speakers(session: Session, pairs: list[tuple[str, str]]) -> int:
    """Rename speakers (old label -> new) in every live paragraph; returns how many paragraphs changed.

    The rename is also remembered against the label the engine gave (Session.speaker_names), so a later
    re-transcription that keeps edits shows the user's names.
    """
    changed = 0
    with db.atomic():
        names = dict(session.speaker_names or {})
        for old, new in pairs:
            if old == new:
                continue
            changed += Paragraph.update(speaker=new).where(
                (Paragraph.session == session.id) & (Paragraph.speaker == old)
                & (Paragraph.deleted == False)).execute()  # noqa: E712
            originals = [label for label, shown in names.items() if shown == old] or [old]
            for label in originals:
                names[label] = new
        if changed:
            session.speaker_names = names
            session.save(only=[Session.speaker_names])
            refresh_token_count(session)
    if changed:
        search.request_index_session(session.id)
    return changed


def delete_audio(session: Session, audio_dir: Path) -> None:
    """Forget and remove a session's original audio; the transcript stays."""
    if not session.audio_path:
        raise NotFound(f"Session {session.id} has no audio file.")
    path = Path(audio_dir) / session.audio_path
    Session.update(audio_path=None).where(Session.id == session.id).execute()
    path.unlink(missing_ok=True)
