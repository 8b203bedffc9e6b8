"""What every search backend shares: the query language, the indexed documents, result shape, Backend interface.

services.search picks the backend (services.search_db or services.search_opensearch) and holds the hooks.
"""
from __future__ import annotations

import html
import logging
import re
from dataclasses import dataclass, field
from typing import Protocol

from parley.errors import InvalidInput, Unavailable

log = logging.getLogger(__name__)

MAX_QUERY_CHARS = 500
MAX_TERMS = 32
SNIPPET_CHARS = 300
SEARCH_TYPES = ("chat", "transcript", "all")

#: Highlight markers the backends put around matches; never present in indexed text (see `clean_text`).
MARK_OPEN, MARK_CLOSE = "\ue000", "\ue001"
_WORD = re.compile(r"\w+", re.UNICODE)
_MARKERS = re.compile("[\ue000-\ue003]")


class SearchQueryError(InvalidInput):
    """The search query cannot be parsed; the message says why (the web answers 400)."""


class SearchUnavailable(Unavailable):
    """The search engine could not be reached or failed (the web answers 503)."""


@dataclass(frozen=True)
class Term:
    words: tuple[str, ...]  # lower-cased; several words = a phrase
    prefix: bool = False  # the last word is a prefix
    negated: bool = False

    @property
    def is_phrase(self) -> bool:
        return len(self.words) > 1


@dataclass
class Query:
    terms: list[Term] = field(default_factory=list)

    @property
    def positive(self) -> list[Term]:
        return [t for t in self.terms if not t.negated]

    @property
    def negative(self) -> list[Term]:
        return [t for t in self.terms if t.negated]

    def __bool__(self) -> bool:
        return bool(self.terms)


def parse_query(q: str) -> Query:
    """Parse the user's query; an empty or blank query gives an empty Query (a filter-only search)."""
    if len(q) > MAX_QUERY_CHARS:
        raise SearchQueryError(f"the query is {len(q)} characters long; the limit is {MAX_QUERY_CHARS}")
    if q.count('"') % 2:
        raise SearchQueryError('unbalanced quote: every " needs a closing "')
    terms: list[Term] = []
    pos, n = 0, len(q)
    while pos < n:
        if q[pos].isspace():
            pos += 1
            continue
        negated = False
        if q[pos] == "-":
            negated = True
            pos += 1
            if pos >= n or q[pos].isspace():
                raise SearchQueryError("a lone '-': write it right before the word or \"phrase\" to exclude")
        if q[pos] == '"':
            end = q.index('"', pos + 1)  # balanced: there is one
            words = tuple(w.lower() for w in _WORD.findall(q[pos + 1:end]))
            if not words:
                raise SearchQueryError('an empty phrase: write words between the quotes')
            if "*" in q[pos + 1:end]:
                raise SearchQueryError("'*' is not allowed inside a quoted phrase")
            pos = end + 1
            terms.append(Term(words, negated=negated))
            continue
        end = pos
        while end < n and not q[end].isspace() and q[end] != '"':
            end += 1
        token = q[pos:end]
        pos = end
        prefix = token.endswith("*")
        body = token[:-1] if prefix else token
        if "*" in body:
            raise SearchQueryError(f"'*' may only end a word (a prefix search), as in 'therap*'; got {token!r}")
        words = tuple(w.lower() for w in _WORD.findall(body))
        if prefix and (not body or not body[-1].isalnum()):
            raise SearchQueryError(f"'*' must follow the letters of a word, as in 'therap*'; got {token!r}")
        if not words:
            if negated:
                raise SearchQueryError(f"nothing to exclude in {'-' + token!r}")
            continue  # punctuation between words
        terms.append(Term(words, prefix=prefix, negated=negated))
    if len(terms) > MAX_TERMS:
        raise SearchQueryError(f"the query has {len(terms)} terms; the limit is {MAX_TERMS}")
    query = Query(terms)
    if q.strip() and not query.terms:
        raise SearchQueryError("the query has no words to search for")
    if query.terms and not query.positive:
        raise SearchQueryError("the query only excludes words: add at least one word or phrase to find")
    return query


# --- text and snippets ------------------------------------------------------------------------------
def clean_text(text: str | None) -> str:
    """Text as indexed: without the private-use characters U+E000..U+E003 the backends use as markers."""
    return _MARKERS.sub("", text or "")


