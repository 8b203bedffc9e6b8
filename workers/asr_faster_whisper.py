"""The faster-whisper engine (CTranslate2): each model loaded once per worker process, segments as they decode."""
from __future__ import annotations

import logging
import os
import threading

import numpy as np

from parley.config import Settings
from services import modelstore
from workers.recognition import EngineResult, EngineSegment, Word, batch_size, device_and_compute

log = logging.getLogger(__name__)

SAMPLING_SEED = 0  # CTranslate2's sampling seed, set in load_model

_models: dict[tuple, object] = {}
_models_lock = threading.Lock()


def load_model(settings: Settings, name: str):
    """The WhisperModel for `name`, loaded once per worker process and kept."""
    from faster_whisper import WhisperModel

    name = modelstore.canonical_name(name)
    device, compute = device_and_compute(settings)
    key = (name, device, compute, settings.cpu_threads)
    with _models_lock:
        model = _models.get(key)
        if model is None:
            if not modelstore.is_downloaded(settings.model_dir, name):
                raise modelstore.ModelStoreError(
                    f"model {name} is not in the model store; run `parley models pull {name}`")
            path = modelstore.model_path(settings.model_dir, name)
            log.info("loading %s on %s (%s)", name, device, compute)
            # Where decoding at temperature 0 fails Whisper's checks it samples at higher temperatures.
            # CTranslate2 seeds each decoding thread's generator when the model makes its threads; a fixed
            # seed makes a worker's transcripts reproducible from one start to the next.
            import ctranslate2

            ctranslate2.set_random_seed(SAMPLING_SEED)
            model = WhisperModel(str(path), device=device, compute_type=compute,
                                 cpu_threads=settings.cpu_threads or min(4, os.cpu_count() or 1))
            _models[key] = model
        return model


class FasterWhisper:
    """Plain faster-whisper, batched on a GPU (BatchedInferencePipeline), sequential on a CPU."""

    name = "faster-whisper"

    def usable(self, settings: Settings) -> bool:
        return True

    def recognise(self, settings: Settings, audio: np.ndarray, *, model_name: str, language: str | None,
                  word_timestamps: bool, vad_filter: bool) -> EngineResult:
        model = load_model(settings, model_name)
        kwargs = dict(language=language, beam_size=settings.beam_size, word_timestamps=word_timestamps,
                      vad_filter=vad_filter)
        size = batch_size(settings)
        if size > 0:
            from faster_whisper import BatchedInferencePipeline

            segments, info = BatchedInferencePipeline(model).transcribe(audio, batch_size=size, **kwargs)
        else:
            segments, info = model.transcribe(audio, **kwargs)

        def produce():
            for seg in segments:
                yield EngineSegment(
                    start=seg.start, end=seg.end, text=seg.text,
                    words=[Word(w.start, w.end, w.word, w.probability) for w in (seg.words or [])],
                    avg_logprob=seg.avg_logprob, no_speech_prob=seg.no_speech_prob,
                    compression_ratio=seg.compression_ratio)

        return EngineResult(language=info.language, language_probability=info.language_probability,
                            segments=produce())


ENGINE = FasterWhisper()
