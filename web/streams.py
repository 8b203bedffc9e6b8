"""Live job events for clients: one Redis subscriber per web process, fanned out to SSE and WebSocket.

A client first registers with the hub, then reads the job's event log from the database, then takes
live events. Registering first means nothing published during the log read is missed; skipping
sequence numbers already sent means nothing is repeated; a jump in sequence numbers (a message lost
while Redis reconnected) sends the client back to the log.

Under gunicorn's gevent worker (the Procfile's) every thread here is a greenlet and every blocking call
yields, so a stream costs a queue and a parked greenlet, not a thread. A live event reaches all of a
process's clients as one `Published` object, so each wire format is encoded once per process, not once
per client.
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import TypeVar

import peewee
import redis
import tenacity

from models import db
from parley.redisconn import client
from services import events
from web.direct_writes import DirectWriter

log = logging.getLogger(__name__)

RESYNC = {"type": "_resync"}  # put to every client when the subscription was broken: re-read the log
HEARTBEAT = None
T = TypeVar("T")
RECONNECT_FIRST_S, RECONNECT_MAX_S = 0.5, 10.0  # the event hub's waits between tries to reach Redis again
# The hub lets other greenlets run after this many clients of one event: handing an event to thousands of
# clients takes a web process 100 ms or more, and API requests arriving meanwhile waited for all of it.
YIELD_EVERY = 64
# How it lets them run: a sleep this short, not sleep(0). Under gevent sleep(0) only runs greenlets already
# queued to run; a request whose bytes have arrived on its socket is seen only when the event loop polls the
# sockets, which it does between callbacks about every 50 of them, so a hand-out of 40 yields still held it.
# A timer, however short, makes the loop poll (fanout bench, 5,000 clients: API p99 41-62 -> 21-37 ms).
YIELD_S = 0.0001


class Published(dict):
    """A live event as the hub hands it to every client of the process: the same object to all of them.

    It is the event's dict (consumers read it as one); `encoded` keeps each encoding made for one client
    for the next ones.
    """

    __slots__ = ("_encodings",)

    def __init__(self, event: dict):
        super().__init__(event)
        self._encodings: dict[Callable, object] = {}

    def encoded(self, encode: Callable[[dict], T]) -> T:
        # Two threads (gthread worker) may both encode the first time; the results are equal.
        try:
            return self._encodings[encode]
        except KeyError:
            value = self._encodings[encode] = encode(self)
            return value


class EventHub:
    """Holds the process's single pattern subscription and the clients' queues, keyed by job id."""

    def __init__(self, redis_url: str, *, client_queue_size: int = 10_000):
        self.redis_url = redis_url
        self.client_queue_size = client_queue_size
        self._clients: dict[str, set[queue.Queue | DirectWriter]] = defaultdict(set)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()
        self._failures = 0  # tries to reach Redis since the last subscription that worked

    def start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="parley-event-hub", daemon=True)
                self._thread.start()

    def register(self, job_id: str, *, writer: DirectWriter | None = None) -> queue.Queue | DirectWriter:
        """A client of the job's events: a queue the hub fills, or `writer`, through which the hub writes
        events into the client's socket itself (web.direct_writes)."""
        self.start()
        q = writer if writer is not None else queue.Queue(maxsize=self.client_queue_size)
        with self._lock:
            self._clients[job_id].add(q)
        return q

    def unregister(self, job_id: str, q: queue.Queue | DirectWriter) -> None:
        with self._lock:
            self._clients[job_id].discard(q)
            if not self._clients[job_id]:
                del self._clients[job_id]

    def client_count(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._clients.values())

    def _deliver(self, job_id: str, item) -> None:
        with self._lock:
            targets = list(self._clients.get(job_id, ()))
        for n, q in enumerate(targets, 1):
            if n % YIELD_EVERY == 0:
                time.sleep(YIELD_S)  # the next event is read only after this one is handed out: order is kept
            if isinstance(q, DirectWriter):
                q.offer(item)
                continue
            try:
                q.put_nowait(item)
            except queue.Full:
                # A client this far behind re-reads the log instead of holding memory for it.
                _drain(q)
                q.put_nowait(RESYNC)

    def _broadcast_resync(self) -> None:
        with self._lock:
            job_ids = list(self._clients)
        for job_id in job_ids:
            self._deliver(job_id, RESYNC)

    def _run(self) -> None:
        # tenacity reconnects for ever: 0.5 s, doubling to 10 s between tries; a subscription that worked
        # starts the count again (`_listen` resets it).
        for attempt in tenacity.Retrying(retry=tenacity.retry_if_exception_type(redis.RedisError),
                                         wait=self._backoff, before_sleep=self._lost):
            with attempt:
                self._listen()

    def _backoff(self, retry_state: tenacity.RetryCallState) -> float:
        self._failures += 1
        return min(RECONNECT_FIRST_S * 2 ** (self._failures - 1), RECONNECT_MAX_S)

    def _lost(self, retry_state: tenacity.RetryCallState) -> None:
        self.connected.clear()
        log.warning("event hub lost Redis (%s); reconnecting in %.1fs", retry_state.outcome.exception(),
                    retry_state.next_action.sleep)

    def _listen(self) -> None:
        """Subscribe and relay until Redis fails (a RedisError)."""
        conn = client(self.redis_url, blocking=True, max_connections=2)
        try:
            pubsub = conn.pubsub(ignore_subscribe_messages=True)
            pubsub.psubscribe(events.CHANNEL_PREFIX + "*")
            self.connected.set()
            self._failures = 0
            # Anything published while we were not subscribed is in the log.
            self._broadcast_resync()
            while True:
                message = pubsub.get_message(timeout=5.0)
                if message is None or message.get("type") != "pmessage":
                    continue
                try:
                    event = json.loads(message["data"])
                except (TypeError, ValueError):
                    continue
                self._deliver(event.get("job_id", ""), Published(event))
        finally:
            conn.close()


