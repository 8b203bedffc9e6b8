"""Thousands of live-event clients in one process: asyncio SSE and WebSocket readers of a job's stream.

Each client speaks HTTP/1.1 (chunked SSE) or RFC 6455 frames directly on an asyncio connection, so a
thousand of them cost one thread; they read `seq` (and a benchmark's `bench_created`) with a regular
expression rather than parsing each event's JSON. Used by tests/test_fanout.py and scripts/bench/fanout.py.
"""
from __future__ import annotations

import asyncio
import base64
import os
import re
import resource
import struct
import time
from dataclasses import dataclass, field

SEQ = re.compile(rb'"seq":(\d+)')
CREATED = re.compile(rb'"bench_created":([0-9.eE+-]+)')


@dataclass
class StreamClient:
    """One client of /api/transcribe/events/<job> (kind "sse") or /api/transcribe/live/<job> (kind "ws").

    `resume_after` is sent as Last-Event-ID (SSE) or ?last_event_id= (WebSocket) when set.
    """

    kind: str
    resume_after: int | None = None
    seqs: list[int] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)  # now - bench_created of the events carrying it
    connected: asyncio.Event = field(default_factory=asyncio.Event)  # set by the first event received
    error: str | None = None
    ended: bool = False  # the server ended the stream (SSE: last chunk; WebSocket: close frame)

    def take(self, data: bytes) -> None:
        """One event's JSON text; a heartbeat has no seq."""
        now = time.perf_counter()
        seq = SEQ.search(data)
        if seq is None:
            return
        self.seqs.append(int(seq[1]))
        created = CREATED.search(data)
        if created:
            self.latencies_ms.append((now - float(created[1])) * 1000)
        self.connected.set()

    def problem(self, first_seq: int, last_seq: int) -> str | None:
        """None when the client got first_seq..last_seq exactly once each, in order, and the stream ended."""
        if self.error:
            return self.error
        want = list(range(first_seq, last_seq + 1))
        if self.seqs != want:
            missing = sorted(set(want) - set(self.seqs))
            repeated = len(self.seqs) - len(set(self.seqs))
            return (f"got {len(self.seqs)} events, missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                    f"unexpected {sorted(set(self.seqs) - set(want))[:5]}, repeated {repeated}, "
                    f"in order: {self.seqs == sorted(self.seqs)}")
        if not self.ended:
            return "stream did not end after the terminal status"
        return None


async def _sse(port: int, job_id: str, c: StreamClient) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        resume = f"Last-Event-ID: {c.resume_after}\r\n" if c.resume_after is not None else ""
        writer.write(f"GET /api/transcribe/events/{job_id} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     f"Accept: text/event-stream\r\n{resume}\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if b" 200 " not in head.split(b"\r\n", 1)[0]:
            raise AssertionError(head.split(b"\r\n", 1)[0].decode())
        chunked = b"transfer-encoding: chunked" in head.lower()
        buf = b""
        while True:
            if chunked:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
                if size == 0:
                    break
                data = (await reader.readexactly(size + 2))[:-2]
            else:
                data = await reader.read(65536)
                if not data:
                    break
            buf += data
            while b"\n\n" in buf:
                frame, buf = buf.split(b"\n\n", 1)
                for line in frame.split(b"\n"):
                    if line.startswith(b"data: "):
                        c.take(line[6:])
        c.ended = True
    finally:
        writer.close()


async def _ws(port: int, job_id: str, c: StreamClient) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        query = f"?last_event_id={c.resume_after}" if c.resume_after is not None else ""
        writer.write(f"GET /api/transcribe/live/{job_id}{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                     f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise AssertionError(head.split(b"\r\n", 1)[0].decode())
        message = b""
        while True:
            first, second = await reader.readexactly(2)
            opcode, length = first & 0x0F, second & 0x7F
            if length == 126:
                length = struct.unpack(">H", await reader.readexactly(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", await reader.readexactly(8))[0]
            mask = await reader.readexactly(4) if second & 0x80 else None
            payload = await reader.readexactly(length)
            if mask:  # servers do not mask; kept so a masking server is still read right
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 8:  # close: answer it (client frames are masked; a zero mask is a valid mask)
                writer.write(b"\x88\x80\x00\x00\x00\x00")
                await writer.drain()
                break
            if opcode == 9:  # ping
                writer.write(bytes([0x8A, 0x80 | len(payload)]) + b"\x00\x00\x00\x00" + payload)
                continue
            if opcode in (0, 1):
                message += payload
                if first & 0x80:
                    c.take(message)
                    message = b""
        c.ended = True
    finally:
        writer.close()


async def run_client(port: int, job_id: str, c: StreamClient) -> None:
    """Read the stream to its end; any failure is kept in `c.error`, never raised."""
    try:
        await (_sse if c.kind == "sse" else _ws)(port, job_id, c)
    except asyncio.CancelledError:
        c.error = c.error or "cancelled (never served in time)"
    except Exception as exc:  # noqa: BLE001  (reported per client)
        c.error = f"{type(exc).__name__}: {exc}"


async def connect_all(port: int, job_id: str, clients: list[StreamClient], *, timeout: float) -> list[asyncio.Task]:
    """Start every client, in waves of 50 as a crowd opening a page would; wait until each got its first
    event (from then on the server has it registered) or `timeout` passes. Returns the clients' tasks."""
    tasks = []
    for i, c in enumerate(clients):
        tasks.append(asyncio.create_task(run_client(port, job_id, c)))
        if i % 50 == 49:
            await asyncio.sleep(0.05)
    try:
        await asyncio.wait_for(asyncio.gather(*(c.connected.wait() for c in clients)), timeout)
    except asyncio.TimeoutError:
        pass
    return tasks


def allow_open_files(count: int) -> None:
    """Raise this process's soft limit on open files to `count` (or the hard limit): one per client."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < count:
        new_soft = count if hard == resource.RLIM_INFINITY else min(count, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