def render_marked(marked: str) -> str:
    """HTML-escape `marked` except the highlight markers, which become <mark>…</mark>."""
    out = html.escape(marked, quote=True)
    return out.replace(MARK_OPEN, "<mark>").replace(MARK_CLOSE, "</mark>")


def plain_snippet(text: str) -> str:
    text = text or ""
    cut = text[:SNIPPET_CHARS]
    return html.escape(cut + ("…" if len(text) > SNIPPET_CHARS else ""), quote=True)


def result(doc: dict, *, score: float | None, fragments: list[str] | None) -> dict:
    """One result as contract §6 shapes it, from a stored document and its marked-up fragments."""
    highlights = [render_marked(f) for f in fragments or [] if MARK_OPEN in f]
    return {
        "id": doc["id"],
        "type": doc["type"],
        "chatId": doc.get("chatId"),
        "sessionId": doc.get("sessionId"),
        "sender": doc.get("sender"),
        "timestamp": doc.get("timestamp") or 0,
        "snippet": " ... ".join(highlights) if highlights else plain_snippet(doc.get("text", "")),
        "score": float(score) if score is not None else 0.0,
        "highlights": {"text": highlights} if highlights else {},
        "clientName": doc.get("clientName"),
        "tags": doc.get("tags") if doc["type"] == "chat" else None,
    }


# --- documents, read from the database ----------------------------------------------------------------
def session_documents(session_id: int) -> list[dict] | None:
    """The session's documents (its live paragraphs and its chats' messages); None when it is gone."""
    from models import Chat, Paragraph, Session

    session = Session.get_or_none(Session.id == session_id)
    if session is None:
        return None
    docs = [transcript_document(session, p) for p in Paragraph.select().where(
        (Paragraph.session == session.id) & (Paragraph.deleted == False)).order_by(Paragraph.idx)]  # noqa: E712
    for chat in Chat.select().where(Chat.session == session.id):
        docs.extend(chat_documents_of(chat, session))
    return docs


def transcript_document(session, paragraph) -> dict:
    return {
        "id": f"{session.id}_{paragraph.idx}", "type": "transcript", "chatId": None, "sessionId": session.id,
        "sender": None, "timestamp": paragraph.start_ms, "clientName": session.client_name or None,
        "sessionName": session.session_name or None, "speaker": paragraph.speaker, "tags": None,
        "text": clean_text(paragraph.text),
        "meta": clean_text(" ".join(filter(None, [paragraph.speaker, session.session_name]))),
    }


def chat_documents(chat_id: int) -> list[dict] | None:
    """The chat's message documents; None when the chat is gone."""
    from models import Chat

    chat = Chat.get_or_none(Chat.id == chat_id)
    if chat is None:
        return None
    return chat_documents_of(chat, chat.session if chat.session_id else None)


def chat_documents_of(chat, session) -> list[dict]:
    from models import Message

    tags = list(chat.tags) if chat.tags else None
    meta = clean_text(" ".join(filter(None, [chat.name, *(tags or []), session.session_name if session else None])))
    return [{
        "id": str(m.id), "type": "chat", "chatId": chat.id, "sessionId": chat.session_id, "sender": m.sender,
        "timestamp": m.timestamp_ms, "clientName": (session.client_name or None) if session else None,
        "sessionName": (session.session_name or None) if session else None, "speaker": None, "tags": tags,
        "text": clean_text(m.text), "meta": meta,
    } for m in Message.select().where(Message.chat == chat.id).order_by(Message.id)]


def all_session_ids() -> list[int]:
    from models import Session

    return [s.id for s in Session.select(Session.id).order_by(Session.id)]


def standalone_chat_ids() -> list[int]:
    from models import Chat

    return [c.id for c in Chat.select(Chat.id).where(Chat.session.is_null()).order_by(Chat.id)]


@dataclass
class SearchPage:
    """One page of results, and how many documents match in all."""

    results: list[dict]
    total: int
    total_is_estimate: bool = False  # True when counting every match would cost too much (see search_db)


class Backend(Protocol):
    """What every search backend does (services/search_db.py, services/search_opensearch.py); documents are the
    dicts built above."""

    name: str

    def index_session(self, session_id: int) -> int: ...
    def index_chat(self, chat_id: int) -> int: ...
    def remove_session(self, session_id: int) -> None: ...
    def remove_chat(self, chat_id: int) -> None: ...
    def search(self, query: Query, *, limit: int, offset: int, client_name: str | None,
               search_type: str) -> SearchPage: ...
    def rebuild(self) -> dict: ...
