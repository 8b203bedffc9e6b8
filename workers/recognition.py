"""What speech recognition returns, whichever engine runs it, and the device, compute type and batch it runs with."""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Protocol

import numpy as np

from parley.config import Settings


@dataclasses.dataclass
class Word:
    start: float
    end: float
    word: str
    probability: float


@dataclasses.dataclass
class RecognisedSegment:
    start: float
    end: float
    text: str
    words: list[Word]
    avg_logprob: float
    no_speech_prob: float


@dataclasses.dataclass
class Recognition:
    """What the engine found out about the audio before the first segment."""

    language: str
    language_probability: float
    segments: Iterator[RecognisedSegment]


@dataclasses.dataclass
class EngineSegment:
    """One segment as an engine decoded it: times relative to the audio it was given, before Parley's checks.

    Engines without a decoder's confidence (whisperx's aligned output) leave the neutral defaults.
    """

    start: float
    end: float
    text: str
    words: list[Word]
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    compression_ratio: float = 1.0


@dataclasses.dataclass
class EngineResult:
    language: str
    language_probability: float
    segments: Iterator[EngineSegment]


class SpeechEngine(Protocol):
    """A speech recogniser: workers/asr_faster_whisper.py, workers/asr_whisperx.py; workers/asr.py picks one."""

    name: str

    def usable(self, settings: Settings) -> bool:
        """Whether this engine can run in this process (installed, the right hardware, chosen by settings)."""

    def recognise(self, settings: Settings, audio: np.ndarray, *, model_name: str, language: str | None,
                  word_timestamps: bool, vad_filter: bool) -> EngineResult | None:
        """Segments of 16 kHz mono float32 audio as they decode; None when it cannot after all (the next engine runs)."""


def device_and_compute(settings: Settings) -> tuple[str, str]:
    device = settings.device
    if device == "auto":
        import ctranslate2

        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    compute = settings.compute_type
    if compute == "auto":
        compute = "float16" if device == "cuda" else "int8"
    return device, compute


def batch_size(settings: Settings) -> int:
    if settings.batch_size >= 0:
        return settings.batch_size
    # Batching pays off where there is parallel hardware to fill; on a few CPU cores it does not.
    return 16 if device_and_compute(settings)[0] == "cuda" else 0
