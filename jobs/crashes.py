"""Worker middleware that fails a job whose message keeps killing its worker, instead of redelivering it forever.

A worker killed mid-message (the OOM killer, a segfault in a native library, kill -9) never acknowledges
it; the broker gives it to the next worker, and a message that kills every worker would loop for ever.
Each delivery is counted in Redis (`parley:deliveries:<message id>`) before the actor runs; an actor that
returns or raises clears the count (exceptions are the Retries middleware's business), and so does a
clean worker shutdown (a restart is not a crash). A message that starts with `max_crashes` deliveries
already counted is not run: its job is marked failed with the reason, and the message is acknowledged.

PARLEY_MAX_CRASHES (default 3): how many times a worker may die running one message.
"""
from __future__ import annotations

import importlib
import logging
import threading

import dramatiq
import redis
from dramatiq.middleware import Middleware, SkipMessage

log = logging.getLogger(__name__)

KEY_PREFIX = "parley:deliveries:"
KEY_TTL_S = 7 * 24 * 3600

# Actor name -> "module:function" that marks the job of that actor's first argument failed with a reason.
# Actors not listed (search index updates) are idempotent and are only dropped, with a log line.
GIVE_UP = {
    "transcribe": "workers.pipeline:give_up",
    "retranscribe": "workers.pipeline:give_up",
    "generate": "workers.llm_tasks:give_up",
    "analyze": "workers.analysis:give_up",
    "pull_model": "jobs.downloads:give_up",
}


def max_crashes() -> int:
    from parley.config import get_settings

    return get_settings().max_crashes


def crash_reason(tries: int) -> str:
    return (f"stopped after {tries} tries: each time, the worker running this job died before finishing it "
            f"(killed, out of memory, or a crash in a native library); see the worker's log")


class CrashGuard(Middleware):
    """Counts each message's deliveries and fails the job of one that has killed `max_tries` workers."""

    def __init__(self, *, max_tries: int | None = None):
        self.max_tries = max_tries if max_tries is not None else max_crashes()
        self._running: set[str] = set()
        self._lock = threading.Lock()
        self._conn: redis.Redis | None = None

    def _redis(self) -> redis.Redis:
        if self._conn is None:
            from parley.config import get_settings
            from parley.redisconn import client

            self._conn = client(get_settings().redis_url)
        return self._conn

    def before_process_message(self, broker: dramatiq.Broker, message) -> None:
        key = KEY_PREFIX + message.message_id
        try:
            pipe = self._redis().pipeline()
            pipe.incr(key)
            pipe.expire(key, KEY_TTL_S)
            deliveries = int(pipe.execute()[0])
        except redis.RedisError as exc:  # counting must never stop work from running
            log.warning("could not count the deliveries of message %s: %s", message.message_id, exc)
            return
        if deliveries <= self.max_tries:
            with self._lock:
                self._running.add(message.message_id)
            return
        tries = deliveries - 1
        reason = crash_reason(tries)
        log.error("message %s (%s%s) killed its worker %d times; not running it again",
                  message.message_id, message.actor_name, tuple(message.args), tries)
        target = GIVE_UP.get(message.actor_name)
        if target and message.args:
            module, _, function = target.partition(":")
            try:
                getattr(importlib.import_module(module), function)(message.args[0], reason)
            except Exception:  # noqa: BLE001  (the message is dropped either way; say why the job was not marked)
                log.exception("could not mark the job of message %s failed", message.message_id)
        raise SkipMessage(reason)

    def _clear(self, message) -> None:
        with self._lock:
            self._running.discard(message.message_id)
        try:
            self._redis().delete(KEY_PREFIX + message.message_id)
        except redis.RedisError:
            pass  # the count expires on its own

    def after_process_message(self, broker, message, *, result=None, exception=None) -> None:
        self._clear(message)

    def after_skip_message(self, broker, message) -> None:
        self._clear(message)

    def before_worker_shutdown(self, broker, worker) -> None:
        # A clean stop may still end in SIGKILL if a job outlasts the stop timeout: it was not the job's fault.
        with self._lock:
            running, self._running = list(self._running), set()
        for message_id in running:
            try:
                self._redis().decr(KEY_PREFIX + message_id)
            except redis.RedisError:
                pass
