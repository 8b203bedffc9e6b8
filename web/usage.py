"""Usage pages: weekly history, overall totals and the filtered list of model calls (contract §8.10)."""
from __future__ import annotations

import re

from flask import Blueprint, jsonify, request

from services import usage
from web.errors import bad_request

usage_bp = Blueprint("usage", __name__, url_prefix="/api/usage")

WEEKS_DEFAULT, WEEKS_MIN, WEEKS_MAX = 12, 1, 52
LIMIT_DEFAULT, LIMIT_MAX = 50, 200
INTEGER = re.compile(r"^[+-]?[0-9]{1,18}$")
NON_NEGATIVE = re.compile(r"^[0-9]{1,18}$")


def query_int(name: str, default: int | None, *, non_negative: bool = True) -> int | None:
    """The query parameter `name` as an integer; absent gives `default`; anything else is a 400."""
    raw = request.args.get(name)
    if raw is None:
        return default
    raw = raw.strip()
    if not (NON_NEGATIVE if non_negative else INTEGER).match(raw):
        kind = "a non-negative integer" if non_negative else "an integer"
        raise bad_request(f"{name} must be {kind}, got {request.args.get(name)!r}")
    return int(raw)


def query_text(name: str) -> str | None:
    """A filter value; absent or empty means no filter."""
    value = request.args.get(name)
    return value if value else None


@usage_bp.get("/history")
def usage_history():
    weeks = query_int("weeks", WEEKS_DEFAULT, non_negative=False)
    return jsonify(usage.history(min(WEEKS_MAX, max(WEEKS_MIN, weeks))))


@usage_bp.get("/stats")
def usage_stats():
    return jsonify(usage.stats())


@usage_bp.get("/logs")
def usage_logs():
    start = query_int("start", None)
    end = query_int("end", None)
    type_ = request.args.get("type")
    if type_ is not None and type_ not in usage.TYPES:
        raise bad_request(f"type must be one of {', '.join(usage.TYPES)}, got {type_!r}")
    limit = query_int("limit", LIMIT_DEFAULT)
    if limit < 1:
        raise bad_request("limit must be at least 1")
    offset = query_int("offset", 0)
    return jsonify(usage.logs(start=start, end=end, type_=type_, model=query_text("model"),
                              source=query_text("source"), limit=min(limit, LIMIT_MAX), offset=offset))
