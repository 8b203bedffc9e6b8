"""What every LLM engine takes and returns: options, streamed pieces, the reply, errors; the LlmEngine Protocol.

Engines (one per file): workers/llm_local.py (llama.cpp in this process) and workers/llm_remote.py (an
OpenAI-compatible server, through the official openai SDK). Both stream a reply piece by piece (reasoning
inside <think>…</think> apart from the answer), stop between two tokens when asked to, and report token counts.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Protocol

from parley import errors
from parley.errors import ParleyError


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


def run_stream(stream: Iterator[str], should_cancel: Callable[[], bool], on_piece: Callable[[Piece], None],
               reply: Reply) -> None:
    """Feed an engine's streamed text into `reply` and `on_piece`, reasoning apart, stopping when asked to."""
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


class LlmEngine(Protocol):
    """A loaded model or a reachable server that answers chats."""

    key: tuple  # what identifies this engine's configuration; another key means another engine
    context_size: int | None
    model_name: str  # the model that answers

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` as this engine counts them (or estimates, for a remote server)."""

    def chat(self, messages: list[dict], options: Options, *, should_cancel: Callable[[], bool] = lambda: False,
             on_piece: Callable[[Piece], None] = lambda p: None) -> Reply:
        """Generate a reply to `messages`, passing each piece to `on_piece` as it arrives."""

    def close(self) -> None:
        """Free the model or the connection."""
