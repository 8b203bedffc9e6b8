"""Reading the broker's queues in Redis: which jobs still have a message waiting, delayed or in flight."""
from __future__ import annotations

import json

import redis

NAMESPACE = "dramatiq"


def job_ids_with_messages(conn: redis.Redis, queue: str) -> set[str]:
    """Job ids named by a message of `queue` that is waiting, delayed for a retry, or fetched and not acked.

    Dramatiq's Redis broker keeps every such message in `<queue>.msgs` (delayed ones in
    `<queue>.DQ.msgs`) until it is acknowledged, so a job missing here has lost its message.
    """
    found: set[str] = set()
    for key in (f"{NAMESPACE}:{queue}.msgs", f"{NAMESPACE}:{queue}.DQ.msgs"):
        for raw in conn.hvals(key):
            try:
                args = json.loads(raw).get("args") or []
            except (TypeError, ValueError):
                continue
            found.update(a for a in args if isinstance(a, str))
    return found


def depth(conn: redis.Redis, queue: str) -> dict[str, int]:
    return {
        "waiting": conn.llen(f"{NAMESPACE}:{queue}"),
        "delayed": conn.hlen(f"{NAMESPACE}:{queue}.DQ.msgs"),
        "dead": conn.zcard(f"{NAMESPACE}:{queue}.XQ"),
    }
