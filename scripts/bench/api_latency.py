#!/usr/bin/env python
"""Benchmark: status polling and session listing with many concurrent clients against the production web shape.

Starts a real stack (redis-server + gunicorn with the Procfile's `web:` flags: gevent workers,
PARLEY_WEB_PROCESSES x PARLEY_WEB_CONNECTIONS, default 2 x 5000; `--worker-class gthread` for the old
2 x 64 threads), seeds sessions and jobs by inserting rows straight into the stack's database with peewee
(faster than uploading, and the routes read the same rows), then runs:

0. a warm-up (`--warmup-seconds`, not counted): every gunicorn thread's first request is slow;
1. a baseline: one client alone (unloaded latency);
2. the load: `--clients` clients at once, each polling GET /api/transcribe/status/<id> of a random job and
   then GET /api/sessions, once per `--interval` seconds (a UI polling; `--interval 0` = back to back).

Clients are asyncio tasks on keep-alive HTTP/1.1 connections in this one process (lighter than a thread
per client, so the client adds little to the server's CPU on a small machine). Latency = request sent to
last body byte read. Any non-200 answer, timeout or broken connection is an error.

Target: p99 under 50 ms and zero errors under load. Exits non-zero only when the benchmark itself fails.

    .venv/bin/python scripts/bench/api_latency.py [--quick] [--clients 100] [--seconds 30] [--interval 1.0]
        [--sessions 200] [--jobs 20] [--baseline-seconds 10] [--database-url URL]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import requests  # noqa: E402
from conftest import VENV_BIN, Process, RedisServer, Stack, wait_until  # noqa: E402

TARGET_P99_MS = 50.0


@dataclass(frozen=True)
class WebShape:
    """How gunicorn runs the web tier: worker class, processes and the per-process concurrency."""

    worker_class: str = "gevent"  # gevent: a greenlet per connection; gthread: a thread per request or stream
    processes: int = 2
    threads: int = 64  # gthread only: requests (and open streams) one process serves at once
    connections: int = 5000  # gevent only: connections one process serves at once

    def flags(self) -> list[str]:
        per_process = (["--threads", str(self.threads)] if self.worker_class == "gthread"
                       else ["--worker-connections", str(self.connections)])
        return ["--worker-class", self.worker_class, "--workers", str(self.processes), *per_process]

    def describe(self) -> str:
        if self.worker_class == "gthread":
            return f"gunicorn gthread {self.processes} processes x {self.threads} threads"
        return f"gunicorn {self.worker_class} {self.processes} processes x {self.connections} connections"


def procfile_web() -> WebShape:
    """The shape the Procfile's `web:` line gives when no PARLEY_WEB_* variable is set."""
    line = next(l for l in (ROOT / "Procfile").read_text().splitlines() if l.startswith("web:"))
    number = lambda name, default: int(m[1]) if (m := re.search(name + r":-(\d+)", line)) else default  # noqa: E731
    worker_class = re.search(r"--worker-class\s+(\w+)", line)[1]
    return WebShape(worker_class, number("PARLEY_WEB_PROCESSES", 2), number("PARLEY_WEB_THREADS", 64),
                    number("PARLEY_WEB_CONNECTIONS", 1000))


def procfile_web_shape() -> tuple[int, int]:
    """(processes, threads) of the Procfile's `web:` line (threads: gthread's, 64 when it names none)."""
    shape = procfile_web()
    return shape.processes, shape.threads


