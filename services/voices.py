"""Known voices: voice profiles made from a session's speaker, and matching speakers' voiceprints to them.

A voiceprint is biometric data: it is stored in the database only (never logged, never sent anywhere), kept
for a session's speakers so a profile can be made from one later, and copied into a profile only when a
user names that speaker (the opt-in). Recognition (services/voice_labels.py) names a new session's speakers
after the owner's profiles.
"""
from __future__ import annotations

import dataclasses
import re

import numpy as np

from models import Paragraph, Session, SessionVoice, VoiceProfile, VoiceSample, db
from models.statuses import SessionStatus
from parley.errors import Conflict, InvalidInput, NotFound

# Calibrated by scripts/bench/voices.py on real recordings (several recordings of each of nine council members,
# AMI meeting participants and others; split by SPEAKER, chosen on the 'tune' speakers, scored on the held-out
# 'test' speakers). A speaker is named after a profile when the cosine between its voiceprint and the profile's
# centroid is at least RECOGNITION_SIMILARITY, and only when at least MIN_RECOGNITION_SPEECH_S seconds of solo
# speech stand behind its voiceprint. On tune, false accepts were at most 1% for every threshold from 0.39 to
# 0.61 in every condition (one or two enrolment recordings, full or shortest voiceprints): 0.50 is the middle;
# 10 s gave the fewest false rejects. Held-out test: false rejects 0/42; false accepts 8/474 (1.7%), every one a
# speaker in whom diarization had merged two similar voices, which no threshold under 0.80 removes: hence
# MERGE_CONTRAST below.
RECOGNITION_SIMILARITY = 0.50
MIN_RECOGNITION_SPEECH_S = 10.0

# A speaker whose pieces of solo speech split into two groups this clearly (workers/voiceprints.py
# `split_contrast`) holds two voices: it is never named, and no profile is made from it. Chosen by
# scripts/bench/voices_guard.py on the TUNE speakers only: the lowest cut-off (0.01 steps) above every tune
# speaker that is one person's (at least 80% of its speech one person's, >= 10 s: max 0.19, n=16); merges of two
# tune speakers made on purpose score at least 0.48 (n=393). Held-out test: the merged speakers score 0.30-0.37,
# one-person speakers at most 0.17 (n=16); false accepts 0/474 with the guard (8/474 without).
MERGE_CONTRAST = 0.20

NAME_MAX = 200
# Diarization's own labels; a profile named like one could not be told apart from an unnamed speaker.
ENGINE_LABEL = re.compile(r"SPEAKER_\d+")


class UnknownVoiceProfile(NotFound):
    """No voice profile with that id belongs to the caller."""


@dataclasses.dataclass(frozen=True)
class Match:
    """A speaker recognised as a known voice."""

    profile_id: int
    name: str
    similarity: float  # cosine between the speaker's voiceprint and the profile's centroid


@dataclasses.dataclass(frozen=True)
class Profile:
    """A voice profile as the API shows it."""

    id: int
    name: str
    session_ids: list[int]  # the sessions its voiceprints came from (a deleted session is no longer listed)
    created_at_ms: int
    owner_token_id: int | None


# --- voiceprint arithmetic -------------------------------------------------------------------------------
def normalised(vector) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float64)
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def stored(vector: np.ndarray) -> list[float]:
    """A voiceprint as the database keeps it (JSON): float32 precision is all CAM++ has."""
    return [round(float(x), 7) for x in np.asarray(vector, dtype=np.float64)]


def centroid(vectors: list) -> np.ndarray:
    """A profile's centroid: the L2-normalised mean of its (L2-normalised) voiceprints."""
    return normalised(np.mean([normalised(v) for v in vectors], axis=0))


def holds_two_voices(contrast: float | None) -> bool:
    """Whether a speaker's split contrast says diarization merged two people into it (None: not measured)."""
    return contrast is not None and contrast >= MERGE_CONTRAST


