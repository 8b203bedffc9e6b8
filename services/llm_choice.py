"""Choosing the language model (and the remote server's key): the settings row changed, and the load queued."""
from __future__ import annotations

import re

from parley.config import Settings
from parley.errors import InvalidInput
from parley.timestamps import now_ms
from services import llm_config, llmstore
from services.llm_jobs import queue_llm_job


def choose_model(settings: Settings, name: str, **changes) -> None:
    """Make `name` the active model, with the other settings columns in `changes` (base_url, context_size,
    temperature, ...), and queue its load on the LLM worker (GET /api/llm/status shows when it is resident).

    A local model (no remote base_url, given or already set) must be in the model store: InvalidInput names
    the ones that are.
    """
    row = llm_config.current()
    base_url = changes.get("base_url", row.base_url)
    if llm_config.is_local(base_url) and llmstore.find(settings, name) is None:
        names = [i.name for i in llmstore.list_models(settings)]
        raise InvalidInput(f"model {name!r} is not in the model store; available: "
                           f"{', '.join(names) or 'none (POST /api/llm/pull-model)'}")
    llm_config.LlmSettings.update(active_model=name, updated_at_ms=now_ms(), **changes).where(
        llm_config.LlmSettings.id == row.id).execute()
    queue_llm_job("load_model")


#: What an Authorization header can carry: visible ASCII, no spaces (RFC 9110 token68 is narrower still).
API_TOKEN = re.compile(r"[\x21-\x7e]+")


def set_api_token(token: str | None) -> None:
    """Store (or, with None, clear) the key sent to a remote OpenAI-compatible server.

    InvalidInput for a token no HTTP header can carry (non-ASCII, spaces, control characters): stored, it
    would fail every later call to the server.
    """
    if token is not None and not API_TOKEN.fullmatch(token):
        raise InvalidInput("token must be visible ASCII characters without spaces (it is sent in an "
                           "Authorization header)")
    row = llm_config.current()
    llm_config.LlmSettings.update(api_token=token).where(llm_config.LlmSettings.id == row.id).execute()
