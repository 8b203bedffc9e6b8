"""Token counts of transcript text for context budgets, from a tokenizer file alone (no model weights)."""
from __future__ import annotations

import os
import threading
from functools import lru_cache
from pathlib import Path

from parley.config import get_settings

_lock = threading.Lock()


@lru_cache(maxsize=1)
def _tokenizer():
    """The tokenizer named by PARLEY_TOKENIZER, else the one of a Whisper model in the store."""
    from tokenizers import Tokenizer  # Hugging Face tokenizers: a small Rust library, no model engine

    configured = os.environ.get("PARLEY_TOKENIZER")
    candidates = [Path(configured)] if configured else sorted((get_settings().model_dir / "whisper").glob("*/tokenizer.json"))
    for path in candidates:
        if path.is_file():
            return Tokenizer.from_file(str(path))
    return None


def count_tokens(text: str) -> int:
    if not text:
        return 0
    with _lock:
        tokenizer = _tokenizer()
    if tokenizer is None:
        # No tokenizer anywhere: English text averages about four characters a token.
        return max(1, round(len(text) / 4))
    return len(tokenizer.encode(text, add_special_tokens=False).ids)
