#!/usr/bin/env python
"""Benchmark: thousands of clients on one job's SSE and WebSocket streams, with the status and session-list API
polled meanwhile; every event to every client, in order.

Each phase starts a real stack (redis-server + gunicorn with the Procfile's `web:` flags, see api_latency.py),
seeds 200 sessions and 20 jobs and creates one more job to stream by inserting rows with peewee (no worker
runs). Then:

1. the clients connect, half to GET /api/transcribe/events/<job> (SSE), half to /api/transcribe/live/<job>
   (WebSocket), in waves of 50; a client counts as connected once it received the job's first event (the
   server registers a stream before it reads the log, so from then on nothing is missed);
2. this script publishes `--events` segment events at `--rate` per second exactly as a worker does:
   services.events.record() into the job's log, then services.events.publish() on the job's Redis channel.
   Each payload carries `bench_created` (perf_counter just before record()); then a terminal status
   event (events.emit_status) ends every stream. Meanwhile `--api-clients` clients poll
   GET /api/transcribe/status/<random job> and GET /api/sessions, each once per `--api-interval` seconds:
   half of them in a process of their own, which measures the server, and half in this process beside the
   stream clients, whose event loop is busy reading every event thousands of times (their latencies hold that
   wait too; shown to tell the two apart). The API target is judged on the pollers in their own process;
3. every client must receive sequence numbers 1..N with none missing, repeated or out of order.

Delivery latency = receive time - `bench_created` (same process, same clock), so it includes the log
write, Redis pub/sub, the web process's hub, the stream's greenlet or thread and the client's parsing.

Phases, each on a fresh stack in the same run (`--phases`): by default gunicorn gthread 2 x `--threads`
(the shape before gevent) and the Procfile's shape (gevent) with the same number of clients, 3/4 of
gthread's threads, then the Procfile's shape with `--clients`, first with PARLEY_DIRECT_WRITES=0
(`gevent-queue`: each event reaches each stream through its own greenlet, the shape before the event hub
wrote into the sockets itself), then as it ships. gthread holds one thread per open stream
for the stream's whole life, so it cannot hold thousands; its quarter of threads left over serves the API
polls. Besides each phase's CPU time, the table shows how long the web processes' threads were runnable
but waited for a CPU: on a machine shared with other work that wait, not the server, sets the latencies.

Clients are asyncio tasks speaking HTTP/1.1 (chunked SSE) and RFC 6455 frames directly
(tests/stream_clients.py), in this one process on the same machine as the server: what they cost is CPU
the server does not get. They read `seq` and `bench_created` with a regular expression, not a JSON parser.
Exits non-zero only when the benchmark itself fails, never on a missed target.

    .venv/bin/python scripts/bench/fanout.py [--quick] [--clients 5000] [--events 40] [--rate 2]
        [--api-clients 20] [--api-interval 0.5] [--threads 64] [--no-baseline | --phases gthread:96,gevent:5000]
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_latency import (Tally, client as api_client, cpu_seconds, gunicorn_pids, load_in_own_process,  # noqa: E402
                         pct, procfile_web, ProductionStack, seed)
from benchlib import host_line, table  # noqa: E402
from conftest import RedisServer  # noqa: E402
from stream_clients import StreamClient, allow_open_files, connect_all  # noqa: E402

WORDS = ("so I think what we talked about last week still holds and the plan for the next few days "
         "is to keep the routine simple and write down what happens").split()
TARGET_DELIVERY_P99_MS, TARGET_API_P99_MS = 500.0, 50.0


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
            words = [{"start": i * 4.0 + k * 0.3, "end": i * 4.0 + k * 0.3 + 0.25, "word": w, "probability": 0.93}
                     for k, w in enumerate(text.split())]
            payload = {"segment": {"id": i, "start": i * 4.0, "end": i * 4.0 + 3.5, "text": text,
                                   "speaker": "SPEAKER_00", "words": words},
                       "bench_created": time.perf_counter()}
            events.publish(events.record(job_id, "segment", payload))
        events.emit_status(Job.get_by_id(job_id), status="completed", progress=100.0, message="Done",
                           finished_at_ms=now_ms())


def resident_mb(pid: int) -> float:
    line = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def run_queue_seconds(pids: list[int]) -> float:
    """Seconds the processes' threads spent runnable but waiting for a CPU (/proc/<pid>/task/*/schedstat,
    second field); on a machine others share, what the latencies wait for besides the server's own work."""
    total = 0
    for pid in pids:
        for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            try:
                total += int(stat.read_text().split()[1])
            except (OSError, IndexError):  # a thread that ended meanwhile
                pass
    return total / 1e9


