"""Full-text search over transcripts and chat messages: the query language, the backends and the hooks.

Backends (env `PARLEY_SEARCH_BACKEND`):

- `database` (default): the database Parley already uses. SQLite FTS5 (porter stemming, bm25 ranking),
  or PostgreSQL full text (a weighted tsvector column with a GIN index, `ts_rank`, `ts_headline`) when
  `DATABASE_URL` is PostgreSQL. See `services.search_db`.
- `opensearch`: an OpenSearch cluster at `OPENSEARCH_URL` (index `PARLEY_OPENSEARCH_INDEX`, default
  `parley`), through opensearch-py. See `services.search_opensearch`.

Documents: one per live paragraph (id `"{sessionId}_{paragraphIndex}"`, type `transcript`) and one per
chat message (id = the message id as a string, type `chat`). The index is kept current by the
`jobs.indexing.update_search` actor on the `io` queue; every change that affects what is searchable
calls one of the `request_*` hooks below, which enqueue and never raise into the caller.

The query language (what users already know from web search engines):

- `word`: documents containing the word (stemmed: `running` finds `runs`); several words must all match;
- `"a quoted phrase"`: the words next to each other, in that order;
- `pref*`: words starting with `pref` (a `*` only at the end of a word);
- `-word`, `-"a phrase"`, `-pref*`: documents without it.

Letters and digits make words; other characters separate them (`e-mail` is the phrase `"e mail"`).
Malformed input raises `SearchQueryError` (400 on the web): an unbalanced quote, an empty phrase, a lone
`-` or `*`, a `*` inside a word, a query of only exclusions, a query with nothing to search for, or one
longer than `MAX_QUERY_CHARS` / `MAX_TERMS`.
"""
from __future__ import annotations

import logging

from parley.config import get_settings
# The query language's names, for callers that only know this module (re-exported on purpose).
from services.search_base import SEARCH_TYPES, Backend, SearchPage, SearchQueryError, parse_query  # noqa: F401

log = logging.getLogger(__name__)


# --- backend selection --------------------------------------------------------------------------------
def make_backend(name: str | None = None, *, database_url: str | None = None,
                 opensearch_url: str | None = None) -> Backend:
    settings = get_settings()
    name = (name or settings.search_backend or "database").strip().lower()
    if name == "database":
        from services.search_db import DatabaseBackend

        return DatabaseBackend()
    if name == "opensearch":
        from services.search_opensearch import OpenSearchBackend

        return OpenSearchBackend(opensearch_url or settings.opensearch_url, index=settings.opensearch_index)
    raise ValueError(f"PARLEY_SEARCH_BACKEND must be 'database' or 'opensearch', got {name!r}")


_backend: dict[str, Backend] = {}


def backend() -> Backend:
    """This process's backend (chosen once from the environment)."""
    if "b" not in _backend:
        _backend["b"] = make_backend()
    return _backend["b"]


# --- the interface --------------------------------------------------------------------------------------
def index_session(session_id: int) -> int:
    return backend().index_session(int(session_id))


def index_chat(chat_id: int) -> int:
    return backend().index_chat(int(chat_id))


def remove_session(session_id: int) -> None:
    backend().remove_session(int(session_id))


def remove_chat(chat_id: int) -> None:
    backend().remove_chat(int(chat_id))


def search(q: str, *, limit: int = 20, offset: int = 0, client_name: str | None = None,
           search_type: str = "all") -> SearchPage:
    """Results (contract §6 shape) and the total number of matches; raises SearchQueryError."""
    if search_type not in SEARCH_TYPES:
        raise SearchQueryError(f"searchType must be one of {', '.join(SEARCH_TYPES)}")
    query = parse_query(q or "")
    return backend().search(query, limit=limit, offset=offset, client_name=client_name or None,
                            search_type=search_type)


def rebuild() -> dict:
    """Rebuild the whole index from the database: {transcriptsIndexed, messagesIndexed, errors}."""
    return backend().rebuild()


# --- hooks: enqueue an update on the `io` worker, never raising into the caller ------------------------
def _request(op: str, ident) -> None:
    if ident is None:
        return
    try:
        from jobs.send import send

        send("update_search", op, int(ident))
    except Exception as exc:  # noqa: BLE001  (Redis down: the edit stands; a reindex catches up)
        log.warning("could not queue search update %s %s: %s: %s", op, ident, type(exc).__name__, exc)


def request_index_session(session_id) -> None:
    _request("index_session", session_id)


def request_index_chat(chat_id) -> None:
    _request("index_chat", chat_id)


def request_remove_session(session_id) -> None:
    _request("remove_session", session_id)


def request_remove_chat(chat_id) -> None:
    _request("remove_chat", chat_id)


def apply(op: str, ident: int):
    """What the indexing actor runs."""
    return {"index_session": index_session, "index_chat": index_chat, "remove_session": remove_session,
            "remove_chat": remove_chat}[op](ident)


def healthy() -> bool:
    """Whether the search backend answers a query now (for health and readiness reports)."""
    try:
        backend().search(parse_query("health"), limit=1, offset=0, client_name=None, search_type="all")
        return True
    except Exception:  # noqa: BLE001  (any failure means "not answering")
        return False
