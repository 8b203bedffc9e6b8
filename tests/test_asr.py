"""The recognition engine on its own: sequential and batched inference, word timings, offsets."""
from __future__ import annotations

import pytest

from conftest import AUDIO, truth
from helpers import wer


@pytest.fixture(scope="module")
def audio():
    from workers.audio import decode
    return decode(AUDIO / "two_speakers.mp3")


@pytest.mark.parametrize("batch_size", [0, 4])
def test_sequential_and_batched_inference(models_ready, audio, batch_size):
    from parley.config import get_settings
    from workers import asr

    settings = get_settings().model_copy(update=dict(model_dir=models_ready, batch_size=batch_size, cpu_threads=2))
    recognition = asr.transcribe(settings, audio, model_name="tiny.en", offset=100.0)
    segments = list(recognition.segments)
    reference = " ".join(t["text"] for t in truth("two_speakers")["turns"])
    assert wer(reference, " ".join(s.text for s in segments)) < 0.15
    assert recognition.language == "en"
    assert 100.0 <= segments[0].start < 101.5 and segments[-1].end <= 100.0 + len(audio) / 16000 + 0.5
    assert all(s.words and s.words[0].start >= s.start - 0.05 for s in segments)
    # The batched pipeline's own segments run up to 30 s; every one the worker commits fits a subtitle cue.
    assert all(s.end - s.start <= asr.MAX_SEGMENT_S + 1.0 for s in segments), [(s.start, s.end) for s in segments]
    assert len(segments) >= 6  # 44 s of dialogue, 14 turns