# --- one phase: a stack, its streams and the API polls meanwhile ---------------------------------------
@dataclass
class Phase:
    shape: str
    clients: int
    connected: int = 0
    connect_s: float = 0.0
    complete: int = 0
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    api: Tally = field(default_factory=Tally)  # the pollers in their own process
    api_beside: Tally = field(default_factory=Tally)  # the pollers in the load generator's event loop
    server_cpu_s: float = 0.0
    server_rss_mb: float = 0.0  # the web processes' resident memory with every client connected
    server_wait_s: float = 0.0  # the web processes' threads, runnable but waiting for a CPU (a busy machine)
    client_cpu_s: float = 0.0  # this process: the load generator
    seconds: float = 0.0  # from the first event published to the last stream's end
    failures: dict[str, int] = field(default_factory=dict)


async def stream_phase(port: int, job_id: str, job_ids: list[str], args, phase: Phase, pids: list[int],
                       pollers_apart: ProcessPoolExecutor) -> None:
    clients = [StreamClient("sse" if i % 2 == 0 else "ws") for i in range(phase.clients)]
    started = time.perf_counter()
    tasks = await connect_all(port, job_id, clients, timeout=args.connect_timeout)
    phase.connect_s = time.perf_counter() - started
    for c, t in zip(clients, tasks):
        if not c.connected.is_set():  # waiting in gunicorn's queue: give up on them so the run ends
            c.error = c.error or f"not served within {args.connect_timeout:g} s (all stream threads busy?)"
            t.cancel()
    phase.connected = sum(1 for c in clients if c.connected.is_set())
    phase.server_rss_mb = sum(resident_mb(pid) for pid in pids)
    cpu_before, wait_before = cpu_seconds(pids), run_queue_seconds(pids)
    client_before, publish_started = time.process_time(), time.perf_counter()
    seconds = args.events / args.rate
    until = time.perf_counter() + seconds
    rng = random.Random(7)
    beside = args.api_clients // 2
    apart = asyncio.wrap_future(pollers_apart.submit(
        load_in_own_process, port, job_ids, clients=args.api_clients - beside, seconds=seconds,
        interval=args.api_interval, seed_=rng.randrange(10**6)))
    pollers = [asyncio.create_task(api_client(port, job_ids, phase.api_beside, until=until, interval=args.api_interval,
                                              rng=random.Random(rng.random()))) for _ in range(beside)]
    await asyncio.to_thread(publish_events, job_id, count=args.events, rate=args.rate)
    await asyncio.gather(*pollers)
    phase.api = await apart
    _, pending = await asyncio.wait(tasks, timeout=60)
    phase.server_cpu_s = cpu_seconds(pids) - cpu_before
    phase.server_wait_s = run_queue_seconds(pids) - wait_before
    phase.client_cpu_s = time.process_time() - client_before
    phase.seconds = time.perf_counter() - publish_started
    for t in pending:
        t.cancel()
    last_seq = args.events + 2
    for c in clients:
        if not c.ended and not c.error:
            c.error = "stream still open 60 s after the terminal event"
        problem = c.problem(1, last_seq)
        if problem:
            key = f"{c.kind}: {problem}"
            phase.failures[key] = phase.failures.get(key, 0) + 1
        else:
            phase.complete += 1
        if not c.error:
            phase.latencies_ms.setdefault(c.kind, []).extend(c.latencies_ms)


