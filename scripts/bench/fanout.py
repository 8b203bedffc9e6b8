#!/usr/bin/env python
"""Benchmark: hundreds of clients on one job's SSE and WebSocket streams; every event to every client, in order.

Starts a real stack (redis-server + gunicorn with the Procfile's `web:` flags, see api_latency.py) and
creates one session and its job by inserting rows with peewee (no worker runs). Then:

1. `--clients` clients connect, half to GET /api/transcribe/events/<job> (SSE), half to
   /api/transcribe/live/<job> (WebSocket); a client counts as connected once it received the job's first
   event (the server registers a stream before it reads the log, so from then on nothing is missed);
2. this script publishes `--events` segment events at `--rate` per second exactly as a worker does:
   services.events.record() into the job's log, then services.events.publish() on the job's Redis channel.
   Each payload carries `bench_created` (perf_counter just before record()); then a terminal status
   event (events.emit_status) ends every stream;
3. every client must receive sequence numbers 1..N with none missing, repeated or out of order.

Delivery latency = receive time - `bench_created` (same process, same clock), so it includes the log
write, Redis pub/sub, the web process's hub, the stream thread and the client's parsing.

gunicorn's gthread worker holds one thread per open stream for the stream's whole life: more streams
than PARLEY_WEB_PROCESSES x PARLEY_WEB_THREADS wait in gunicorn's queue, unserved, and so does every
ordinary request behind them. `--threads` defaults to PARLEY_WEB_THREADS or the Procfile's value.

Clients are asyncio tasks speaking HTTP/1.1 (chunked SSE) and RFC 6455 frames directly, in this one process.
Exits non-zero only when the benchmark itself fails, never on a missed target.

    .venv/bin/python scripts/bench/fanout.py [--quick] [--clients 500] [--events 100] [--rate 5]
        [--threads N] [--processes N] [--connect-timeout 30]
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import struct
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_latency import Connection, ProductionStack, cpu_seconds, gunicorn_pids, pct, procfile_web_shape  # noqa: E402
from conftest import RedisServer  # noqa: E402

WORDS = ("so I think what we talked about last week still holds and the plan for the next few days "
         "is to keep the routine simple and write down what happens").split()


@dataclass
class Client:
    kind: str  # sse, ws
    received: list[tuple[dict, float]] = field(default_factory=list)  # (event, perf_counter at receipt)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    error: str | None = None
    ended: bool = False

    def take(self, event: dict) -> None:
        if "seq" not in event:  # a heartbeat
            return
        self.received.append((event, time.perf_counter()))
        self.connected.set()


async def sse_client(port: int, job_id: str, c: Client) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET /api/transcribe/events/{job_id} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Accept: text/event-stream\r\n\r\n".encode())
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
                        c.take(json.loads(line[6:]))
        c.ended = True
    finally:
        writer.close()


async def ws_client(port: int, job_id: str, c: Client) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(f"GET /api/transcribe/live/{job_id} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
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
            if mask:
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
                    c.take(json.loads(message))
                    message = b""
        c.ended = True
    finally:
        writer.close()


async def run_client(port: int, job_id: str, c: Client) -> None:
    try:
        await (sse_client if c.kind == "sse" else ws_client)(port, job_id, c)
    except asyncio.CancelledError:
        c.error = c.error or "cancelled (never served in time)"
    except Exception as exc:  # noqa: BLE001  (reported per client in the table)
        c.error = f"{type(exc).__name__}: {exc}"


# --- the job and its events ----------------------------------------------------------------------------
def create_job() -> str:
    from models import Job, Session, db
    from services import events

    with db.connection_context(), db.atomic():
        session = Session.create(file_name="fanout.mp3", session_name="fanout", date="2025-01-01T12:00:00.000Z",
                                 status="transcribing")
        job = Job.create(id=str(uuid.uuid4()), session=session, model_name="tiny.en", status="processing",
                         message="Transcribing")
        first = events.record(job.id, "status", events.status_payload(job))
    events.publish(first)
    return job.id


def publish_events(job_id: str, *, count: int, rate: float) -> None:
    """What a worker does per segment: log the event, then publish it; then the terminal status."""
    from models import Job, db
    from parley.timestamps import now_ms
    from services import events

    with db.connection_context():
        start = time.perf_counter()
        for i in range(count):
            time.sleep(max(0.0, start + i / rate - time.perf_counter()))
            text = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(12))
            payload = {"segment": {"id": i, "start": i * 4.0, "end": i * 4.0 + 3.5, "text": text, "speaker": "SPEAKER_00",
                                   "words": [{"start": i * 4.0 + k * 0.3, "end": i * 4.0 + k * 0.3 + 0.25, "word": w,
                                              "probability": 0.93} for k, w in enumerate(text.split())]},
                       "bench_created": time.perf_counter()}
            events.publish(events.record(job_id, "segment", payload))
        events.emit_status(Job.get_by_id(job_id), status="completed", progress=100.0, message="Done",
                           finished_at_ms=now_ms())


# --- checking and reporting ----------------------------------------------------------------------------
def verdict(c: Client, last_seq: int) -> str | None:
    """None when the client got 1..last_seq exactly once each, in order; else what was wrong."""
    if c.error:
        return c.error
    seqs = [e["seq"] for e, _ in c.received]
    if seqs != list(range(1, last_seq + 1)):
        missing = sorted(set(range(1, last_seq + 1)) - set(seqs))
        return f"got {len(seqs)} events, missing {missing[:5]}{'...' if len(missing) > 5 else ''}, in order: {seqs == sorted(seqs)}"
    if not c.ended:
        return "stream did not end after the terminal status"
    return None


async def bench(port: int, job_id: str, args) -> tuple[list[Client], int, float, str]:
    clients = [Client("sse" if i % 2 == 0 else "ws") for i in range(args.clients)]
    tasks = []
    for i, c in enumerate(clients):
        tasks.append(asyncio.create_task(run_client(port, job_id, c)))
        if i % 50 == 49:
            await asyncio.sleep(0.05)  # connect in waves, as a crowd opening a page would
    started = time.perf_counter()
    try:
        await asyncio.wait_for(asyncio.gather(*(c.connected.wait() for c in clients)), args.connect_timeout)
    except asyncio.TimeoutError:
        pass
    connect_s = time.perf_counter() - started
    starved = [(c, t) for c, t in zip(clients, tasks) if not c.connected.is_set()]
    for c, t in starved:  # waiting in gunicorn's queue: give up on them so the run ends
        c.error = c.error or f"not served within {args.connect_timeout:g} s (all stream threads busy?)"
        t.cancel()
    probe = Connection(port)
    probe_started = time.perf_counter()
    try:  # can anything else be served while the streams are open?
        status, _ = await probe.get(f"/api/transcribe/status/{job_id}", timeout=5)
        probe_result = f"HTTP {status} in {(time.perf_counter() - probe_started) * 1000:.0f} ms"
    except (asyncio.TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
        probe_result = f"no answer within 5 s ({type(exc).__name__})"
    await probe.close()
    pids = gunicorn_pids(args.web_pid)
    cpu_before = cpu_seconds(pids)
    await asyncio.to_thread(publish_events, job_id, count=args.events, rate=args.rate)
    args.server_cpu_s = cpu_seconds(pids) - cpu_before
    _, pending = await asyncio.wait(tasks, timeout=60)
    for t in pending:
        t.cancel()
    for c in clients:
        if not c.ended and not c.error:
            c.error = "stream still open 60 s after the terminal event"
    return clients, len(clients) - len(starved), connect_s, probe_result


def main() -> int:
    processes, threads = procfile_web_shape()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 100 clients, 20 events at 10/s")
    parser.add_argument("--clients", type=int, default=500, help="stream clients, half SSE, half WebSocket (default 500)")
    parser.add_argument("--events", type=int, default=100, help="segment events published (default 100)")
    parser.add_argument("--rate", type=float, default=5.0, help="events per second (default 5)")
    parser.add_argument("--connect-timeout", type=float, default=30, help="seconds for every client to be served (default 30)")
    parser.add_argument("--processes", type=int, default=int(os.environ.get("PARLEY_WEB_PROCESSES", processes)),
                        help=f"gunicorn processes (default: PARLEY_WEB_PROCESSES or the Procfile's {processes})")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("PARLEY_WEB_THREADS", threads)),
                        help=f"gthreads per process (default: PARLEY_WEB_THREADS or the Procfile's {threads})")
    args = parser.parse_args()
    if args.quick:
        args.clients, args.events, args.rate = 100, 20, 10.0

    with tempfile.TemporaryDirectory(prefix="parley-bench-fanout-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "redis").mkdir()
        redis = RedisServer(tmp / "redis")
        redis.start()
        database_url = f"sqlite:///{tmp / 'data' / 'parley.db'}"
        stack = ProductionStack(tmp, redis, database_url, processes=args.processes, threads=args.threads,
                                PARLEY_RATE_LIMIT="1000000 per minute")
        try:
            stack.start_web()
            # services.events publishes with this process's settings: point them at the stack.
            os.environ.update(REDIS_URL=stack.env["REDIS_URL"], DATABASE_URL=database_url)
            from models import init_db
            init_db(database_url)
            job_id = create_job()
            capacity = args.processes * args.threads
            print(f"web: gunicorn gthread {args.processes} processes x {args.threads} threads = {capacity} request threads; "
                  f"{args.clients} clients ({args.clients - args.clients // 2} SSE, {args.clients // 2} WebSocket); "
                  f"{args.events} segment events at {args.rate:g}/s, published via services.events.record+publish "
                  f"on a job row inserted with peewee (no worker)")
            args.web_pid = stack.web.proc.pid
            clients, connected, connect_s, probe_result = asyncio.run(bench(stack.port, job_id, args))
            last_seq = args.events + 2
            print(f"\nconnected: {connected}/{args.clients} within {connect_s:.1f} s; "
                  f"a status request while the streams were open: {probe_result}")
            print(f"{'stream':<10} {'clients':>7} {'complete+ordered':>17} {'events':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
            failures = {}
            all_ok = True
            for kind in ("sse", "ws"):
                group = [c for c in clients if c.kind == kind]
                good = [c for c in group if verdict(c, last_seq) is None]
                lat = [(t - e["bench_created"]) * 1000 for c in group if not c.error
                       for e, t in c.received if "bench_created" in e]
                all_ok &= len(good) == len(group)
                for c in group:
                    problem = verdict(c, last_seq)
                    if problem:
                        failures[f"{kind}: {problem}"] = failures.get(f"{kind}: {problem}", 0) + 1
                print(f"{kind:<10} {len(group):>7} {len(good):>17} {len(lat):>7} {pct(lat, 50):>8.1f} {pct(lat, 99):>8.1f} "
                      f"{max(lat, default=float('nan')):>8.1f}")
            delivered = sum(1 for c in clients if not c.error for e, _ in c.received if e["seq"] > 1)
            print(f"web processes' CPU while publishing: {args.server_cpu_s:.1f} s = "
                  f"{args.server_cpu_s * 1e6 / max(1, delivered):.0f} us per delivered event, "
                  f"{args.server_cpu_s / (args.events / args.rate):.2f} of {os.cpu_count()} cores busy on average")
            for problem, n in sorted(failures.items(), key=lambda kv: -kv[1])[:6]:
                print(f"  {n} x {problem}")
            print(f"\ntarget: {args.clients} clients each get all {last_seq} events in order -> "
                  f"{'MET' if all_ok else 'MISSED'}")
            if capacity < args.clients:
                print(f"note: {args.clients} open streams need >= {args.clients} gunicorn threads plus headroom for "
                      f"ordinary requests; this run had {capacity}")
        finally:
            stack.stop()
            redis.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
