"""No invented text: Whisper's hallucinations are dropped, and no real speech is, on real recordings."""
from __future__ import annotations

import re

import numpy as np
import pytest
import soundfile as sf

from helpers import real_recordings, wer
from services import modelstore
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


def _words(text: str) -> set[str]:
    return set(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


@pytest.mark.parametrize("model_name", ["tiny.en", "base"])
def test_the_guard_keeps_every_real_segment(model_name):
    """Every segment the engine finds in real speech (read, telephone, meetings) passes the guard, unless it only
    repeats words the engine already wrote: Whisper's loop at a clip's end (`base` on the telephone call writes
    the real last line up to 29.8 s, then " I'm in New Jersey now." into the last 0.14 s, a line from 20 s)."""
    from faster_whisper import WhisperModel

    settings = get_settings()
    model = WhisperModel(str(modelstore.model_path(settings.model_dir, model_name)), device="cpu",
                         compute_type="int8", cpu_threads=2)
    names = ["jfk", "sphinx-goforward", "librivox-ss-0870", "librivox-ss-0890", "call-diane-sheila", "ami-dev00",
             "ami-tst00"]
    for name in names:
        audio, _ = sf.read(real_recordings()[name].wav, dtype="float32")
        for vad in (True, False):
            written: set[str] = set()
            for seg in model.transcribe(audio, beam_size=settings.beam_size, word_timestamps=True, vad_filter=vad)[0]:
                why = asr.hallucination(seg)
                assert why is None or _words(seg.text) <= written, (name, vad, seg.start, seg.text, why)
                written |= _words(seg.text)


def test_the_rate_rule_allows_for_squeezed_timings_of_short_segments():
    """Whisper's segment ends are often 0.1 s off: a short real question must not read as invented text."""
    from types import SimpleNamespace

    def segment(text, start, end):
        words = [SimpleNamespace(word=w) for w in text.split()]
        return SimpleNamespace(start=start, end=end, text=text, words=words, no_speech_prob=0.1, avg_logprob=-0.3,
                               compression_ratio=1.2)

    # Seen in CI on a real phone call (base, decoded at temperature 0.2): 5 words in 0.38 s.
    assert asr.hallucination(segment("So, what kind of thing?", 27.56, 27.94)) is None
    # What base invents in the hiss after real speech (a copy of it in about 1 s), and a burst in 0.24 s.
    invented = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
    assert asr.hallucination(segment(invented, 30.0, 30.98)) == "22 words in 0.98 s"
    assert asr.hallucination(segment(invented + " Thank you. Thank you.", 29.76, 30.0)) == "26 words in 0.24 s"