def run_phase(redis: RedisServer, args, *, worker_class: str, clients: int) -> Phase:
    from models import migrate

    with tempfile.TemporaryDirectory(prefix="parley-bench-fanout-") as tmp_name:
        tmp = Path(tmp_name)
        database_url = f"sqlite:///{tmp / 'data' / 'parley.db'}"
        worker_class, _, variant = worker_class.partition("-")  # gevent-queue: without the hub's direct writes
        stack = ProductionStack(tmp, redis, database_url, processes=args.processes, threads=args.threads,
                                worker_class=worker_class, PARLEY_RATE_LIMIT="1000000 per minute",
                                PARLEY_DIRECT_WRITES="0" if variant == "queue" else "1")
        phase = Phase(stack.shape.describe() + (", events through each stream's greenlet" if variant == "queue"
                                                else ""), clients)
        try:
            # services.events publishes with this process's settings (read once: every phase's stack uses the
            # same redis-server, and pub/sub channels span its database numbers).
            os.environ.update(REDIS_URL=stack.env["REDIS_URL"], DATABASE_URL=database_url)
            # Seeded before the web tier starts: rows written while its second process still boots (and
            # writes its own start-up rows) may meet SQLite's "database is locked".
            migrate(database_url)
            job_ids = seed(database_url, sessions=200, jobs=20, rng=random.Random(1))
            job_id = create_job()
            stack.start_web()
            print(f"phase: {phase.shape}, {clients} clients ({clients - clients // 2} SSE, {clients // 2} WebSocket), "
                  f"{args.api_clients} API pollers", flush=True)
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pollers_apart:
                pollers_apart.submit(int).result()  # started (and its imports done) before the clients connect
                asyncio.run(stream_phase(stack.port, job_id, job_ids, args, phase, gunicorn_pids(stack.web.proc.pid),
                                         pollers_apart))
        finally:
            stack.stop()
    return phase


def report(phases: list[Phase], args) -> None:
    rows = []
    for p in phases:
        lat = p.latencies_ms
        both = lat.get("sse", []) + lat.get("ws", [])
        rows.append([p.shape, p.clients, f"{p.connected} in {p.connect_s:.0f} s", f"{p.server_rss_mb:.0f}", p.complete,
                     f"{pct(lat.get('sse', []), 50):.0f} / {pct(lat.get('sse', []), 99):.0f}",
                     f"{pct(lat.get('ws', []), 50):.0f} / {pct(lat.get('ws', []), 99):.0f}",
                     f"{max(both, default=0):.0f}",
                     f"{pct(p.api.latencies['status'], 50):.0f} / {pct(p.api.latencies['status'], 99):.0f}",
                     f"{pct(p.api.latencies['sessions'], 50):.0f} / {pct(p.api.latencies['sessions'], 99):.0f}",
                     f"{pct(p.api_beside.latencies['status'], 99):.0f} / "
                     f"{pct(p.api_beside.latencies['sessions'], 99):.0f}",
                     sum(len(v) for v in p.api.errors.values()) + sum(len(v) for v in p.api_beside.errors.values()),
                     f"{p.server_cpu_s:.1f} / {p.server_wait_s:.1f} / {p.client_cpu_s:.1f} in {p.seconds:.0f} s"])
    print("\n" + table(["web", "clients", "connected", "web RSS MB", "complete+ordered", "SSE p50/p99 ms",
                        "WS p50/p99 ms", "max ms", "status p50/p99 ms", "sessions p50/p99 ms",
                        "status / sessions p99 ms, pollers beside the stream clients", "API errors",
                        "CPU s: web / web threads waiting for a CPU / load generator"], rows))
    for p in phases:
        for problem, n in sorted(p.failures.items(), key=lambda kv: -kv[1])[:4]:
            print(f"  {p.shape}, {p.clients} clients: {n} x {problem}")
        for kind, errs in {**p.api.errors, **{f"{k} (beside)": v for k, v in p.api_beside.errors.items()}}.items():
            for message in sorted(set(errs))[:3]:
                print(f"  {p.shape}, {p.clients} clients: {kind} error: {message}")
    last = phases[-1]
    delivery = pct(last.latencies_ms.get("sse", []) + last.latencies_ms.get("ws", []), 99)
    api = max(pct(last.api.latencies["status"], 99), pct(last.api.latencies["sessions"], 99))
    met = (last.complete == last.clients and delivery < TARGET_DELIVERY_P99_MS and api < TARGET_API_P99_MS
           and not any(last.api.errors.values()) and not any(last.api_beside.errors.values()))
    print(f"\ntarget ({last.shape}, {last.clients} clients): every client gets all {args.events + 2} events in order, "
          f"delivery p99 < {TARGET_DELIVERY_P99_MS:g} ms, status and session-list p99 < {TARGET_API_P99_MS:g} ms -> "
          f"{last.complete}/{last.clients} complete, delivery p99 {delivery:.0f} ms, API p99 {api:.0f} ms: "
          f"{'MET' if met else 'MISSED'}")