class ProductionStack(Stack):
    """The test harness's Stack, but gunicorn starts with the Procfile's flags instead of the tests' 1 process.

    `worker_class` and `connections` default to the Procfile's.
    """

    def __init__(self, *args, processes: int, threads: int, worker_class: str | None = None,
                 connections: int | None = None, **kw):
        super().__init__(*args, **kw)
        procfile = procfile_web()
        self.shape = WebShape(worker_class or procfile.worker_class, processes, threads,
                              connections or procfile.connections)
        self.processes, self.threads = processes, threads

    def start_web(self) -> None:
        self.web = Process("web", [str(VENV_BIN / "gunicorn"), "--config", str(ROOT / "gunicorn.conf.py"),
                                   *self.shape.flags(), "--bind", f"127.0.0.1:{self.port}",
                                   "--graceful-timeout", "5", "--timeout", "120", "--no-control-socket",
                                   "web:create_app()"], {**self.web_env(), "PARLEY_PROCESS_NAME": "web"}, self.tmp)
        wait_until(self._healthy, timeout=90, what=f"web tier ({self.web.log_path})")

    def _healthy(self) -> bool:
        # Two processes importing the app on a busy machine may take longer than one probe's 2 s.
        try:
            return super()._healthy()
        except requests.RequestException:
            return False


