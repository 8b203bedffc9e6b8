"""The broker's queues in Redis: which jobs have a message, what each queue holds, and its dead letters."""
from __future__ import annotations

import json
from dataclasses import dataclass

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


# --- the dashboard's view of the queues -------------------------------------------------------------
# The layout is Dramatiq's Redis broker's (dramatiq/brokers/redis/dispatch.lua): `<q>` lists the waiting
# message ids, `<q>.msgs` holds every message not yet acknowledged (waiting or fetched by a worker),
# `<q>.DQ`/`<q>.DQ.msgs` the same for messages delayed before a retry, `<q>.XQ` (a sorted set scored by
# the time in ms) and `<q>.XQ.msgs` the dead letters.
_SUFFIXES = (".DQ.msgs", ".XQ.msgs", ".msgs", ".DQ", ".XQ")
# Options the Retries middleware left on a failed message; a retried dead letter starts afresh without them.
_SPENT_OPTIONS = ("retries", "traceback", "requeue_timestamp", "eta")


@dataclass
class QueueCounts:
    name: str
    waiting: int  # in the queue's list, not yet fetched
    in_progress: int  # fetched by a worker and not acknowledged (running, or prefetched by it)
    delayed: int  # waiting out the backoff before a retry
    dead: int  # dead-lettered


@dataclass
class DeadLetter:
    queue: str
    message_id: str  # the broker's id of the message in Redis (its `redis_message_id`)
    actor: str
    args: list
    dead_at: float  # Unix epoch seconds
    retries: int
    error: str  # the last line of the traceback the message failed with ("" when none was kept)


def queue_names(conn: redis.Redis, *, declared=()) -> list[str]:
    """The `declared` queues and any other queue the broker has keys for, sorted."""
    names = set(declared)
    prefix = f"{NAMESPACE}:"
    for key in conn.scan_iter(match=prefix + "*", count=500):
        name = key[len(prefix):]
        if name.startswith("__"):  # __acks__.*, __heartbeats__: the broker's bookkeeping
            continue
        for suffix in _SUFFIXES:
            if name.endswith(suffix):
                name = name[: -len(suffix)]
                break
        names.add(name)
    return sorted(names)


def counts(conn: redis.Redis, queue: str) -> QueueCounts:
    """Waiting, in-progress, delayed and dead-lettered counts of `queue`, read in one transaction."""
    key = f"{NAMESPACE}:{queue}"
    pipe = conn.pipeline(transaction=True)
    pipe.llen(key).hlen(f"{key}.msgs").hlen(f"{key}.DQ.msgs").zcard(f"{key}.XQ")
    waiting, unacked, delayed, dead = pipe.execute()
    # A message stays in `.msgs` from enqueue to ack; those not in the list are held by a worker.
    return QueueCounts(queue, waiting, max(0, unacked - waiting), delayed, dead)


def _dead_letter(queue: str, message_id: str, raw: str | None, score: float) -> DeadLetter:
    try:
        message = json.loads(raw) if raw else {}
    except ValueError:
        message = {}
    options = message.get("options") or {}
    lines = [line for line in str(options.get("traceback") or "").strip().splitlines() if line.strip()]
    return DeadLetter(queue=queue, message_id=message_id, actor=str(message.get("actor_name") or "?"),
                      args=list(message.get("args") or []), dead_at=score / 1000,
                      retries=int(options.get("retries") or 0),
                      error=lines[-1].strip() if lines else "")


def dead_letters(conn: redis.Redis, queue: str, *, limit: int = 100) -> list[DeadLetter]:
    """The newest `limit` (default 100) dead letters of `queue`, newest first."""
    key = f"{NAMESPACE}:{queue}.XQ"
    ids = conn.zrevrange(key, 0, limit - 1, withscores=True)
    if not ids:
        return []
    raws = conn.hmget(f"{key}.msgs", [mid for mid, _ in ids])
    return [_dead_letter(queue, mid, raw, score) for (mid, score), raw in zip(ids, raws) if raw is not None]


def dead_letter(conn: redis.Redis, queue: str, message_id: str) -> DeadLetter | None:
    key = f"{NAMESPACE}:{queue}.XQ"
    score, raw = conn.zscore(key, message_id), conn.hget(f"{key}.msgs", message_id)
    return None if raw is None else _dead_letter(queue, message_id, raw, score or 0)


def retry_dead_letter(conn: redis.Redis, queue: str, message_id: str) -> DeadLetter | None:
    """Move a dead letter back to the end of its queue's waiting list, with its retry count reset.

    Atomic (WATCH/MULTI): two operators pressing Retry at once enqueue it once; None when it is not
    (or no longer) a dead letter of `queue`.
    """
    key = f"{NAMESPACE}:{queue}"

    def move(pipe: redis.client.Pipeline) -> DeadLetter | None:
        raw = pipe.hget(f"{key}.XQ.msgs", message_id)
        if raw is None:
            pipe.multi()  # nothing to move; an empty transaction keeps the WATCH protocol simple
            return None
        letter = _dead_letter(queue, message_id, raw, pipe.zscore(f"{key}.XQ", message_id) or 0)
        message = json.loads(raw)
        options = {k: v for k, v in (message.get("options") or {}).items() if k not in _SPENT_OPTIONS}
        # The broker acks and nacks by this option, so it must name the id the message is stored under.
        message.update(queue_name=queue, options={**options, "redis_message_id": message_id})
        pipe.multi()
        pipe.zrem(f"{key}.XQ", message_id)
        pipe.hdel(f"{key}.XQ.msgs", message_id)
        pipe.hset(f"{key}.msgs", message_id, json.dumps(message, separators=(",", ":")))
        pipe.rpush(key, message_id)
        return letter

    return conn.transaction(move, f"{key}.XQ.msgs", value_from_callable=True)


def delete_dead_letter(conn: redis.Redis, queue: str, message_id: str) -> bool:
    """Drop a dead letter for good; False when `queue` has no such dead letter."""
    key = f"{NAMESPACE}:{queue}.XQ"
    pipe = conn.pipeline(transaction=True)
    pipe.zrem(key, message_id).hdel(f"{key}.msgs", message_id)
    removed, _ = pipe.execute()
    return bool(removed)


def drop_waiting(conn: redis.Redis, queue: str, job_id: str) -> int:
    """Remove the messages of `queue` (and its delay queue) that name `job_id` and no worker holds yet.

    Returns how many went. A message a worker already fetched is left alone: that worker acks it.
    """
    return sum(conn.transaction(lambda pipe, key=key: _drop_from(pipe, key, job_id), key, value_from_callable=True)
               for key in (f"{NAMESPACE}:{queue}", f"{NAMESPACE}:{queue}.DQ"))


def _drop_from(pipe: redis.client.Pipeline, key: str, job_id: str) -> int:
    ids = pipe.lrange(key, 0, -1)
    raws = pipe.hmget(f"{key}.msgs", ids) if ids else []
    doomed = [mid for mid, raw in zip(ids, raws) if raw and job_id in _args(raw)]
    pipe.multi()
    for mid in doomed:
        pipe.lrem(key, 0, mid)
        pipe.hdel(f"{key}.msgs", mid)
    return len(doomed)


def _args(raw: str) -> list:
    try:
        return list(json.loads(raw).get("args") or [])
    except (TypeError, ValueError, AttributeError):
        return []
