"""The language-model settings row, and how models are described to clients."""
from __future__ import annotations

from models import LlmSettings
from parley.config import Settings, get_settings
from parley.timestamps import now_ms
from services import llmstore

def default_context_cap() -> int:
    """Context used when none is configured (PARLEY_LLM_DEFAULT_CONTEXT, default 8192): a model's own
    maximum (32k for the test model) would reserve a KV cache far beyond what a chat needs."""
    return get_settings().llm_default_context


#: What the sessions client sees as the base URL of the local engine; it must not be empty.
LOCAL_BASE_URL = "local://llama.cpp"
#: An http(s) URL with a host of RFC 3986 characters, and no ASCII control character (no HTTP client sends one):
#: what a remote engine's baseUrl must look like.
REMOTE_URL_PATTERN = r"^https?://[A-Za-z0-9._~%!$&'()*+,;=:@\[\]-]+([/?#][^\x00-\x1f\x7f]*)?$"


def current() -> LlmSettings:
    """The settings row, created with defaults on first use."""
    row = LlmSettings.get_or_none(LlmSettings.id == 1)
    if row is None:
        # Not inside a transaction of ours: on SQLite, a transaction that read before it writes fails at once
        # ("database is locked", no busy wait) when another process wrote meanwhile, which failed a web process
        # booting beside another. get_or_create inserts in its own transaction and reads the row on a conflict.
        row, _ = LlmSettings.get_or_create(id=1)
    return row


def is_local(base_url: str | None) -> bool:
    return not base_url or base_url == LOCAL_BASE_URL


def activate_the_only_model(settings: Settings) -> str | None:
    """On a fresh install (no model ever chosen, the local engine) whose store holds one model, make it the
    active one, so the first chat works without a set-model call. Returns its name, or None."""
    row = current()
    if row.active_model or not is_local(row.base_url):
        return None
    found = llmstore.list_models(settings)
    if len(found) != 1:
        return None
    # Conditional, so that several web processes starting at once, or a choice made meanwhile, win.
    changed = LlmSettings.update(active_model=found[0].name).where(
        (LlmSettings.id == row.id) & (LlmSettings.active_model == "")).execute()
    return found[0].name if changed else None


def set_active(name: str) -> None:
    """Make `name` (a model of the local store) the active model of the local engine."""
    row = current()
    LlmSettings.update(active_model=name, base_url=None, updated_at_ms=now_ms()).where(
        LlmSettings.id == row.id).execute()


def base_model_notice(info: llmstore.GgufInfo | None) -> str | None:
    """What to tell the user when the active model is a base model, which continues text, not a conversation."""
    if info is None or info.instruct:
        return None
    return (f"{info.name} is a base model, not an instruct model: it continues the text it is given rather "
            "than answering, so chats and summaries will read poorly. It is there for tests and offline "
            "installs; install an instruct model with `parley llm install` and it becomes the active one.")


def model_info_dict(info: llmstore.GgufInfo) -> dict:
    """An LlmModelInfo of the sessions API, from a GGUF header."""
    return {
        "name": info.name,
        "modified_at": info.modified_at,
        "size": info.size,
        "digest": f"{info.name}:{info.size}",
        "details": {"format": "gguf", "family": info.architecture, "families": [info.architecture],
                    "parameter_size": info.parameter_size, "quantization_level": info.quantization},
        "defaultContextSize": info.context_length,
        "architecture": {"num_layers": info.num_layers, "num_attention_heads": info.num_heads,
                         "num_key_value_heads": info.num_kv_heads, "hidden_size": info.hidden_size,
                         "head_dim": info.head_dim, "precision": info.quantization},
    }


def resolve_model_name(settings: Settings, requested: str | None, aliases: set[str]) -> str:
    """The model a transcription-API request means: an alias ("gpt-3.5-turbo") is the active model.

    Raises ValueError listing what is available when the name means nothing here.
    """
    row = current()
    available = [m.name for m in llmstore.list_models(settings)] if is_local(row.base_url) else []
    if not requested or requested in aliases or requested == row.active_model:
        if not row.active_model:
            raise ValueError("no language model is configured; choose one with POST /api/llm/set-model")
        return row.active_model
    if requested in available:
        return requested
    names = sorted(set(available) | aliases | ({row.active_model} if row.active_model else set()))
    raise ValueError(f"unknown model {requested!r}; available: {', '.join(names)}")