def main() -> int:
    procfile = procfile_web()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: phases gthread:48,gevent:48,gevent:200; 10 events at 5/s")
    parser.add_argument("--clients", type=int, default=5000,
                        help="stream clients of the Procfile's shape, half SSE, half WebSocket (default 5000)")
    parser.add_argument("--phases", help="WORKER_CLASS:CLIENTS,... run in this order (default: "
                        "gthread:B,gevent:B,gevent:CLIENTS with B = 3/4 of gthread's threads)")
    parser.add_argument("--no-baseline", action="store_true", help="only the Procfile's shape with --clients")
    parser.add_argument("--events", type=int, default=40, help="segment events published (default 40)")
    parser.add_argument("--rate", type=float, default=2.0, help="events per second (default 2)")
    parser.add_argument("--api-clients", type=int, default=20, help="status + session-list pollers (default 20)")
    parser.add_argument("--api-interval", type=float, default=0.5,
                        help="seconds between one poller's cycles (default 0.5)")
    parser.add_argument("--connect-timeout", type=float, default=90,
                        help="seconds for every client to be served (default 90)")
    processes = int(os.environ.get("PARLEY_WEB_PROCESSES", procfile.processes))
    parser.add_argument("--processes", type=int, default=processes,
                        help=f"gunicorn processes (default: PARLEY_WEB_PROCESSES or the Procfile's "
                        f"{procfile.processes})")
    parser.add_argument("--threads", type=int, default=64, help="gthread phases: threads per process (default 64)")
    args = parser.parse_args()
    baseline = args.processes * args.threads * 3 // 4
    if args.quick:
        args.events, args.rate, args.phases = 10, 5.0, args.phases or "gthread:48,gevent:48,gevent-queue:200,gevent:200"
    if args.phases:
        plan = [(wc, int(n)) for wc, n in (item.split(":") for item in args.phases.split(","))]
    elif args.no_baseline:
        plan = [(procfile.worker_class, args.clients)]
    else:
        shipped = procfile.worker_class
        plan = [("gthread", baseline), (shipped, baseline), (f"{shipped}-queue", args.clients), (shipped, args.clients)]
    allow_open_files(max(n for _, n in plan) + 1000)

    print(host_line())
    print(f"{args.events} segment events at {args.rate:g}/s per phase, published via services.events.record+publish "
          f"on a job row inserted with peewee (no worker); the load generator runs on the same machine")
    with tempfile.TemporaryDirectory(prefix="parley-bench-fanout-redis-") as redis_dir:
        redis = RedisServer(Path(redis_dir))
        redis.start()
        try:
            phases = [run_phase(redis, args, worker_class=wc, clients=n) for wc, n in plan]
        finally:
            redis.stop()
    report(phases, args)
    print(f"host after the run: {host_line().split(', ', 2)[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
