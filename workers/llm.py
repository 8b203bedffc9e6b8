"""Language-model engines for the LLM worker: llama.cpp in this process, or an OpenAI-compatible server.

Both stream a reply piece by piece (reasoning inside <think>…</think> apart from the answer), stop
between two tokens when asked to, and report token counts.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator

import requests

from parley import errors
from services import llmstore
from parley.config import Settings, get_settings
from parley.errors import ParleyError
from services.llm_config import default_context_cap
from parley.logs import register_secret

log = logging.getLogger(__name__)


class LlmError(ParleyError):
    """The model cannot be loaded or reached, or it failed while generating."""


class Canceled(LlmError, errors.Canceled):
    """Generation was stopped on request; what was produced so far is in the Reply."""


@dataclasses.dataclass
class Options:
    """How to generate. Defaults are the settings the UI shows."""

    max_tokens: int = 1024
    temperature: float = 0.7
    top_p: float = 0.9
    repeat_penalty: float = 1.1
    json_schema: dict | None = None  # constrain the output to JSON matching this schema
    seed: int = 42  # fixed, so the same prompt gives the same answer at temperature 0
    stop: tuple[str, ...] = ()  # generation ends before any of these (besides the chat format's end of turn)


@dataclasses.dataclass
class Piece:
    text: str
    thinking: bool  # inside a <think> block


@dataclasses.dataclass
class Reply:
    content: str = ""
    thinking: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    thinking_tokens: int | None = None
    duration_ms: int = 0
    canceled: bool = False

    @property
    def stored_text(self) -> str:
        """The text to persist: the reasoning kept in its <think> envelope, as the UI renders it."""
        return (f"<think>{self.thinking}</think>" if self.thinking else "") + self.content


class ThinkSplitter:
    """Splits streamed text into reasoning and answer, with <think> tags possibly cut across pieces."""

    OPEN, CLOSE = "<think>", "</think>"

    def __init__(self):
        self.inside = False
        self.pending = ""

    def feed(self, text: str) -> list[Piece]:
        self.pending += text
        out: list[Piece] = []
        while self.pending:
            tag = self.CLOSE if self.inside else self.OPEN
            at = self.pending.find(tag)
            if at >= 0:
                if at:
                    out.append(Piece(self.pending[:at], self.inside))
                self.pending = self.pending[at + len(tag):]
                self.inside = not self.inside
                continue
            # Keep back a tail that could be the start of a tag still arriving.
            keep = next((n for n in range(min(len(tag) - 1, len(self.pending)), 0, -1)
                         if tag.startswith(self.pending[-n:])), 0)
            emit = self.pending[:len(self.pending) - keep]
            if emit:
                out.append(Piece(emit, self.inside))
            self.pending = self.pending[len(self.pending) - keep:]
            break
        return out

    def flush(self) -> list[Piece]:
        rest, self.pending = self.pending, ""
        return [Piece(rest, self.inside)] if rest else []


def _run(stream: Iterator[str], should_cancel: Callable[[], bool], on_piece: Callable[[Piece], None],
         reply: Reply) -> None:
    splitter = ThinkSplitter()
    for text in stream:
        for piece in splitter.feed(text):
            _take(reply, piece, on_piece)
        if should_cancel():
            reply.canceled = True
            break
    for piece in splitter.flush():
        _take(reply, piece, on_piece)


def _take(reply: Reply, piece: Piece, on_piece: Callable[[Piece], None]) -> None:
    if piece.thinking:
        reply.thinking += piece.text
    else:
        reply.content += piece.text
    on_piece(piece)


# --- local: llama.cpp in-process ------------------------------------------------------------------
class LocalEngine:
    """One GGUF model loaded with llama-cpp-python. Not thread-safe: the LLM worker runs one thread."""

    def __init__(self, settings: Settings, info: llmstore.GgufInfo, *, context_size: int | None,
                 num_gpu_layers: int | None):
        from llama_cpp import Llama

        self.info = info
        self.context_size = context_size or min(info.context_length or 4096, default_context_cap())
        self.key = (info.name, self.context_size, num_gpu_layers)
        started = time.monotonic()
        self.llama = Llama(
            model_path=str(info.path), n_ctx=self.context_size,
            n_gpu_layers=-1 if num_gpu_layers is None else num_gpu_layers,
            n_threads=settings.llm_threads or None,
            chat_format=chat_format(info), verbose=False, seed=42,
        )
        log.info("loaded %s (context %s) in %.1fs", info.name, self.context_size, time.monotonic() - started)

    def count_tokens(self, text: str) -> int:
        return len(self.llama.tokenize(text.encode(), add_bos=False, special=False))

    def chat(self, messages: list[dict], options: Options, *, should_cancel: Callable[[], bool] = lambda: False,
             on_piece: Callable[[Piece], None] = lambda p: None) -> Reply:
        reply = Reply()
        started = time.monotonic()
        # Cached prefixes make repeated prompts non-deterministic; each request starts clean.
        self.llama.reset()
        kwargs = dict(messages=messages, max_tokens=options.max_tokens, temperature=options.temperature,
                      top_p=options.top_p, repeat_penalty=options.repeat_penalty, seed=options.seed, stream=True)
        if options.json_schema is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": options.json_schema}
        if options.stop:
            kwargs["stop"] = list(options.stop)
        usage: dict = {}

        def texts() -> Iterator[str]:
            for chunk in self.llama.create_chat_completion(**kwargs):
                usage.update(chunk.get("usage") or {})
                delta = chunk["choices"][0].get("delta", {}).get("content")
                if delta:
                    yield delta

        _run(texts(), should_cancel, on_piece, reply)
        reply.duration_ms = int((time.monotonic() - started) * 1000)
        reply.completion_tokens = usage.get("completion_tokens") or self.count_tokens(reply.stored_text)
        reply.prompt_tokens = usage.get("prompt_tokens") or self.count_tokens(
            "".join(m["content"] for m in messages))
        reply.thinking_tokens = self.count_tokens(reply.thinking) if reply.thinking else 0
        return reply

    def close(self) -> None:
        self.llama.close()


def chat_format(info: llmstore.GgufInfo) -> str | None:
    """The prompt format: the GGUF's own template when it has one, else one that fits its family."""
    forced = get_settings().llm_chat_format
    if forced:
        return forced
    if llmstore.header_values(info.path, {"tokenizer.chat_template"}):
        return None  # llama-cpp-python reads and uses the template itself
    return "gemma" if info.architecture.startswith("gemma") else "chatml"


