"""Search over transcripts and chats (contract §6), and rebuilding the search index (contract §8.7)."""
from __future__ import annotations

import logging

from flask import Blueprint, jsonify, request

from services import search
from web import forms
from web.errors import ApiError, bad_request

log = logging.getLogger(__name__)

search_bp = Blueprint("search", __name__, url_prefix="/api")

MAX_FROM = 1_000_000


@search_bp.get("/search")
def search_route():
    q = (request.args.get("q") or "").strip()
    limit = forms.as_int("limit", request.args.get("limit"), default=20, lo=1, hi=100)
    offset = forms.as_int("from", request.args.get("from"), default=0, lo=0, hi=MAX_FROM)
    client_name = (request.args.get("clientName") or "").strip() or None
    search_type = (request.args.get("searchType") or "all").strip()
    if search_type not in search.SEARCH_TYPES:
        raise bad_request(f"searchType must be one of {', '.join(search.SEARCH_TYPES)}, got {search_type!r}")
    if not q and not client_name:
        return jsonify(query="No query or filters provided", results=[], total=0)
    try:
        page = search.search(q, limit=limit, offset=offset, client_name=client_name, search_type=search_type)
    except search.SearchQueryError as exc:
        raise bad_request(f"invalid search query: {exc}") from None
    except Exception as exc:  # noqa: BLE001  (the engine is down or failed: say so, not a bare 500)
        log.exception("search failed")
        raise ApiError(503, f"search is unavailable ({type(exc).__name__}); try again shortly") from None
    described = " ".join(filter(None, [q and f"q={q!r}", client_name and f"clientName={client_name!r}",
                                       f"searchType={search_type}"]))
    # totalIsEstimate (an addition to the contract's shape): the total was extrapolated, not counted.
    return jsonify(query=described, results=page.results, total=page.total, totalIsEstimate=page.total_is_estimate)


@search_bp.post("/admin/reindex-elasticsearch")
def reindex():
    """Rebuild the search index from the database (the name is the sessions client's)."""
    try:
        counts = search.rebuild()
    except Exception as exc:  # noqa: BLE001  (the contract wants the same body shape with a 500)
        log.exception("reindex failed")
        counts = {"transcriptsIndexed": 0, "messagesIndexed": 0, "errors": [f"{type(exc).__name__}: {exc}"]}
    errors = counts["errors"]
    message = (f"Reindexed {counts['transcriptsIndexed']} transcript paragraphs and {counts['messagesIndexed']} "
               f"chat messages" + (f" with {len(errors)} errors." if errors else "."))
    return jsonify(message=message, **counts), 500 if errors else 200
