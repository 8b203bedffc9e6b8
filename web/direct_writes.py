"""Live events written by the event hub straight into clients' sockets, framed once per process.

Under the gevent worker a live event used to reach each client through its queue, its greenlet, the stream's
generators and the WSGI server's write: about 100 microseconds of one core per client and event, so a burst to
2,500 clients of a process took a quarter of a second (scripts/bench/fanout.py). A `DirectWriter` lets the
hub (web.streams.EventHub) write the event's wire bytes itself, one non-blocking `os.write` per client, while
the client's own greenlet sleeps. The greenlet takes over again whenever the hub cannot go on: a full socket
buffer (a slow client: the rest of the frame is kept and written by the greenlet), a gap in sequence numbers,
a heartbeat, a write by another party (WebSocket pongs), a terminal event or a gone client.

Only for sockets the gevent worker made non-blocking, without TLS; elsewhere streams work as before.
"""
from __future__ import annotations

import os
import ssl
import threading
from collections import deque
from collections.abc import Callable

from services import events


def usable(sock) -> bool:
    """Whether the hub may write to `sock` (gunicorn's connection socket) without ever blocking."""
    try:
        return sock is not None and not isinstance(sock, ssl.SSLSocket) and not os.get_blocking(sock.fileno())
    except (OSError, ValueError, AttributeError):
        return False


def sse_chunked(frame: bytes) -> bytes:
    """An SSE frame as one chunk of HTTP/1.1 chunked transfer encoding, as gunicorn frames what it writes."""
    return b"%X\r\n%s\r\n" % (len(frame), frame)


def ws_text_frame(text: str) -> bytes:
    """One unfragmented, unmasked WebSocket text frame (what a server sends). Sent uncompressed even where
    permessage-deflate was agreed: RFC 7692 lets each message say whether it is compressed (RSV1 clear)."""
    payload = text.encode()
    n = len(payload)
    if n < 126:
        header = bytes((0x81, n))
    elif n < 1 << 16:
        header = bytes((0x81, 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + n.to_bytes(8, "big")
    return header + payload


class DirectWriter:
    """One client's socket as the hub sees it. `active` means the hub may write; the client's greenlet sets it
    when it waits and clears it (or the hub does) before anyone else writes.

    frame: event -> wire bytes; a module-level function, so that Published.encoded encodes once per process.
    resync: the marker that sends the client back to the event log (web.streams.RESYNC).
    max_pending: events kept for the greenlet before the client is sent back to the log (a slow client).
    """

    def __init__(self, sock, frame: Callable[[dict], bytes], *, resync: dict, max_pending: int = 10_000):
        self.sock = sock
        self.resync = resync
        self.frame = frame
        self.max_pending = max_pending
        self.active = False
        self.sent = 0  # the last sequence number on the wire
        self.pending: deque = deque()  # events the hub did not write, oldest first
        self.rest = b""  # the unwritten end of a frame the socket buffer cut
        self.ended = False  # a terminal event went out (its end may still be in `rest`)
        self.failed = False  # the client is gone
        self.wake = threading.Event()
        self.lock = threading.Lock()  # one writer at a time among the greenlets that may block on the socket

    def offer(self, item) -> None:
        """The hub's call for every live event of the job, or the resync marker (which has no sequence number)."""
        if self.active and isinstance(item, dict) and item.get("seq") == self.sent + 1:
            data = item.encoded(self.frame)
            fd = self.sock.fileno()  # -1 once closed: a number kept from before might be another client's now
            if fd < 0:
                self._stop(failed=True)
                return
            try:
                written = os.write(fd, data)
            except BlockingIOError:
                written = 0
            except OSError:
                self._stop(failed=True)
                return
            self.sent = item["seq"]
            self.ended = events.is_terminal(item)
            if written < len(data):
                self.rest = data[written:]
            if self.rest or self.ended:
                self._stop()
            return
        if len(self.pending) >= self.max_pending:
            self.pending.clear()
            item = self.resync
        self.pending.append(item)
        self._stop()

    def _stop(self, *, failed: bool = False) -> None:
        self.active = False
        self.failed = self.failed or failed
        self.wake.set()

    def flush_rest(self) -> None:
        """Write what the socket buffer cut off (the client's greenlet, before anything else goes out)."""
        if not self.rest:
            return
        try:
            self.write(b"")
        except OSError:
            self.failed = True

    def write(self, data: bytes) -> None:
        """Another writer's data (a WebSocket pong or close): never inside a frame of the hub's."""
        self.active = False
        with self.lock:
            rest, self.rest = self.rest, b""
            self.sock.sendall(rest + data)
        self.wake.set()  # the client's greenlet hands the socket back to the hub

    def closing(self) -> None:
        """The socket is about to close (the WebSocket library closes it from its own greenlet)."""
        self._stop(failed=True)

    def take_pending(self) -> list:
        items = list(self.pending)
        self.pending.clear()
        return items
