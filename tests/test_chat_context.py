"""Prompt assembly for chat replies: system prompt, transcript with or without labels, history, truncation."""
from __future__ import annotations

import pytest

from services.chat_context import assemble, head_and_tail


def words(text: str) -> int:
    return len(text.split())


@pytest.fixture()
def db(tmp_path):
    from models import db as database, migrate
    from services.templates import ensure_system_templates

    migrate(f"sqlite:///{tmp_path / 'p.db'}")
    with database.connection_context():
        ensure_system_templates()
        yield database


def make_session_chat(lines: int, *, show_speakers: int = 1):
    from models import Chat, Message, Paragraph, Session

    session = Session.create(file_name="a.mp3", date="2026-01-01T12:00:00.000Z", status="completed",
                             show_speakers=show_speakers)
    for i in range(lines):
        Paragraph.create(session=session, idx=i, start_ms=i * 1000, end_ms=i * 1000 + 900,
                         speaker=f"SPEAKER_{i % 2 + 1}", text=f"line {i} " + "word " * 8)
    chat = Chat.create(session=session, timestamp_ms=1)
    Message.create(chat=chat, sender="ai", text="Session is ready for analysis.", timestamp_ms=1)
    Message.create(chat=chat, sender="user", text="What happened?", timestamp_ms=2)
    return chat


def test_head_and_tail_keeps_both_ends():
    text = "\n".join(f"line {i}" for i in range(100))
    cut = head_and_tail(text, tokens=300, budget=60)
    assert cut.startswith("line 0\n") and cut.endswith("line 99")
    assert "characters of the transcript left out" in cut and "line 50" not in cut
    assert head_and_tail(text, tokens=300, budget=400) == text


def test_session_chat_prompt(db):
    from services.templates import get_template_text

    chat = make_session_chat(4)
    built = assemble(chat, count=words, context_size=10_000)
    system, *turns = built.messages
    assert system == {"role": "system", "content": get_template_text("system_prompt")}
    assert len(turns) == 1 and turns[0]["role"] == "user"  # the greeting is not part of the conversation
    assert turns[0]["content"].startswith('CONTEXT TRANSCRIPT:\n"""\nSPEAKER_1: line 0')
    assert turns[0]["content"].endswith("USER QUESTION:\nWhat happened?") and not built.is_truncated


def test_hidden_speakers_leave_the_labels_out(db):
    built = assemble(make_session_chat(4, show_speakers=0), count=words, context_size=10_000)
    assert "SPEAKER_" not in built.messages[-1]["content"] and "no speaker labels" in built.messages[0]["content"]


def test_a_transcript_too_long_is_cut_in_the_middle(db):
    chat = make_session_chat(200)
    built = assemble(chat, count=words, context_size=1200)
    content = built.messages[-1]["content"]
    assert built.is_truncated and "left out" in content
    assert "line 0 " in content and "line 199 " in content and "line 100 " not in content
    assert words(content) + built.system_tokens <= 1200 - 512


def test_old_history_goes_first_and_the_question_stays(db):
    from models import Chat, Message

    chat = Chat.create(session=None, timestamp_ms=1)
    for i in range(40):
        Message.create(chat=chat, sender="user" if i % 2 == 0 else "ai", text=f"turn {i} " + "x " * 30, timestamp_ms=i)
    Message.create(chat=chat, sender="user", text="the real question", timestamp_ms=99)
    built = assemble(chat, count=words, context_size=900)
    assert built.is_truncated and built.messages[-1]["content"] == "the real question"
    assert "turn 0 " not in str(built.messages) and built.history_tokens <= 900 - 512
    assert built.messages[0]["role"] == "system" and "turn 39 " in str(built.messages)  # the newest turns stay