# --- remote: an OpenAI-compatible server ----------------------------------------------------------
class RemoteEngine:
    """A llama.cpp server, LM Studio, vLLM, Ollama or hosted API speaking the OpenAI chat protocol."""

    def __init__(self, base_url: str, *, model: str, token: str | None, timeout_s: float = 300):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.session = requests.Session()
        if token:
            register_secret(token)  # the key must never reach a log line, with or without "Bearer"
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.timeout_s = timeout_s
        self.key = remote_key(base_url, model, token)
        self.context_size = None

    def _url(self, path: str) -> str:
        # Accept both http://host:port and http://host:port/v1 as the base.
        return f"{self.base_url}{path}" if self.base_url.endswith("/v1") else f"{self.base_url}/v1{path}"

    def list_models(self) -> list[dict]:
        try:
            response = self.session.get(self._url("/models"), timeout=10)
            response.raise_for_status()
        except requests.RequestException as exc:
            raise LlmError(f"the LLM server at {self.base_url} did not answer: {exc}") from None
        return response.json().get("data", [])

    def count_tokens(self, text: str) -> int:
        return max(1, round(len(text) / 4))  # the server counts exactly; this only sizes prompts

    def chat(self, messages: list[dict], options: Options, *, should_cancel: Callable[[], bool] = lambda: False,
             on_piece: Callable[[Piece], None] = lambda p: None) -> Reply:
        body = {"model": self.model, "messages": messages, "max_tokens": options.max_tokens,
                "temperature": options.temperature, "top_p": options.top_p, "stream": True, "seed": options.seed,
                "repeat_penalty": options.repeat_penalty, "stream_options": {"include_usage": True}}
        if options.json_schema is not None:
            body["response_format"] = {"type": "json_object", "schema": options.json_schema}
        reply = Reply()
        usage: dict = {}
        started = time.monotonic()
        try:
            response = self.session.post(self._url("/chat/completions"), json=body, stream=True, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise LlmError(f"the LLM server at {self.base_url} did not answer: {exc}") from None
        if response.status_code >= 400:
            raise LlmError(f"the LLM server answered {response.status_code}: {response.text[:300]}")

        def texts() -> Iterator[str]:
            for line in response.iter_lines(decode_unicode=True):
                if not line or not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                usage.update(chunk.get("usage") or {})
                for choice in chunk.get("choices") or []:
                    delta = (choice.get("delta") or {})
                    if delta.get("reasoning_content"):
                        yield f"<think>{delta['reasoning_content']}</think>"
                    if delta.get("content"):
                        yield delta["content"]

        try:
            _run(texts(), should_cancel, on_piece, reply)
        finally:
            response.close()  # closing the connection is how a remote server learns to stop
        reply.duration_ms = int((time.monotonic() - started) * 1000)
        # Servers that ignore stream_options (llama.cpp's among them) send no usage: estimate it.
        reply.prompt_tokens = usage.get("prompt_tokens") or sum(self.count_tokens(m["content"]) for m in messages)
        reply.completion_tokens = usage.get("completion_tokens") or self.count_tokens(reply.stored_text)
        reply.thinking_tokens = self.count_tokens(reply.thinking) if reply.thinking else 0
        return reply

    def close(self) -> None:
        self.session.close()


def remote_key(base_url: str, model: str, token: str | None) -> tuple:
    # The token is part of the key (as a digest), so a changed token takes effect on the next request.
    import hashlib

    digest = hashlib.sha256(token.encode()).hexdigest() if token else None
    return ("remote", base_url.rstrip("/"), model, digest)


# --- the engine this worker process holds ---------------------------------------------------------
_engine = None
_engine_lock = threading.Lock()


def engine_for(settings: Settings, config, *, model: str | None = None) -> LocalEngine | RemoteEngine:
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


def engine_model(engine: LocalEngine | RemoteEngine) -> str:
    """The name of the model that answers through `engine`."""
    return engine.info.name if isinstance(engine, LocalEngine) else engine.model


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
