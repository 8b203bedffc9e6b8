"""Known voices in transcripts: naming a new session's speakers after its owner's profiles, and re-labelling
sessions already transcribed from their kept voiceprints (`parley voices apply`, and `--undo`)."""
from __future__ import annotations

import dataclasses

import numpy as np

from models import Job, Paragraph, Segment, Session, SessionVoice, db
from parley.config import get_settings
from services import search
from services.sessions import refresh_token_count
from services.voices import Match, assign, profile_centroids, stored


def owner_of(session_id: int) -> int | None:
    """The API token a session's transcription was asked for by (its first job's `owner_token_id`), or None."""
    for (params,) in Job.select(Job.params).where(Job.session == session_id).order_by(Job.created_at_ms).tuples():
        owner = (params or {}).get("owner_token_id")
        if owner is not None:
            return int(owner)
    return None


def recognise(session_id: int | None, voices: dict[str, tuple[np.ndarray, float]],
              contrasts: dict[str, float | None]) -> dict[str, Match]:
    """Which of a finished transcription's speakers ({label: (voiceprint, voiced_s)}, with their split contrasts)
    are its owner's known voices; nothing where PARLEY_VOICE_RECOGNITION is off or the job has no session."""
    if session_id is None or not get_settings().voice_recognition or not voices:
        return {}
    return assign(voices, profile_centroids(owner_of(session_id)), contrasts=contrasts)


def keep(session_id: int | None, voices: dict[str, tuple[np.ndarray, float]], contrasts: dict[str, float | None],
         matches: dict[str, Match]) -> None:
    """Keep a session's speakers' voiceprints and what named them, replacing an earlier transcription's (whose
    labels no longer fit); call in the transaction that stores the labelled transcript. Where recognition is
    off, the earlier ones go and nothing is kept."""
    if session_id is None:
        return
    SessionVoice.delete().where(SessionVoice.session == session_id).execute()
    if not get_settings().voice_recognition:
        return
    for label, (vector, voiced_s) in sorted(voices.items()):
        match = matches.get(label)
        SessionVoice.create(session=session_id, label=label, vector=stored(vector), voiced_s=round(voiced_s, 3),
                            profile=match.profile_id if match else None,
                            similarity=round(match.similarity, 4) if match else None,
                            shown=match.name if match else None,
                            voice_contrast=None if contrasts.get(label) is None else round(contrasts[label], 4))


def recognised(session_id: int | None) -> list[dict]:
    """The session's speakers that known voices name now: [{speaker, profile_id, similarity}] (profile_id is
    None where the profile was deleted since), as the live `speakers` message carries them."""
    if session_id is None:
        return []
    rows = SessionVoice.select().where((SessionVoice.session == session_id) & SessionVoice.shown.is_null(False))
    return [{"speaker": v.shown, "profile_id": v.profile_id, "similarity": v.similarity}
            for v in sorted(rows, key=lambda v: v.shown)]


@dataclasses.dataclass(frozen=True)
class Relabelled:
    """What applying known voices changed in one session."""

    session_id: int
    changes: dict[str, str]  # label shown before -> label shown now
    left_alone: dict[str, str]  # label diarization gave -> the name a user typed for it by hand


def sessions_with_voices() -> list[int]:
    return [s for (s,) in SessionVoice.select(SessionVoice.session).distinct().order_by(SessionVoice.session).tuples()]


def apply(*, session_ids: list[int] | None = None, undo: bool = False) -> list[Relabelled]:
    """Name the speakers of transcribed sessions after the known voices as they are now, without transcribing
    again (`undo`: put back the labels diarization gave where a known voice had named a speaker).

    A speaker the user renamed by hand keeps that name. A speaker named by a profile that was deleted keeps
    the name until `undo`. Only sessions with kept voiceprints change; returns what changed in each.
    """
    out = []
    for session_id in session_ids if session_ids is not None else sessions_with_voices():
        session = Session.get_or_none(Session.id == session_id)
        if session is not None:
            out.append(_apply_session(session, undo=undo))
    return out


def _apply_session(session: Session, *, undo: bool) -> Relabelled:
    voices = list(SessionVoice.select().where(SessionVoice.session == session.id).order_by(SessionVoice.label))
    matches = {} if undo else assign({v.label: (np.asarray(v.vector), v.voiced_s) for v in voices},
                                     profile_centroids(owner_of(session.id)),
                                     contrasts={v.label: v.voice_contrast for v in voices})
    renames = session.speaker_names or {}
    present = {s for (s,) in Paragraph.select(Paragraph.speaker).where(
        (Paragraph.session == session.id) & (Paragraph.deleted == False)).distinct().tuples()}  # noqa: E712
    by_hand, updates, mapping = {}, [], {}
    for voice in voices:
        now = voice.shown or voice.label
        typed = [renames[name] for name in (now, voice.label) if renames.get(name, name) != name]
        if typed:
            by_hand[voice.label] = typed[0]
            continue
        match = matches.get(voice.label)
        if match is None and not undo and voice.shown is not None and voice.profile_id is None:
            continue  # named by a profile since deleted: only --undo takes the name away
        updates.append((voice, match))
        new = match.name if match else voice.label
        if new != now:
            mapping[now] = (new, voice.similarity, match.similarity if match else None)
    # A new name must not merge two speakers: skip it where another speaker, not moving, shows it already.
    for now, (new, _, _) in list(mapping.items()):
        if new in present and new not in mapping:
            del mapping[now]
            updates = [(v, m) for v, m in updates if (v.shown or v.label) != now]
    with db.atomic():
        for voice, match in updates:
            voice.profile = match.profile_id if match else None
            voice.similarity = round(match.similarity, 4) if match else None
            voice.shown = match.name if match else None
            voice.save(only=[SessionVoice.profile, SessionVoice.similarity, SessionVoice.shown])
        if mapping:
            _relabel(session, mapping)
    if mapping:
        search.request_index_session(session.id)
    return Relabelled(session.id, {old: new for old, (new, _, _) in mapping.items()}, by_hand)


def _relabel(session: Session, mapping: dict[str, tuple[str, float | None, float | None]]) -> None:
    """Rewrite labels in the session's paragraphs and its transcription's segments (their words too); a
    segment's speaker confidence carries the new similarity in place of the old."""
    for paragraph in Paragraph.select().where((Paragraph.session == session.id) & Paragraph.speaker.in_(list(mapping))):
        paragraph.speaker = mapping[paragraph.speaker][0]
        paragraph.save(only=[Paragraph.speaker])
    names = {old: new for old, (new, _, _) in mapping.items()}
    for segment in Segment.select().where(Segment.job == session.whisper_job_id):
        words = [dict(w, speaker=names.get(w.get("speaker"), w.get("speaker")),
                      **({"overlap": [names.get(o, o) for o in w["overlap"]]} if w.get("overlap") else {}))
                 for w in segment.words or []]
        if segment.speaker not in mapping and words == (segment.words or []):
            continue
        if segment.speaker in mapping and segment.speaker_confidence is not None:
            _, before, after = mapping[segment.speaker]
            factor = max(0.0, after or 1.0) / (before or 1.0)
            segment.speaker_confidence = min(1.0, segment.speaker_confidence * factor)
        segment.speaker = names.get(segment.speaker, segment.speaker)
        segment.words = words
        segment.save(only=[Segment.speaker, Segment.speaker_confidence, Segment.words])
    refresh_token_count(session)