def gunicorn_pids(master: int) -> list[int]:
    """The gunicorn master's pid and its workers'."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [master, *map(int, children)]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes used so far (/proc/<pid>/stat fields 14 and 15)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


# --- seeding -------------------------------------------------------------------------------------------
def seed(database_url: str, *, sessions: int, jobs: int, rng: random.Random) -> list[str]:
    """Insert `sessions` sessions and `jobs` jobs (on the newest sessions); returns the job ids."""
    from models import Job, Session, db, init_db
    from services import events

    init_db(database_url)
    names = ["Alex", "Sam", "Jordan", "Robin", "Kim", "Charlie", "Morgan", "Taylor"]
    statuses = ["completed"] * 8 + ["failed", "queued"]
    with db.connection_context(), db.atomic():
        rows = [{"file_name": f"session-{i:04d}.mp3", "client_name": rng.choice(names),
                 "session_name": f"Session {i}", "session_type": "individual", "therapy": "CBT",
                 "date": f"2025-{1 + i % 12:02d}-{1 + i % 28:02d}T12:00:00.000Z", "audio_path": f"{uuid.uuid4().hex}.mp3",
                 "audio_bytes": rng.randrange(1_000_000, 80_000_000), "status": rng.choice(statuses),
                 "duration": rng.randrange(600, 3600), "transcript_token_count": rng.randrange(2000, 12000)}
                for i in range(sessions)]
        for batch in range(0, len(rows), 100):
            Session.insert_many(rows[batch:batch + 100]).execute()
        newest = [s.id for s in Session.select(Session.id).order_by(Session.id.desc()).limit(jobs)]
        job_ids = []
        for n, session_id in enumerate(newest):
            done = n % 3 != 0
            job = Job.create(id=str(uuid.uuid4()), session=session_id, model_name="tiny.en",
                             status="completed" if done else "processing", progress=100.0 if done else 42.0,
                             message="Done" if done else "Transcribing chunk 3 of 7",
                             chunk_plan=[[i * 300.0, (i + 1) * 300.0] for i in range(7)], chunks_done=7 if done else 2,
                             chunk_progress=0.0 if done else 40.0)
            Session.update(whisper_job_id=job.id).where(Session.id == session_id).execute()
            events.record(job.id, "status", events.status_payload(job))
            job_ids.append(job.id)
    db.close()
    return job_ids


# --- the client ----------------------------------------------------------------------------------------
@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"status": [], "sessions": []})
    errors: dict[str, list[str]] = field(default_factory=lambda: {"status": [], "sessions": []})
    server_cpu_s: float = 0.0  # CPU time the web processes used during the phase


class Connection:
    """One keep-alive HTTP/1.1 connection; reconnects when the server closed an idle one (gunicorn keep-alive)."""

    def __init__(self, port: int):
        self.port = port
        self.reader = self.writer = None

    async def get(self, path: str, *, timeout: float) -> tuple[int, bytes]:
        for attempt in (1, 2):
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            self.writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n\r\n".encode())
            try:
                head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                await self.close()
                # Nothing read at all: the server had closed the idle connection; one fresh try.
                if attempt == 1 and (not isinstance(exc, asyncio.IncompleteReadError) or not exc.partial):
                    continue
                raise
            status = int(head.split(b" ", 2)[1])
            length = int(re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)[1])
            body = await asyncio.wait_for(self.reader.readexactly(length), timeout)
            if re.search(rb"(?i)\r\nconnection:\s*close", head):
                await self.close()
            return status, body
        raise AssertionError("unreachable")

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def client(port: int, job_ids: list[str], tally: Tally, *, until: float, interval: float,
                 rng: random.Random) -> None:
    conn = Connection(port)
    await asyncio.sleep(rng.uniform(0, interval))  # spread the clients over the first interval
    try:
        while time.perf_counter() < until:
            cycle_start = time.perf_counter()
            for kind, path in (("status", f"/api/transcribe/status/{rng.choice(job_ids)}"), ("sessions", "/api/sessions")):
                started = time.perf_counter()
                try:
                    status, body = await conn.get(path, timeout=10)
                    if status != 200:
                        tally.errors[kind].append(f"HTTP {status}: {body[:120]!r}")
                        continue
                    tally.latencies[kind].append((time.perf_counter() - started) * 1000)
                except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
                    tally.errors[kind].append(f"{type(exc).__name__}: {exc}")
                    await conn.close()
            await asyncio.sleep(max(0.0, interval - (time.perf_counter() - cycle_start)))
    finally:
        await conn.close()


async def run_load(port: int, job_ids: list[str], *, clients: int, seconds: float, interval: float, seed_: int,
                   pids: list[int]) -> Tally:
    tally = Tally()
    until = time.perf_counter() + seconds
    cpu_before = cpu_seconds(pids)
    await asyncio.gather(*(client(port, job_ids, tally, until=until, interval=interval, rng=random.Random(seed_ + i))
                           for i in range(clients)))
    tally.server_cpu_s = cpu_seconds(pids) - cpu_before
    return tally


def load_in_own_process(port: int, job_ids: list[str], *, clients: int, seconds: float, interval: float,
                        seed_: int) -> Tally:
    """run_load in a process of its own (a ProcessPoolExecutor's): its latencies then hold no wait for a busy
    event loop of the caller's (fanout.py's thousands of stream clients)."""
    return asyncio.run(run_load(port, job_ids, clients=clients, seconds=seconds, interval=interval, seed_=seed_,
                                pids=[]))


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def table(title: str, tally: Tally, seconds: float) -> tuple[str, float, int]:
    lines = [title, f"{'endpoint':<10} {'requests':>9} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'mean ms':>8} {'errors':>7}"]
    worst_p99, errors = 0.0, 0
    for kind, lat in tally.latencies.items():
        errs = len(tally.errors[kind])
        errors += errs
        worst_p99 = max(worst_p99, pct(lat, 99) if lat else float("inf"))
        lines.append(f"{kind:<10} {len(lat):>9} {len(lat) / seconds:>7.1f} {pct(lat, 50):>8.1f} {pct(lat, 99):>8.1f} "
                     f"{max(lat, default=float('nan')):>8.1f} {statistics.fmean(lat) if lat else float('nan'):>8.1f} {errs:>7}")
    answered = sum(len(v) for v in tally.latencies.values())
    lines.append(f"web processes' CPU: {tally.server_cpu_s:.1f} s = {tally.server_cpu_s * 1000 / max(1, answered):.1f} ms per "
                 f"request, {tally.server_cpu_s / seconds:.2f} of {os.cpu_count()} cores busy on average")
    return "\n".join(lines), worst_p99, errors


def main() -> int:
    procfile = procfile_web()
    processes, threads = procfile.processes, procfile.threads
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 clients, 5 s, 50 sessions")
    parser.add_argument("--worker-class", choices=("gevent", "gthread"), default=procfile.worker_class,
                        help=f"gunicorn worker class (default: the Procfile's {procfile.worker_class})")
    parser.add_argument("--clients", type=int, default=100, help="concurrent clients under load (default 100)")
    parser.add_argument("--seconds", type=float, default=30, help="duration of the load phase (default 30)")
    parser.add_argument("--baseline-seconds", type=float, default=10, help="duration of the 1-client baseline (default 10)")
    parser.add_argument("--warmup-seconds", type=float, default=3, help="uncounted load before measuring (default 3)")
    parser.add_argument("--interval", type=float, default=1.0,
                        help="seconds between one client's polls (status + sessions); 0 = back to back (default 1.0)")
    parser.add_argument("--sessions", type=int, default=200, help="sessions seeded (default 200)")
    parser.add_argument("--jobs", type=int, default=20, help="jobs seeded; status polls pick one at random (default 20)")
    parser.add_argument("--processes", type=int, default=int(os.environ.get("PARLEY_WEB_PROCESSES", processes)),
                        help=f"gunicorn processes (default: PARLEY_WEB_PROCESSES or the Procfile's {processes})")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("PARLEY_WEB_THREADS", threads)),
                        help=f"gthreads per process (default: PARLEY_WEB_THREADS or the Procfile's {threads})")
    parser.add_argument("--database-url", help="database for the stack (default: a fresh SQLite file)")
    args = parser.parse_args()
    if args.quick:
        args.clients, args.seconds, args.baseline_seconds, args.sessions, args.jobs = 20, 5, 3, 50, 10

    with tempfile.TemporaryDirectory(prefix="parley-bench-api-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "redis").mkdir()
        redis = RedisServer(tmp / "redis")
        redis.start()
        database_url = args.database_url or f"sqlite:///{tmp / 'data' / 'parley.db'}"
        stack = ProductionStack(tmp, redis, database_url, processes=args.processes, threads=args.threads,
                                worker_class=args.worker_class, PARLEY_RATE_LIMIT="1000000 per minute")
        try:
            stack.start_web()
            job_ids = seed(database_url, sessions=args.sessions, jobs=args.jobs, rng=random.Random(1))
            size = len(stack.get("/api/sessions").content)
            print(f"web: {stack.shape.describe()}; database "
                  f"{database_url.split(':', 1)[0]}; {args.sessions} sessions (GET /api/sessions = {size / 1024:.0f} KiB), "
                  f"{len(job_ids)} jobs; seeded by direct peewee inserts")
            pids = gunicorn_pids(stack.web.proc.pid)
            # Warm-up, not counted: each gunicorn thread's first request pays for imports and connections.
            asyncio.run(run_load(stack.port, job_ids, clients=args.clients, seconds=args.warmup_seconds,
                                 interval=args.interval, seed_=500, pids=pids))
            base = asyncio.run(run_load(stack.port, job_ids, clients=1, seconds=args.baseline_seconds,
                                        interval=min(args.interval, 0.2), seed_=0, pids=pids))
            text, _, base_errors = table(f"\nbaseline: 1 client, {args.baseline_seconds:g} s", base, args.baseline_seconds)
            print(text)
            load = asyncio.run(run_load(stack.port, job_ids, clients=args.clients, seconds=args.seconds,
                                        interval=args.interval, seed_=1000, pids=pids))
            text, worst_p99, errors = table(f"\nload: {args.clients} clients, {args.seconds:g} s, "
                                            f"one poll cycle per client every {args.interval:g} s", load, args.seconds)
            print(text)
            for kind, errs in load.errors.items():
                for message in sorted(set(errs))[:5]:
                    print(f"  {kind} error: {message}")
            ok = worst_p99 < TARGET_P99_MS and errors == 0
            print(f"\ntarget: p99 < {TARGET_P99_MS:g} ms and 0 errors under load -> worst p99 {worst_p99:.1f} ms, "
                  f"{errors} errors: {'MET' if ok else 'MISSED'}")
        finally:
            stack.stop()
            redis.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
