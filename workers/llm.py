"""The LLM worker's engine: the local model or the remote server the LLM settings name, held between requests.

The engines are in workers/llm_local.py and workers/llm_remote.py; what they take and return (and the
LlmEngine Protocol they follow) in workers/generation.py, re-exported here for the callers.
"""
from __future__ import annotations

import logging
import threading

from parley.config import Settings
from services import llmstore
from services.llm_config import default_context_cap
from workers.generation import Canceled, LlmEngine, LlmError, Options, Piece, Reply
from workers.llm_local import LocalEngine, chat_format
from workers.llm_remote import RemoteEngine, remote_key

log = logging.getLogger(__name__)

__all__ = ["Canceled", "LlmEngine", "LlmError", "LocalEngine", "Options", "Piece", "Reply", "RemoteEngine",
           "chat_format", "engine_for", "engine_model", "resident", "resident_on_gpu", "unload"]


# --- the engine this worker process holds ---------------------------------------------------------
_engine = None
_engine_lock = threading.Lock()


def engine_for(settings: Settings, config, *, model: str | None = None) -> LlmEngine:
    """The engine for the current LLM settings row; a local model is loaded once and swapped on change.

    `model` (default: the active one) names another model of the local store for this request, as the
    transcription API's `model_name` may; a remote server always answers with its configured model.
    """
    global _engine
    with _engine_lock:
        if config.base_url:
            key = remote_key(config.base_url, config.active_model, config.api_token)
            if _engine is None or _engine.key != key:
                unload()
                _engine = RemoteEngine(config.base_url, model=config.active_model, token=config.api_token)
            return _engine
        wanted = model or config.active_model
        if not wanted:
            raise LlmError("no language model is configured; choose one (POST /api/llm/set-model)")
        info = llmstore.find(settings, wanted)
        if info is None:
            raise LlmError(f"model {wanted!r} is not in the model store")
        key = (info.name, config.context_size or min(info.context_length or 4096, default_context_cap()),
               config.num_gpu_layers)
        if _engine is None or _engine.key != key:
            unload()
            try:
                _engine = LocalEngine(settings, info, context_size=config.context_size,
                                      num_gpu_layers=config.num_gpu_layers)
            except (ValueError, RuntimeError) as exc:
                raise LlmError(f"could not load {info.name}: {exc}") from None
        return _engine


def engine_model(engine: LlmEngine) -> str:
    """The name of the model that answers through `engine`."""
    return engine.model_name


def unload() -> bool:
    global _engine
    if _engine is None:
        return False
    _engine.close()
    _engine = None
    return True


def resident() -> str | None:
    """The model this process holds in memory, if any."""
    if isinstance(_engine, LocalEngine):
        return _engine.info.name
    return None


def resident_on_gpu() -> bool:
    """Whether layers of the resident model sit in GPU memory: a llama.cpp build with a GPU backend that
    found a device, and a layer count above zero. A CPU-only build answers False whatever is configured."""
    if not isinstance(_engine, LocalEngine) or _engine.key[2] == 0:
        return False
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())
