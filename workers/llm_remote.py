"""The remote LLM engine: an OpenAI-compatible server (llama.cpp, LM Studio, vLLM, Ollama, a hosted API) via openai.

The official `openai` SDK speaks the protocol (streaming, errors, retries of a dropped connection); what it
does not know, llama.cpp's `repeat_penalty` and a JSON schema in `response_format`, goes in `extra_body`,
where OpenAI-compatible servers read it. Options.stop is not sent: those markers are for small local base
models, and OpenAI's own API refuses more than four.
"""
from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator

from parley.logs import register_secret
from services import remote_llm
from services.tokens import count_tokens
from workers.generation import LlmError, Options, Piece, Reply, run_stream


def remote_key(base_url: str, model: str, token: str | None) -> tuple:
    # The token is part of the key (as a digest), so a changed token takes effect on the next request.
    digest = hashlib.sha256(token.encode()).hexdigest() if token else None
    return ("remote", base_url.rstrip("/"), model, digest)


class RemoteEngine:
    """A chat model behind an OpenAI-compatible server."""

    def __init__(self, base_url: str, *, model: str, token: str | None, timeout_s: float = 300):
        if token:
            register_secret(token)  # the key must never reach a log line, with or without "Bearer"
        self.base_url = base_url.rstrip("/")
        self.model = self.model_name = model
        self.client = remote_llm.client(base_url, token, timeout_s=timeout_s)
        self.key = remote_key(base_url, model, token)
        self.context_size = None

    def count_tokens(self, text: str) -> int:
        # The same count the web tier makes for a remote model's context budget (services.tokens); the server
        # reports exact usage for the reply itself where it can.
        return count_tokens(text)

    def chat(self, messages: list[dict], options: Options, *, should_cancel: Callable[[], bool] = lambda: False,
             on_piece: Callable[[Piece], None] = lambda p: None) -> Reply:
        import openai  # loaded with the client already (services.remote_llm.client)

        extra: dict = {"repeat_penalty": options.repeat_penalty}
        if options.json_schema is not None:
            extra["response_format"] = {"type": "json_object", "schema": options.json_schema}
        reply = Reply()
        usage: dict = {}
        started = time.monotonic()
        try:
            stream = self.client.chat.completions.create(
                model=self.model, messages=messages, max_tokens=options.max_tokens, temperature=options.temperature,
                top_p=options.top_p, seed=options.seed, stream=True,
                stream_options={"include_usage": True}, extra_body=extra)
        except openai.APIStatusError as exc:
            raise LlmError(f"the LLM server answered {exc.status_code}: {_said(exc)}") from None
        except openai.APIError as exc:
            raise LlmError(f"the LLM server at {self.base_url} did not answer: {exc}") from None

        def texts() -> Iterator[str]:
            for chunk in stream:
                if chunk.usage is not None:
                    usage.update(chunk.usage.model_dump(exclude_none=True))
                for choice in chunk.choices or []:
                    delta = choice.delta
                    reasoning = (delta.model_extra or {}).get("reasoning_content") if delta else None
                    if reasoning:
                        yield f"<think>{reasoning}</think>"
                    if delta and delta.content:
                        yield delta.content

        try:
            run_stream(texts(), should_cancel, on_piece, reply)
        except openai.APIError as exc:
            raise LlmError(f"the LLM server at {self.base_url} failed while answering: {exc}") from None
        finally:
            stream.close()  # closing the connection is how a remote server learns to stop
        reply.duration_ms = int((time.monotonic() - started) * 1000)
        # Servers that ignore stream_options (llama.cpp's among them) send no usage: estimate it.
        reply.prompt_tokens = usage.get("prompt_tokens") or sum(self.count_tokens(m["content"]) for m in messages)
        reply.completion_tokens = usage.get("completion_tokens") or self.count_tokens(reply.stored_text)
        reply.thinking_tokens = self.count_tokens(reply.thinking) if reply.thinking else 0
        return reply

    def close(self) -> None:
        self.client.close()


def _said(exc) -> str:
    """The server's own words about a refusal, short."""
    try:
        return exc.response.text[:300]
    except Exception:  # noqa: BLE001 - a body that cannot be read still leaves the status to report
        return str(exc)[:300]