def assign(speakers: dict[str, tuple[np.ndarray, float]], profiles: dict[int, tuple[str, np.ndarray]],
           *, contrasts: dict[str, float | None] | None = None, threshold: float = RECOGNITION_SIMILARITY,
           min_speech_s: float = MIN_RECOGNITION_SPEECH_S) -> dict[str, Match]:
    """Which speakers are which known voices: {speaker label: Match}.

    speakers: label -> (voiceprint, seconds of speech behind it); profiles: id -> (name, centroid). Pairs at or
    above `threshold` (default RECOGNITION_SIMILARITY) are taken greedily from the most similar down, so one
    profile names at most one speaker and one speaker takes at most one profile; speakers with less than
    `min_speech_s` (default MIN_RECOGNITION_SPEECH_S) seconds of speech are never named, nor are those whose
    split contrast (`contrasts`: label -> workers.voiceprints.split_contrast, None where not measured) says they
    hold two voices.
    """
    pairs = []
    for label, (vector, voiced_s) in speakers.items():
        if voiced_s < min_speech_s or holds_two_voices((contrasts or {}).get(label)):
            continue
        for pid, (_, center) in profiles.items():
            similarity = float(normalised(vector) @ center)
            if similarity >= threshold:
                pairs.append((similarity, label, pid))
    out: dict[str, Match] = {}
    taken: set[int] = set()
    for similarity, label, pid in sorted(pairs, key=lambda p: (-p[0], p[1], p[2])):
        if label not in out and pid not in taken:
            out[label] = Match(pid, profiles[pid][0], similarity)
            taken.add(pid)
    return out


def profile_centroids(owner_token_id: int | None) -> dict[int, tuple[str, np.ndarray]]:
    """The owner's profiles: id -> (name, centroid); profiles without voiceprints are left out."""
    vectors: dict[int, list] = {}
    names = {}
    query = (VoiceSample.select(VoiceSample.vector, VoiceProfile.id, VoiceProfile.name).join(VoiceProfile)
             .where(_owned_by(owner_token_id)))
    for sample in query:
        vectors.setdefault(sample.profile.id, []).append(sample.vector)
        names[sample.profile.id] = sample.profile.name
    return {pid: (names[pid], centroid(v)) for pid, v in vectors.items()}


# --- profiles ----------------------------------------------------------------------------------------------
def _owned_by(owner_token_id: int | None):
    column = VoiceProfile.owner_token_id
    return column.is_null() if owner_token_id is None else column == owner_token_id


def _profile(row: VoiceProfile) -> Profile:
    sessions = sorted({s for (s,) in VoiceSample.select(VoiceSample.session).where(
        (VoiceSample.profile == row.id) & VoiceSample.session.is_null(False)).tuples()})
    return Profile(id=row.id, name=row.name, session_ids=sessions, created_at_ms=row.created_at_ms,
                   owner_token_id=row.owner_token_id)


def check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > NAME_MAX:
        raise InvalidInput(f"a voice profile needs a name of 1 to {NAME_MAX} characters")
    if ENGINE_LABEL.fullmatch(name):
        raise InvalidInput(f"{name!r} is how unnamed speakers are labelled; give the voice a person's name")
    return name


def list_profiles(owner_token_id: int | None, *, everyone: bool = False) -> list[Profile]:
    """The owner's profiles by id (every owner's with `everyone`, for the operator's CLI)."""
    query = VoiceProfile.select().order_by(VoiceProfile.id)
    if not everyone:
        query = query.where(_owned_by(owner_token_id))
    return [_profile(row) for row in query]


def get_profile(profile_id: int, owner_token_id: int | None, *, everyone: bool = False) -> VoiceProfile:
    row = VoiceProfile.get_or_none(VoiceProfile.id == profile_id)
    if row is None or not (everyone or row.owner_token_id == owner_token_id):
        raise UnknownVoiceProfile(f"voice profile {profile_id} not found")
    return row


