"""The merge guard of known voices on real voices: one person's speaker passes, two people merged into one do not.

Real recordings with reference turns (scripts/bench/realspeech.py, fetched by scripts/bootstrap --test): the
reference turns stand in for diarization, so a "merged speaker" is made exactly: two real people's turns under
one label. The cut-off (services.voices.MERGE_CONTRAST) was chosen by scripts/bench/voices_guard.py on other
people (its tune speakers); the people here are the held-out ones where the corpus has them.
"""
from __future__ import annotations

import numpy as np
import pytest

from helpers import real_recordings
from parley.config import get_settings
from workers import voiceprints
from workers.audio import decode
from workers.diarize import SAMPLE_RATE
from workers.turns import SpeakerTurn


def turns_of(recording, *, merged: tuple[str, ...] = (), offset: float = 0.0) -> list[SpeakerTurn]:
    """The reference turns; the people in `merged` under one label, MERGED, as a diarization merge would be."""
    return [SpeakerTurn(s + offset, e + offset, "MERGED" if who in merged else who) for s, e, who in recording.turns]


def pieces(audio: np.ndarray, turns: list[SpeakerTurn], speaker: str) -> list[tuple[np.ndarray, float]]:
    return voiceprints.speaker_pieces(audio, turns, speaker, model_dir=get_settings().model_dir)


@pytest.mark.parametrize("name, person", [("ami-trn05", "FEE078"), ("ami-trn09", "FEE083")])
def test_one_real_person_passes(name, person):
    recording = real_recordings()[name]
    found = pieces(decode(recording.wav), turns_of(recording), person)
    # Enough pieces that a second voice could show (fewer pass without being looked at).
    assert len(found) >= 2 * voiceprints.MIN_GROUP_PIECES
    assert all(voiceprints.MIN_PIECE_S <= s <= voiceprints.PIECE_S for _, s in found)
    assert voiceprints.is_one_voice(found), voiceprints.split_contrast(found)


def test_two_people_of_one_telephone_call_merged_are_stopped():
    # Diane and Sheila: two women on the same line, their turns alternating under one label.
    recording = real_recordings()["call-diane-sheila"]
    turns = turns_of(recording, merged=("speaker90", "speaker91"))
    found = pieces(decode(recording.wav), turns, "MERGED")
    assert not voiceprints.is_one_voice(found), voiceprints.split_contrast(found)


def test_two_participants_of_different_meetings_glued_into_one_speaker_are_stopped():
    first, second = real_recordings()["ami-trn05"], real_recordings()["ami-trn09"]
    a, b = decode(first.wav), decode(second.wav)
    audio = np.concatenate([a, b])
    turns = turns_of(first, merged=("FEE078",)) + turns_of(second, merged=("FEE083",), offset=len(a) / SAMPLE_RATE)
    found = pieces(audio, turns, "MERGED")
    assert not voiceprints.is_one_voice(found), voiceprints.split_contrast(found)
    # Each alone passes (test_one_real_person_passes): it is the mixture that is stopped.


def test_pieces_spread_over_the_session_and_stay_under_the_embedding_budget():
    turns = [SpeakerTurn(float(i * 10), float(i * 10 + 7), "A") for i in range(12)]  # 12 stretches of 7 s
    turns.append(SpeakerTurn(5.0, 8.0, "B"))  # B talks over A's first stretch from 5 s
    times = voiceprints.piece_times(turns, "A")
    assert len(times) == voiceprints.MAX_PIECES
    assert sum(e - s for s, e in times) <= voiceprints.MAX_PIECES * voiceprints.PIECE_S
    assert times[0][0] == 0.0 and times[-1][0] >= 110.0  # the first and the last stretch are both sampled
    assert not any(s < 8.0 and e > 5.0 for s, e in times)  # never where B speaks too
    assert all(e - s >= voiceprints.MIN_PIECE_S for s, e in times)


def test_split_contrast_needs_two_pieces_a_side_and_refuses_too_many():
    rng = np.random.default_rng(0)
    unit = [v / np.linalg.norm(v) for v in rng.standard_normal((13, 192))]
    assert voiceprints.split_contrast([(v, 3.0) for v in unit[:3]]) == 0.0
    with pytest.raises(ValueError):
        voiceprints.split_contrast([(v, 3.0) for v in unit])
