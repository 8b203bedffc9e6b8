"""Building the prompt of a chat reply: system prompt, transcript, history, and fitting it into the context."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

from models import Chat, Message, Session
from services.sessions import transcript_text
from services.templates import get_template_text

RESERVED_OUTPUT_TOKENS = 512
OMITTED = "\n[… {n} characters of the transcript left out here to fit the model's context …]\n"


@dataclasses.dataclass
class Assembled:
    messages: list[dict]
    is_truncated: bool
    system_tokens: int
    transcript_tokens: int
    history_tokens: int


def head_and_tail(text: str, *, tokens: int, budget: int) -> str:
    """Keep the beginning and the end of `text` so that about `budget` of its `tokens` remain.

    The opening and the close of a conversation carry most of its framing and its conclusions, so they
    are what a truncated transcript keeps; cuts fall on line breaks where possible.
    """
    if tokens <= budget:
        return text
    keep = max(0, int(len(text) * budget / max(tokens, 1)))
    head_end = text.rfind("\n", 0, keep // 2)
    head_end = head_end if head_end > keep // 4 else keep // 2
    tail_start = text.find("\n", len(text) - keep // 2)
    tail_start = tail_start + 1 if 0 <= tail_start < len(text) - keep // 4 else len(text) - keep // 2
    return text[:head_end] + OMITTED.format(n=tail_start - head_end) + text[tail_start:]


def assemble(chat: Chat, *, count: Callable[[str], int], context_size: int,
             reserved_output: int = RESERVED_OUTPUT_TOKENS) -> Assembled:
    """Messages for the model, for a chat whose last message is the user's new question.

    Session chat: the `system_prompt` template, the transcript (with speaker labels unless the session
    hides them) put in front of the last question, and the history from the first user turn on (the
    greeting is not part of the conversation). Standalone chat: `system_standalone_prompt` and the history.
    When it does not fit, the oldest history goes first, then the transcript's middle.
    """
    session: Session | None = chat.session
    history = [m for m in Message.select().where(Message.chat == chat.id).order_by(Message.id)]
    while history and history[0].sender != "user":
        history.pop(0)
    turns = [{"role": "user" if m.sender == "user" else "assistant", "content": m.text} for m in history
             if m.text.strip()]
    if session is None:
        system = get_template_text("system_standalone_prompt")
        transcript = ""
    else:
        system = get_template_text("system_prompt")
        show = session.show_speakers != 0
        if not show:
            system += "\nThe transcript below has no speaker labels; do not guess who said what."
        transcript = transcript_text(session.id, with_speakers=show)
    system_tokens = count(system)
    transcript_tokens = count(transcript) if transcript else 0
    budget = context_size - reserved_output - system_tokens - 32  # template wrapping
    truncated = False

    def history_tokens() -> int:
        return sum(count(t["content"]) + 4 for t in turns)

    # Drop the oldest turns (never the question) while the history alone crowds out the transcript.
    while len(turns) > 1 and history_tokens() + min(transcript_tokens, budget // 2) > budget:
        turns.pop(0)
        truncated = True
    if transcript:
        room = budget - history_tokens()
        if transcript_tokens > room:
            transcript = head_and_tail(transcript, tokens=transcript_tokens, budget=max(room, 0))
            truncated = True
        question = turns[-1]["content"] if turns else ""
        turns[-1:] = [{"role": "user",
                       "content": f'CONTEXT TRANSCRIPT:\n"""\n{transcript}\n"""\n\nUSER QUESTION:\n{question}'}]
    return Assembled(
        messages=[{"role": "system", "content": system}, *turns],
        is_truncated=truncated,
        system_tokens=system_tokens,
        transcript_tokens=transcript_tokens,
        history_tokens=history_tokens(),
    )
