"""No invented text: Whisper's hallucinations are dropped, and no real speech is, on real recordings."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from helpers import real_recordings, wer
from parley import modelstore
from parley.config import get_settings
from workers import asr

pytestmark = pytest.mark.usefixtures("models_ready")


def hissing_tail(name: str, seconds: float = 20.0) -> tuple[np.ndarray, float]:
    """A real recording followed by low hiss: where Whisper invents text (it repeats the speech it heard)."""
    audio, rate = sf.read(real_recordings()[name].wav, dtype="float32")
    hiss = (0.003 * np.random.default_rng(0).standard_normal(int(rate * seconds))).astype(np.float32)
    return np.concatenate([audio, hiss]), len(audio) / rate


def test_text_invented_in_the_hiss_after_real_speech_is_dropped():
    settings = get_settings()
    audio, speech_end = hissing_tail("jfk")
    # The bare engine, decoding as a re-transcription does (no VAD), invents a second copy of the speech
    # in the hiss; without that the test would not show the guard doing anything.
    from faster_whisper import WhisperModel

    model = WhisperModel(str(modelstore.model_path(settings.model_dir, "base")), device="cpu", compute_type="int8",
                         cpu_threads=2)
    raw = list(model.transcribe(audio, beam_size=settings.beam_size, word_timestamps=True, vad_filter=False)[0])
    invented = [s for s in raw if s.start >= speech_end]
    assert invented and all(asr.hallucination(s) for s in invented), [(s.start, s.text) for s in raw]

    guarded = list(asr.transcribe(settings, audio, model_name="base", vad_filter=False).segments)
    assert guarded and all(s.end <= speech_end + 0.5 for s in guarded), [(s.start, s.end, s.text) for s in guarded]
    assert wer(real_recordings()["jfk"].text, " ".join(s.text for s in guarded)) <= 0.1


@pytest.mark.parametrize("model_name", ["tiny.en", "base"])
def test_the_guard_keeps_every_real_segment(model_name):
    """Every segment the engine finds in real speech (read, telephone, meetings) passes the guard."""
    from faster_whisper import WhisperModel

    settings = get_settings()
    model = WhisperModel(str(modelstore.model_path(settings.model_dir, model_name)), device="cpu",
                         compute_type="int8", cpu_threads=2)
    names = ["jfk", "sphinx-goforward", "librivox-ss-0870", "librivox-ss-0890", "call-diane-sheila", "ami-dev00",
             "ami-tst00"]
    for name in names:
        audio, _ = sf.read(real_recordings()[name].wav, dtype="float32")
        for vad in (True, False):
            for seg in model.transcribe(audio, beam_size=settings.beam_size, word_timestamps=True, vad_filter=vad)[0]:
                assert asr.hallucination(seg) is None, (name, vad, seg.start, seg.text)
