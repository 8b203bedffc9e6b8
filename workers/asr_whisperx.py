"""The optional whisperx engine for GPU hosts: batched recognition, then wav2vec2 word alignment.

Used instead of plain faster-whisper when PARLEY_ASR_ENGINE is `whisperx`, or `auto` on a CUDA host
where whisperx is installed (`pip install parley[whisperx]`) and its alignment model can be loaded
(it is downloaded on first use, so an offline host without it falls back to faster-whisper).
"""
from __future__ import annotations

import importlib.util
import logging
import threading

import numpy as np

from parley.config import Settings
from services import modelstore
from workers.recognition import EngineResult, EngineSegment, Word, batch_size, device_and_compute

log = logging.getLogger(__name__)

_lock = threading.Lock()
_models: dict[tuple, object] = {}
_aligners: dict[str, tuple] = {}
_unavailable: dict[str, str] = {}  # language -> why alignment could not be loaded


def installed() -> bool:
    return importlib.util.find_spec("whisperx") is not None


def usable(settings: Settings) -> bool:
    if settings.asr_engine == "faster-whisper" or not installed():
        return False
    if settings.asr_engine == "whisperx":
        return True
    return device_and_compute(settings)[0] == "cuda"


def _model(settings: Settings, name: str):
    import whisperx

    name = modelstore.canonical_name(name)
    device, compute = device_and_compute(settings)
    with _lock:
        if name not in _models:
            path = modelstore.model_path(settings.model_dir, name)
            # whisperx wraps faster-whisper, so it loads the same CTranslate2 folder from our store.
            _models[name] = whisperx.load_model(str(path), device, compute_type=compute)
        return _models[name]


def _aligner(settings: Settings, language: str):
    import whisperx

    with _lock:
        if language in _unavailable:
            return None
        if language not in _aligners:
            try:
                _aligners[language] = whisperx.load_align_model(
                    language_code=language, device=device_and_compute(settings)[0],
                    model_dir=str(settings.model_dir / "align"))
            except Exception as exc:  # missing download, unsupported language: both mean "no alignment"
                _unavailable[language] = str(exc)
                log.warning("whisperx alignment for %r unavailable (%s)", language, exc)
                return None
        return _aligners[language]


class WhisperX:
    """whisperx on a GPU host: batched recognition, then wav2vec2 word alignment."""

    name = "whisperx"

    def usable(self, settings: Settings) -> bool:
        return usable(settings)

    def recognise(self, settings: Settings, audio: np.ndarray, *, model_name: str, language: str | None,
                  word_timestamps: bool = True, vad_filter: bool = True) -> EngineResult | None:
        """Recognise and align `audio`; None when alignment is unavailable, or word timings are not wanted (the
        alignment is what whisperx adds), so faster-whisper runs instead."""
        if not word_timestamps:
            return None
        import whisperx

        result = _model(settings, model_name).transcribe(audio, batch_size=batch_size(settings) or 16,
                                                          language=language)
        lang = result.get("language") or language or "en"
        aligner = _aligner(settings, lang)
        if aligner is None:
            return None
        model_a, metadata = aligner
        aligned = whisperx.align(result["segments"], model_a, metadata, audio, device_and_compute(settings)[0],
                                 return_char_alignments=False)

        def produce():
            for seg in aligned["segments"]:
                words = [Word(w["start"], w["end"], " " + w["word"], float(w.get("score", 0.0)))
                         for w in seg.get("words", []) if "start" in w and "end" in w]
                yield EngineSegment(start=seg["start"], end=seg["end"], text=seg.get("text") or "", words=words)

        return EngineResult(language=lang, language_probability=1.0, segments=produce())


ENGINE = WhisperX()
