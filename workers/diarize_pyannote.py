"""An optional diarization engine for GPU hosts: a local pyannote.audio pipeline (PARLEY_PYANNOTE_MODEL).

Not exercised here: pyannote's own pipelines are gated downloads, absent from the offline test machines.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

from parley.config import get_settings

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
_lock = threading.Lock()
_pyannote_pipeline = None


def _pyannote_turns(audio: np.ndarray, num_speakers: int | None) -> list[tuple[float, float, str]] | None:
    """Turns from the local pipeline (PARLEY_PYANNOTE_MODEL: its folder or config.yaml); None when
    pyannote.audio is not installed or fails, and sherpa-onnx is used instead."""
    global _pyannote_pipeline
    try:
        import torch
        from pyannote.audio import Pipeline
    except ImportError:
        return None
    try:
        with _lock:
            if _pyannote_pipeline is None:
                path = Path(get_settings().pyannote_model)
                config = path / "config.yaml"
                _pyannote_pipeline = Pipeline.from_pretrained(str(config if config.is_file() else path))
                if torch.cuda.is_available():
                    _pyannote_pipeline.to(torch.device("cuda"))
        kwargs = {"num_speakers": num_speakers} if num_speakers else {}
        output = _pyannote_pipeline({"waveform": torch.from_numpy(audio)[None], "sample_rate": SAMPLE_RATE}, **kwargs)
        # pyannote 4 returns an object holding the annotation; 3.x the annotation itself.
        annotation = getattr(output, "speaker_diarization", output)
        return sorted((t.start, t.end, str(spk)) for t, _, spk in annotation.itertracks(yield_label=True))
    except Exception:  # noqa: BLE001 - the job must not fail because the optional engine did
        log.exception("pyannote diarization failed; using sherpa-onnx")
        return None


class PyannoteAudio:
    """Used instead of sherpa-onnx where PARLEY_PYANNOTE_MODEL names a local pipeline and pyannote.audio is installed."""

    name = "pyannote"

    def turns(self, audio: np.ndarray, *, model_dir: Path, num_speakers: int | None,
              threshold: float) -> list[tuple[float, float, object]] | None:
        if not get_settings().pyannote_model:
            return None
        return _pyannote_turns(audio, num_speakers)


ENGINE = PyannoteAudio()
