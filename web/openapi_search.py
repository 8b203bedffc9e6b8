"""The OpenAPI part for search and the search index (web/search.py); merged by web.openapi."""
from __future__ import annotations

from typing import Any

from services.search_db import RANK_WINDOW
from web.openapi_schema import (array, boolean, error, integer, nullable, number, obj, operation, query_param, response,
                                string)
from web.search import MAX_FROM


QUERY_SYNTAX = (
    "Words must all match (stemmed: `running` finds `runs`); `\"a quoted phrase\"` matches the words in order; "
    "`pref*` matches words starting with `pref`; `-word` (or `-\"phrase\"`, `-pref*`) excludes. An unbalanced "
    "quote, an empty phrase, a lone `-` or `*`, a `*` inside a word, or a query of only exclusions is a 400."
)


def search_result() -> dict[str, Any]:
    return obj({
        "id": string('Transcript hits: "{sessionId}_{paragraphIndex}"; chat hits: the message id'),
        "type": string("What matched", enum=["chat", "transcript"]),
        "chatId": nullable(integer("The chat of a chat hit; null for transcripts")),
        "sessionId": nullable(integer("The session; null for standalone chat hits")),
        "sender": nullable(string("Who wrote the message; null for transcripts", enum=["user", "ai"])),
        "timestamp": integer("Chat: the message time (epoch ms); transcript: the paragraph's offset (ms)"),
        "snippet": string("HTML: escaped text where only <mark>…</mark> tags are markup; the highlighted "
                          "fragments joined with ' ... ', or the first 300 characters"),
        "score": number("Relevance (higher is better; 0 for a filter-only search)"),
        "highlights": obj({"text": array(string("An escaped fragment with <mark> tags"))}, required=None),
        "clientName": nullable(string("The session's client name")),
        "tags": nullable(array(string(), "Chat hits: the chat's tags")),
    })


def search_paths() -> dict[str, Any]:
    return {
        "/api/search": {
            "get": operation(
                "search",
                "search",
                "Search transcripts and chat messages",
                {
                    "200": response("Results, best first, and the total number of matches", obj({
                        "query": string('What was searched; "No query or filters provided" when q and '
                                        "clientName are both empty (then results is empty)"),
                        "results": array(search_result()),
                        "total": integer("Matches in all, for paging with from and limit; extrapolated when "
                                         "totalIsEstimate is true"),
                        "totalIsEstimate": boolean(
                            f"True when the query matched more than {RANK_WINDOW:,} documents (database backend): "
                            f"they were ranked among their {RANK_WINDOW:,} most recently indexed matches and the "
                            "total extrapolated from how densely those lie; false when every match was ranked and "
                            "counted. Absent when q and clientName are both empty"),
                    }, required=["query", "results", "total"])),
                    "400": error("limit not in 1..100, from negative or not an integer, searchType not chat, "
                                 "transcript or all, or a malformed query"),
                    "503": error("The search engine is unreachable"),
                },
                description="Changes (transcripts, edits, renames, metadata, messages, chat names and tags, "
                "deletions) are indexed by the `io` worker within about a second. " + QUERY_SYNTAX,
                parameters=[
                    query_param("q", string(maxLength=500), description="The query; see above"),
                    query_param("limit", integer(minimum=1, maximum=100, default=20)),
                    query_param("from", integer(minimum=0, maximum=MAX_FROM, default=0), description="Results to skip"),
                    query_param("clientName", string(), description="Only this client's sessions (exact match)"),
                    query_param("searchType", string(enum=["chat", "transcript", "all", ""], default="all"),
                                description="What to search; empty means all"),
                ],
            )
        },
        "/api/admin/reindex-elasticsearch": {
            "post": operation(
                "search",
                "reindex_search",
                "Rebuild the search index from the database",
                {
                    "200": response("The index was rebuilt", reindex_result()),
                    "500": response("Some documents could not be indexed (same body, errors listed)",
                                    reindex_result()),
                },
                description="The name is the sessions client's; it rebuilds whichever backend "
                "PARLEY_SEARCH_BACKEND selects (database full text or OpenSearch).",
            )
        },
    }


def reindex_result() -> dict[str, Any]:
    return obj({
        "message": string(),
        "transcriptsIndexed": integer("Transcript paragraphs indexed"),
        "messagesIndexed": integer("Chat messages indexed"),
        "errors": array(string()),
    })
