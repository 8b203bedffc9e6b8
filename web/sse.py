"""Server-Sent Events framing, written once for every stream route (jobs, chats, analysis, dashboard)."""
from __future__ import annotations

import json

from flask import Response, stream_with_context

from web.streams import release_db_connection

#: Headers of every event stream: no caching, no buffering in a reverse proxy (nginx honours X-Accel-Buffering).
STREAM_HEADERS = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}


def event(data: dict, *, name: str | None = None, id: int | str | None = None) -> str:
    """One event: optional `id:` and `event:` lines, then `data:` with the compact JSON of `data` on one line.

    Clients of the sessions API parse exactly one compact `data:` line per event; EventSource hands only
    unnamed events (name None) to `onmessage`.
    """
    lines = []
    if id is not None:
        lines.append(f"id: {id}")
    if name is not None:
        lines.append(f"event: {name}")
    lines.append(f"data: {json.dumps(data, separators=(',', ':'))}")
    return "\n".join(lines) + "\n\n"


def comment(text: str) -> str:
    """A comment line: keeps proxies open and makes a gone client show up as a failed write."""
    return f": {text}\n\n"


def retry(milliseconds: int) -> str:
    """How soon EventSource reconnects after the stream ends."""
    return f"retry: {milliseconds}\n\n"


def response(frames, *, headers: dict | None = None) -> Response:
    """A text/event-stream response relaying `frames` (strings made by the functions above, or their bytes).

    The request's database connection is given back before each frame goes out: a stream lives for
    minutes, mostly waiting, and must not hold one of the process's pooled connections meanwhile.
    """
    return Response(stream_with_context(_releasing_db(frames)), mimetype="text/event-stream",
                    headers={**STREAM_HEADERS, **(headers or {})})


def _releasing_db(frames):
    for frame in frames:
        release_db_connection()
        yield frame