def engine_label(session: Session, speaker: str) -> SessionVoice:
    """The kept voiceprint of the speaker a session's transcript shows now as `speaker` (a label diarization
    gave, a known voice's name, or a name the user typed in a rename)."""
    voices = {v.label: v for v in SessionVoice.select().where(SessionVoice.session == session.id)}
    if not voices:
        raise InvalidInput(f"session {session.id} has no speakers with voiceprints (transcribed without speaker "
                           "labels, before known voices, or with PARLEY_VOICE_RECOGNITION off)")
    shown = {v.shown or v.label: v for v in voices.values()}
    renames = session.speaker_names or {}
    candidates = [speaker]
    for _ in range(len(renames) + 1):  # follow renames back (a rename of a rename) to a label or a known voice
        before = [old for old, new in renames.items() if new in candidates and old not in candidates]
        if not before:
            break
        candidates += before
    for name in candidates:
        if name in shown:
            return shown[name]
    raise InvalidInput(f"session {session.id} has no speaker {speaker!r}; its speakers are "
                       f"{', '.join(sorted(_labels_now(session)))}")


def _labels_now(session: Session) -> set[str]:
    return {s for (s,) in Paragraph.select(Paragraph.speaker).where(
        (Paragraph.session == session.id) & Paragraph.speaker.is_null(False)).distinct().tuples()}


def _check_enrolment(voice: SessionVoice, speaker: str) -> None:
    """A profile is only as good as its voiceprints: refuse those unlike what recognition was calibrated on."""
    where = f"speaker {speaker!r} of session {voice.session_id}"
    if holds_two_voices(voice.voice_contrast):
        raise InvalidInput(f"{where} seems to hold more than one voice (diarization merged people into it: split "
                           f"contrast {voice.voice_contrast:.2f}, one voice stays under {MERGE_CONTRAST}); a profile "
                           "made from it would name the wrong people")
    if voice.voiced_s < MIN_RECOGNITION_SPEECH_S:
        raise InvalidInput(f"{where} has {voice.voiced_s:.1f} s of solo speech; a voice profile needs at least "
                           f"{MIN_RECOGNITION_SPEECH_S:.0f} s")


def create_profile(*, session_id: int, speaker: str, name: str, owner_token_id: int | None) -> tuple[Profile, bool]:
    """Name a session's speaker: a new profile, or this voice added to the owner's profile of that name.

    Returns (the profile, whether it was created). NotFound for an unknown session; InvalidInput for a session
    that is not finished or has no such speaker; Conflict when the profile already has another speaker of it.
    """
    name = check_name(name)
    session = Session.get_or_none(Session.id == session_id)
    if session is None:
        raise NotFound(f"session {session_id} not found")
    if session.status != SessionStatus.COMPLETED:
        raise InvalidInput(f"session {session_id} is {session.status}; a voice is named from a finished session")
    voice = engine_label(session, speaker)
    with db.atomic():
        row = VoiceProfile.get_or_none(_owned_by(owner_token_id) & (VoiceProfile.name == name))
        created = row is None
        if created:
            row = VoiceProfile.create(name=name, owner_token_id=owner_token_id)
        already = VoiceSample.get_or_none((VoiceSample.profile == row.id) & (VoiceSample.session == session.id))
        if already is not None and already.label != voice.label:
            raise Conflict(f"voice profile {name!r} already has speaker {already.label} of session {session.id}; "
                           "one voice names at most one speaker per session")
        if already is None:
            _check_enrolment(voice, speaker)
            VoiceSample.create(profile=row.id, session=session.id, label=voice.label, vector=voice.vector,
                               voiced_s=voice.voiced_s)
    return _profile(row), created


def rename_profile(profile_id: int, name: str, owner_token_id: int | None) -> Profile:
    """A new name; transcripts keep the old one until `parley voices apply`."""
    row = get_profile(profile_id, owner_token_id)
    name = check_name(name)
    other = VoiceProfile.get_or_none(_owned_by(owner_token_id) & (VoiceProfile.name == name)
                                     & (VoiceProfile.id != row.id))
    if other is not None:
        raise Conflict(f"another voice profile ({other.id}) is named {name!r}")
    row.name = name
    row.save(only=[VoiceProfile.name])
    return _profile(row)


def delete_profile(profile_id: int, owner_token_id: int | None, *, everyone: bool = False) -> str:
    """Delete a profile and its voiceprints; transcripts it labelled stay as they are until
    `parley voices apply --undo`. Returns its name."""
    row = get_profile(profile_id, owner_token_id, everyone=everyone)
    with db.atomic():
        row.delete_instance()  # ON DELETE CASCADE takes its voiceprints; session speakers keep their label
    return row.name
