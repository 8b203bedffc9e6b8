"""The local LLM engine: one GGUF model loaded in this process with llama-cpp-python."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

from parley.config import Settings, get_settings
from services import llmstore
from services.llm_config import default_context_cap
from workers.generation import Options, Piece, Reply, run_stream

log = logging.getLogger(__name__)


class LocalEngine:
    """One GGUF model loaded with llama-cpp-python. Not thread-safe: the LLM worker runs one thread."""

    def __init__(self, settings: Settings, info: llmstore.GgufInfo, *, context_size: int | None,
                 num_gpu_layers: int | None):
        from llama_cpp import Llama

        self.info = info
        self.model_name = info.name
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

        run_stream(texts(), should_cancel, on_piece, reply)
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
