"""The whisperx engine adapter, against a STAND-IN whisperx module.

whisperx needs a CUDA torch stack and downloads its alignment models at run time, so it cannot run
on the CPU-only, offline test machines. The stand-in below has whisperx's call signatures and result
shapes (load_model/transcribe, load_align_model, align) and checks how Parley drives them and turns
the output into its own segments. The real engine must be checked on a GPU host.
"""
from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from parley.config import get_settings


class StandInPipeline:
    def __init__(self, calls):
        self.calls = calls

    def transcribe(self, audio, batch_size, language=None):
        self.calls.append(("transcribe", len(audio), batch_size, language))
        return {"segments": [{"start": 0.5, "end": 2.0, "text": " Hello there."}], "language": language or "en"}


@pytest.fixture()
def stand_in(monkeypatch, tmp_path):
    calls = []
    module = types.ModuleType("whisperx")
    module.load_model = lambda path, device, compute_type: calls.append(("load", path, device, compute_type)) or StandInPipeline(calls)

    def load_align_model(language_code, device, model_dir):
        if language_code == "xx":
            raise RuntimeError("no alignment model for xx")
        calls.append(("align_model", language_code, model_dir))
        return object(), {"language": language_code}

    def align(segments, model, metadata, audio, device, return_char_alignments):
        calls.append(("align", len(segments)))
        return {"segments": [dict(segments[0], words=[{"word": "Hello", "start": 0.5, "end": 0.9, "score": 0.91},
                                                      {"word": "there.", "start": 1.0, "end": 1.8, "score": 0.88},
                                                      {"word": "uh"}])]}

    module.load_align_model = load_align_model
    module.align = align
    monkeypatch.setitem(sys.modules, "whisperx", module)
    from workers import asr_whisperx
    monkeypatch.setattr(asr_whisperx, "installed", lambda: True)
    for cache in (asr_whisperx._models, asr_whisperx._aligners, asr_whisperx._unavailable):
        cache.clear()
    settings = get_settings().model_copy(update=dict(asr_engine="whisperx", device="cpu", compute_type="int8",
                                                        model_dir=tmp_path, batch_size=8))
    return asr_whisperx, settings, calls


def test_not_used_by_default_without_a_gpu():
    from workers import asr_whisperx

    settings = get_settings().model_copy(update=dict(asr_engine="auto", device="cpu"))
    assert asr_whisperx.usable(settings) is False


def test_segments_and_aligned_words_are_shifted_by_the_offset(stand_in):
    """Through Parley's dispatcher (workers/asr.py), which picks whisperx and shapes its segments."""
    from workers import asr

    adapter, settings, calls = stand_in
    assert adapter.usable(settings) and adapter.ENGINE.usable(settings)
    recognition = asr.transcribe(settings, np.zeros(16000 * 3, dtype=np.float32), model_name="tiny.en",
                                 language=None, offset=10.0)
    segments = list(recognition.segments)
    assert recognition.language == "en"
    assert [(s.start, s.end, s.text) for s in segments] == [(10.5, 12.0, "Hello there.")]
    assert [(w.start, w.end, w.word.strip(), w.probability) for w in segments[0].words] == [
        (10.5, 10.9, "Hello", 0.91), (11.0, 11.8, "there.", 0.88)]  # the unaligned "uh" is dropped
    assert calls[0] == ("load", str(tmp_model_path(settings)), "cpu", "int8")
    assert ("transcribe", 48000, 8, None) in calls and ("align", 1) in calls


def test_missing_alignment_model_means_fall_back(stand_in):
    adapter, settings, _ = stand_in
    assert adapter.ENGINE.recognise(settings, np.zeros(16000, dtype=np.float32), model_name="base",
                                    language="xx") is None


def tmp_model_path(settings):
    from services import modelstore
    return modelstore.model_path(settings.model_dir, "tiny.en")


def test_declines_without_word_timings(stand_in):
    """Alignment is what whisperx adds; without word timings faster-whisper runs, and whisperx loads nothing."""
    adapter, settings, calls = stand_in
    assert adapter.ENGINE.recognise(settings, np.zeros(16000, dtype=np.float32), model_name="tiny.en",
                                    language=None, word_timestamps=False) is None
    assert calls == []
