"""Search over transcripts and chats (contract §6), and rebuilding the search index (contract §8.7), declared."""
from __future__ import annotations

import logging
from typing import Annotated, Literal

from flask import Blueprint
from pydantic import BeforeValidator

from services import search as search_service
from services.search_base import MAX_QUERY_CHARS
from services.search_db import RANK_WINDOW
from web.declared import Field, QueryModel, WireModel, endpoint, query_integer
from web.errors import ApiError, bad_request

log = logging.getLogger(__name__)

search_bp = Blueprint("search", __name__, url_prefix="/api")

MAX_FROM = 1_000_000
def _strip(value):
    return value.strip() if isinstance(value, str) else value


class SearchQuery(QueryModel):
    q: str = Field("", max_length=MAX_QUERY_CHARS, description="The query; see above")
    limit: query_integer(minimum=1, maximum=100, signed=True, blank_is_default=True) = 20
    from_: query_integer(minimum=0, maximum=MAX_FROM, signed=True, blank_is_default=True) = Field(
        0, alias="from", description="Results to skip")
    client_name: str = Field("", alias="clientName", description="Only this client's sessions (exact match)")
    search_type: Annotated[Literal["chat", "transcript", "all", ""], BeforeValidator(_strip)] = Field(
        "all", alias="searchType", description="What to search; empty means all")


class SearchHit(WireModel):
    id: str = Field(description='Transcript hits: "{sessionId}_{paragraphIndex}"; chat hits: the message id')
    type: Literal["chat", "transcript"] = Field(description="What matched")
    chat_id: int | None = Field(description="The chat of a chat hit; null for transcripts")
    session_id: int | None = Field(description="The session; null for standalone chat hits")
    sender: Literal["user", "ai"] | None = Field(description="Who wrote the message; null for transcripts")
    timestamp: int = Field(description="Chat: the message time (epoch ms); transcript: the paragraph's offset (ms)")
    snippet: str = Field(description="HTML: escaped text where only <mark>…</mark> tags are markup; the "
                         "highlighted fragments joined with ' ... ', or the first 300 characters")
    score: float = Field(description="Relevance (higher is better; 0 for a filter-only search)")
    highlights: dict[str, list[str]] = Field(description="`text`: the escaped fragments with <mark> tags; empty "
                                             "when nothing was highlighted")
    client_name: str | None = Field(description="The session's client name")
    tags: list[str] | None = Field(description="Chat hits: the chat's tags")


class SearchAnswer(WireModel):
    """Results, best first, and the total number of matches"""

    query: str = Field(description='What was searched; "No query or filters provided" when q and clientName are '
                       "both empty (then results is empty)")
    results: list[SearchHit]
    total: int = Field(description="Matches in all, for paging with from and limit; extrapolated when "
                       "totalIsEstimate is true")
    # An addition to the contract's shape.
    total_is_estimate: bool | None = Field(None, description=(
        f"True when the query matched more than {RANK_WINDOW:,} documents (database backend): they were ranked "
        f"among their {RANK_WINDOW:,} most recently indexed matches and the total extrapolated from how densely "
        "those lie; false when every match was ranked and counted. Absent when q and clientName are both empty"))


class ReindexResult(WireModel):
    message: str
    transcripts_indexed: int = Field(description="Transcript paragraphs indexed")
    messages_indexed: int = Field(description="Chat messages indexed")
    errors: list[str]


@search_bp.get("/search")
@endpoint(tag="search", query=SearchQuery, responses={
    200: (SearchAnswer, "Results, best first, and the total number of matches"),
    400: "limit not in 1..100, from negative or not an integer, searchType not chat, transcript or all, or a "
         "malformed query",
    503: "The search engine is unreachable"})
def search(query: SearchQuery):
    """Search transcripts and chat messages

    Changes (transcripts, edits, renames, metadata, messages, chat names and tags, deletions) are indexed by the
    `io` worker within about a second. Words must all match (stemmed: `running` finds `runs`); `"a quoted
    phrase"` matches the words in order; `pref*` matches words starting with `pref`; `-word` (or `-"phrase"`,
    `-pref*`) excludes. An unbalanced quote, an empty phrase, a lone `-` or `*`, a `*` inside a word, or a
    query of only exclusions is a 400.
    """
    q, client_name, search_type = query.q.strip(), query.client_name.strip() or None, query.search_type or "all"
    if not q and not client_name:
        return SearchAnswer(query="No query or filters provided", results=[], total=0).model_dump(
            by_alias=True, exclude_none=True)
    try:
        page = search_service.search(q, limit=query.limit, offset=query.from_, client_name=client_name,
                             search_type=search_type)
    except search_service.SearchQueryError as exc:
        raise bad_request(f"invalid search query: {exc}") from None
    except Exception as exc:  # noqa: BLE001  (the engine is down or failed: say so, not a bare 500)
        log.exception("search failed")
        raise ApiError(503, f"search is unavailable ({type(exc).__name__}); try again shortly") from None
    described = " ".join(filter(None, [q and f"q={q!r}", client_name and f"clientName={client_name!r}",
                                       f"searchType={search_type}"]))
    return SearchAnswer(query=described, results=[SearchHit.model_validate(r) for r in page.results],
                        total=page.total, total_is_estimate=page.total_is_estimate)


@search_bp.post("/admin/reindex-elasticsearch")
@endpoint(tag="search", responses={
    200: (ReindexResult, "The index was rebuilt"),
    500: (ReindexResult, "Some documents could not be indexed (same body, errors listed)")})
def reindex_search():
    """Rebuild the search index from the database

    The name is the sessions client's; it rebuilds whichever backend PARLEY_SEARCH_BACKEND selects (database
    full text or OpenSearch).
    """
    try:
        counts = search_service.rebuild()
    except Exception as exc:  # noqa: BLE001  (the contract wants the same body shape with a 500)
        log.exception("reindex failed")
        counts = {"transcriptsIndexed": 0, "messagesIndexed": 0, "errors": [f"{type(exc).__name__}: {exc}"]}
    errors = counts["errors"]
    message = (f"Reindexed {counts['transcriptsIndexed']} transcript paragraphs and {counts['messagesIndexed']} "
               f"chat messages" + (f" with {len(errors)} errors." if errors else "."))
    return ReindexResult.model_validate({"message": message, **counts}), 500 if errors else 200