def _drain(q: queue.Queue) -> None:
    try:
        while True:
            q.get_nowait()
    except queue.Empty:
        pass


def release_db_connection() -> None:
    """Give back this request's database connection (to its pool, under gevent) unless a transaction is open.

    Streams call it before they wait: a stream lives for minutes, and under the gevent worker each one is a
    greenlet of its own, so connections kept would be one per client.
    """
    if not db.is_closed() and not db.in_transaction():
        db.close()


def _read_log(job_id: str, *, after: int, compact: bool) -> list[dict]:
    # Streams outlive their request; take a connection for the read only, not for the stream's life.
    with db.connection_context():
        return events.read_log(job_id, after=after, compact=compact)


def _read_log_patiently(job_id: str, *, after: int, compact: bool, heartbeat_s: float):
    """`_read_log`, retried while the database is locked or unreachable; heartbeats keep the stream open
    meanwhile, so a database hiccup delays the client's events instead of dropping its stream."""
    failing = False
    while True:
        try:
            return _read_log(job_id, after=after, compact=compact)
        except (peewee.OperationalError, peewee.InterfaceError) as exc:
            if not failing:
                log.warning("cannot read the event log of job %s (%s); retrying", job_id, exc)
                failing = True
            yield HEARTBEAT
            time.sleep(heartbeat_s)


def job_events(hub: EventHub, job_id: str, *, last_seq: int | None, heartbeat_s: float,
               encode: Callable[[dict], T], writer: DirectWriter | None = None) -> Iterator[T | None]:
    """A job's events, in order, each once, as `encode(event)`; None means "send a heartbeat". Ends after a
    terminal status.

    `last_seq` is the last sequence number the client already has (SSE Last-Event-ID), or None for a
    new client, which gets the compacted log: the current status and every segment so far. `encode` must
    be the same function object for every client of a format (a module-level function): a live event is
    encoded once per process and format, and that encoding is sent to every client.

    With `writer`, live events the hub can write itself never come out of this generator: it waits while
    the hub writes, and yields only the log, heartbeats and what the hub handed back.
    """
    q = hub.register(job_id, writer=writer)
    try:
        sent = last_seq or 0
        pending = yield from _read_log_patiently(job_id, after=sent, compact=last_seq is None,
                                                 heartbeat_s=heartbeat_s)
        while True:
            for event in pending:
                if event["seq"] <= sent:
                    continue
                sent = event["seq"]
                yield event.encoded(encode) if isinstance(event, Published) else encode(event)
                if events.is_terminal(event):
                    return
            if writer is not None:
                items = writer.take_pending()
                if not items:
                    writer.sent = sent
                    woke = _hand_over(writer, heartbeat_s)
                    sent = writer.sent
                    if not writer.failed:
                        writer.flush_rest()
                    if writer.failed or writer.ended:
                        return
                    if not woke:
                        yield HEARTBEAT
                    items = writer.take_pending()
            else:
                try:
                    items = [q.get(timeout=heartbeat_s)]
                except queue.Empty:
                    yield HEARTBEAT
                    items = []
            if any(item is RESYNC for item in items) or _gap(items, after=sent):
                pending = yield from _read_log_patiently(job_id, after=sent, compact=False, heartbeat_s=heartbeat_s)
            else:
                pending = items
    finally:
        hub.unregister(job_id, q)


def _hand_over(writer: DirectWriter, heartbeat_s: float) -> bool:
    """Let the hub write to the client until it hands back (True) or a heartbeat is due (False)."""
    writer.wake.clear()
    writer.active = True
    try:
        return writer.wake.wait(heartbeat_s)
    finally:
        writer.active = False


def _gap(items: list[dict], *, after: int) -> bool:
    """Whether live events `items` skip a sequence number after `after` (one was lost: read the log)."""
    expected = after + 1
    for item in items:
        if item["seq"] < expected:
            continue
        if item["seq"] > expected:
            return True
        expected += 1
    return False


def wait_until_finished(q: queue.Queue, finished: Callable[[], bool], *, timeout_s: float) -> bool:
    """Block on a registered queue until `finished()` is true (True) or `timeout_s` passes (False).

    `finished` is asked after every status event and at least once a second, so an event lost while
    Redis reconnected delays the answer by a second at most.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            event = q.get(timeout=min(1.0, max(0.01, deadline - time.monotonic())))
        except queue.Empty:
            event = None
        if (not isinstance(event, dict) or event.get("type") == "status") and finished():
            return True
    return finished()


