"""An OpenAI-compatible LLM server, reached through the official openai SDK: its client, and its model list.

The LLM worker chats through the client (workers/llm_remote.py); the web tier lists the server's models
with it when the user picks one. Both read a base URL the same way.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from parley.errors import Unavailable

if TYPE_CHECKING:
    import openai

# The SDK is imported where it is used: it takes half a second to import, paid by every web process at start
# otherwise, for a feature most installs never use.

# Servers without authentication ignore the header; the SDK insists on some key.
NO_KEY = "no-key"


class RemoteUnavailable(Unavailable):
    """The server did not answer, or not with what was asked."""


def api_base(base_url: str) -> str:
    """The SDK's base URL: both http://host:port and http://host:port/v1 are accepted as the server's address."""
    base = base_url.rstrip("/")
    return base if base.endswith("/v1") else base + "/v1"


def client(base_url: str, token: str | None, *, timeout_s: float = 300, max_retries: int = 1) -> "openai.OpenAI":
    import openai

    return openai.OpenAI(base_url=api_base(base_url), api_key=token or NO_KEY, timeout=timeout_s,
                         max_retries=max_retries)


def list_models(base_url: str, token: str | None, *, timeout_s: float = 5) -> list[dict]:
    """The server's models: id, owner, and the context length where the server says it (llama.cpp, vLLM)."""
    import openai

    try:
        with client(base_url, token, timeout_s=timeout_s, max_retries=0) as api:
            models = list(api.models.list())
    except openai.APIError as exc:
        raise RemoteUnavailable(f"the LLM server at {base_url} did not answer with a model list: {exc}") from None
    except UnicodeError:  # a token stored before set_api_token checked them cannot go into a header
        raise RemoteUnavailable("the stored API token is not plain ASCII, so it cannot be sent; store it again "
                                "(POST /api/llm/api-token)") from None
    out = []
    for model in models:
        extra = model.model_extra or {}
        out.append({"id": model.id, "owned_by": getattr(model, "owned_by", "") or "",
                    "context_length": extra.get("context_length") or extra.get("max_model_len")})
    return out
