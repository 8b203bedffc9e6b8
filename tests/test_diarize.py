"""Speaker assignment on the committed espeak clips, with the real Resemblyzer encoder."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("resemblyzer")
faster_whisper = pytest.importorskip("faster_whisper")

from scipy.optimize import linear_sum_assignment  # noqa: E402

from workers import diarize  # noqa: E402

AUDIO_DIR = Path(__file__).parent / "audio"
CLIPS = ["two_speakers", "three_speakers", "long_two_speakers"]


@pytest.fixture(scope="module")
def clips():
    """name -> (audio float32 16 kHz, ground-truth dict), decoded once for the module."""
    diarize.warm_up()
    out = {}
    for name in CLIPS + ["silence"]:
        truth = json.loads((AUDIO_DIR / f"{name}.json").read_text())
        audio = faster_whisper.decode_audio(str(AUDIO_DIR / truth["audio"]), sampling_rate=16000)
        out[name] = (audio, truth)
    return out


@pytest.fixture(scope="module")
def assign(clips):
    """Cached assign_speakers over a clip's ground-truth turns (several tests read one run)."""

    @lru_cache(maxsize=None)
    def run(name: str, num_speakers: int | None, only_speaker: str | None = None):
        audio, truth = clips[name]
        turns = [t for t in truth["turns"] if only_speaker in (None, t["speaker"])]
        spans = [(t["start"], t["end"]) for t in turns]
        return turns, diarize.assign_speakers(audio, spans, num_speakers=num_speakers)

    return run


def matched_fraction(truth_labels: list[str], predicted: list[str]) -> float:
    """Fraction of turns whose label agrees with the truth under the best renaming."""
    ts, ps = sorted(set(truth_labels)), sorted(set(predicted))
    counts = np.zeros((len(ts), len(ps)))
    for t, p in zip(truth_labels, predicted):
        counts[ts.index(t), ps.index(p)] += 1
    rows, cols = linear_sum_assignment(-counts)
    return counts[rows, cols].sum() / len(truth_labels)


@pytest.mark.parametrize("name", CLIPS)
def test_known_speaker_count_labels_match_truth(assign, clips, name):
    turns, result = assign(name, len(clips[name][1]["voices"]))
    assert len(result) == len(turns)
    assert matched_fraction([t["speaker"] for t in turns], [r.speaker for r in result]) >= 0.9


@pytest.mark.parametrize("name, expected", [("two_speakers", 2), ("three_speakers", 3),
                                            ("long_two_speakers", 2)])
def test_estimated_speaker_count(assign, name, expected):
    turns, result = assign(name, None)
    assert len({r.speaker for r in result}) == expected
    assert matched_fraction([t["speaker"] for t in turns], [r.speaker for r in result]) >= 0.9


@pytest.mark.parametrize("name, speaker", [("two_speakers", "A"), ("two_speakers", "B"),
                                           ("long_two_speakers", "A")])
def test_single_voice_is_one_speaker(assign, name, speaker):
    turns, result = assign(name, None, speaker)
    assert len(turns) >= 5
    assert {r.speaker for r in result} == {"SPEAKER_1"}


@pytest.mark.parametrize("name", CLIPS)
@pytest.mark.parametrize("known", [True, False])
def test_confidences_in_unit_interval(assign, clips, name, known):
    num = len(clips[name][1]["voices"]) if known else None
    _, result = assign(name, num)
    confidences = np.array([r.confidence for r in result])
    assert np.all((confidences >= 0.0) & (confidences <= 1.0))
    # Clean, clearly different voices: the encoder should be fairly sure on most turns.
    assert np.median(confidences) > 0.8


@pytest.mark.parametrize("name", CLIPS)
def test_labels_numbered_by_first_appearance(assign, name):
    _, result = assign(name, None)
    seen: list[str] = []
    for r in result:
        if r.speaker not in seen:
            seen.append(r.speaker)
    assert seen == [f"SPEAKER_{i}" for i in range(1, len(seen) + 1)]
    # Both clips open with speaker A, then B.
    assert result[0].speaker == "SPEAKER_1" and result[1].speaker == "SPEAKER_2"


def test_no_spans(clips):
    audio, _ = clips["two_speakers"]
    assert diarize.assign_speakers(audio, []) == []


def test_one_span(clips):
    audio, truth = clips["two_speakers"]
    t = truth["turns"][0]
    (only,) = diarize.assign_speakers(audio, [(t["start"], t["end"])])
    assert only.speaker == "SPEAKER_1"
    assert 0.0 <= only.confidence <= 1.0


def test_num_speakers_larger_than_spans_is_clamped(clips):
    audio, truth = clips["three_speakers"]
    spans = [(t["start"], t["end"]) for t in truth["turns"][:3]]
    result = diarize.assign_speakers(audio, spans, num_speakers=6)
    assert [r.speaker for r in result] == ["SPEAKER_1", "SPEAKER_2", "SPEAKER_3"]


def test_num_speakers_one_and_max_speakers_one(clips):
    audio, truth = clips["two_speakers"]
    spans = [(t["start"], t["end"]) for t in truth["turns"]]
    for kwargs in ({"num_speakers": 1}, {"max_speakers": 1}):
        result = diarize.assign_speakers(audio, spans, **kwargs)
        assert {r.speaker for r in result} == {"SPEAKER_1"}


def test_silent_spans_get_zero_confidence(clips):
    audio, _ = clips["silence"]
    result = diarize.assign_speakers(audio, [(0.0, 2.0), (2.0, 4.0), (4.0, 5.0)])
    assert [r.speaker for r in result] == ["SPEAKER_1"] * 3
    assert all(r.confidence == 0.0 for r in result)


def test_other_sample_rate_is_resampled(clips):
    import librosa

    audio, truth = clips["two_speakers"]
    audio_8k = librosa.resample(audio, orig_sr=16000, target_sr=8000)
    spans = [(t["start"], t["end"]) for t in truth["turns"]]
    result = diarize.assign_speakers(audio_8k, spans, num_speakers=2, sample_rate=8000)
    truth_labels = [t["speaker"] for t in truth["turns"]]
    assert matched_fraction(truth_labels, [r.speaker for r in result]) >= 0.9


def test_invalid_arguments(clips):
    audio, _ = clips["two_speakers"]
    with pytest.raises(ValueError):
        diarize.assign_speakers(audio, [(0.0, 1.0)], num_speakers=0)
    with pytest.raises(ValueError):
        diarize.assign_speakers(audio, [(0.0, 1.0)], max_speakers=0)
