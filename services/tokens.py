"""Token counts for context budgets, from a tokenizer alone: no model weights are ever loaded here.

For a GGUF model the count comes from its own vocabulary (llama-cpp-python with vocab_only=True: the
tokenizer tables only, about 0.3 s and 100 MB once). Without one, a Whisper tokenizer file or, last, a
characters-per-token estimate stands in.
"""
from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path

from parley.config import get_settings

_lock = threading.Lock()


@lru_cache(maxsize=4)
def _gguf_vocab(path: str):
    from llama_cpp import Llama  # vocab_only: the tokenizer, not the network

    return Llama(model_path=path, vocab_only=True, verbose=False)


@lru_cache(maxsize=1)
def _fallback_tokenizer():
    from tokenizers import Tokenizer

    for path in sorted((get_settings().model_dir / "whisper").glob("*/tokenizer.json")):
        return Tokenizer.from_file(str(path))
    return None


def count_tokens(text: str, *, gguf: Path | None = None) -> int:
    """Tokens of `text` for the model in `gguf` (or the best stand-in when there is none)."""
    if not text:
        return 0
    with _lock:
        if gguf is not None and gguf.is_file():
            return len(_gguf_vocab(str(gguf)).tokenize(text.encode(), add_bos=False, special=False))
        tokenizer = _fallback_tokenizer()
        if tokenizer is not None:
            return len(tokenizer.encode(text, add_special_tokens=False).ids)
    return max(1, round(len(text) / 4))  # English text averages about four characters a token


def active_model_path() -> Path | None:
    """The GGUF file of the configured local model, if there is one."""
    from services import llm_config, llmstore

    row = llm_config.current()
    if not llm_config.is_local(row.base_url) or not row.active_model:
        return None
    info = llmstore.find(get_settings(), row.active_model)
    return info.path if info else None
