#!/usr/bin/env python
"""Benchmark: many short transcription jobs submitted at once to N worker processes; throughput and queue latency.

Starts a real stack (redis-server, gunicorn, `--workers` Dramatiq processes on the `asr` queue, production
broker settings) and submits short jobs (tests/audio/silence.mp3, 5 s, diarize=false: the engine finds no
speech, so a job is mostly queue, database and decode work). Times come from the job rows
(GET /api/transcribe/debug/<id>): created_at is written by the web tier just before it enqueues, started_at by
the worker as it takes the job, finished_at as it completes it.

1. idle pick-up: `--probes` jobs one at a time, each to idle workers: created_at -> started_at is the pure
   queue latency (web commit, Redis enqueue, the idle worker's poll, the job row read).
2. burst: `--jobs` jobs uploaded at once (`--clients` parallel uploads). Reported: jobs per minute (first
   created_at to last finished_at); the raw wait created_at -> started_at, which under a burst is mostly the
   backlog ahead of a job; and the dispatch gap, started_at - max(created_at, the same worker's previous
   finished_at): how long a job waited while a worker was free for it, i.e. the queue's own overhead.

Target: p50 enqueue -> start under 50 ms (checked on the idle pick-up and the burst's dispatch gap). A missed
target is reported, never an error: the exit status is non-zero only when the benchmark itself fails.

    .venv/bin/python scripts/bench/queue_throughput.py [--quick] [--jobs 200] [--workers 2] [--clients 8]
        [--probes 20] [--database-url URL]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from conftest import AUDIO, RedisServer, running_stack, wait_until  # noqa: E402
from benchlib import PRODUCTION_ENV, host_line, table  # noqa: E402

TARGET_P50_MS = 50.0
SHORT_CLIP = AUDIO / "silence.mp3"

# Production broker settings instead of the test harness's (dead-worker detection in 3 s, maintenance on
# every broker command), which would add Redis work to every fetch.
def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def submit(stack) -> str:
    answer = stack.upload(SHORT_CLIP, diarize="false")
    if answer.status_code != 200:
        raise RuntimeError(f"upload refused: {answer.status_code} {answer.text}")
    return answer.json()["job_id"]


def timings(stack, job_ids: list[str], *, timeout: float) -> list[dict]:
    """The job rows' times once every job is finished; a failed job is an error of the benchmark."""
    def all_done():
        jobs = stack.get("/api/transcribe/jobs", params={"limit": 500}).json()["jobs"]
        by_id = {j["job_id"]: j["status"] for j in jobs}
        return all(by_id.get(i) in ("completed", "failed") for i in job_ids)
    wait_until(all_done, timeout=timeout, interval=0.5, what=f"{len(job_ids)} jobs")
    rows = [stack.get(f"/api/transcribe/debug/{i}").json() for i in job_ids]
    failed = [r for r in rows if r["status"] != "completed"]
    if failed:
        raise RuntimeError(f"{len(failed)} jobs failed, e.g. {failed[0]['job_id']}: {failed[0]['error']}")
    return rows


def dispatch_gaps(rows: list[dict]) -> list[float]:
    """Per job: started_at - max(created_at, its worker's previous finished_at)."""
    gaps = []
    by_worker: dict[str, list[dict]] = {}
    for row in rows:
        by_worker.setdefault(row["worker"], []).append(row)
    for jobs in by_worker.values():
        jobs.sort(key=lambda r: r["started_at"])
        free_since = None
        for row in jobs:
            ready = row["created_at"] if free_since is None else max(row["created_at"], free_since)
            gaps.append(row["started_at"] - ready)
            free_since = row["finished_at"]
    return gaps


def ms_row(label: str, values: list[float]) -> list:
    ms = [1000 * v for v in values]
    return [label, len(ms), f"{percentile(ms, 50):.1f}", f"{percentile(ms, 90):.1f}", f"{percentile(ms, 99):.1f}",
            f"{max(ms):.1f}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 jobs, 5 probes")
    parser.add_argument("--jobs", type=int, default=200, help="jobs in the burst (default 200)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes on the asr queue (default 2)")
    parser.add_argument("--clients", type=int, default=8, help="parallel uploads in the burst (default 8)")
    parser.add_argument("--probes", type=int, default=20, help="one-at-a-time jobs to idle workers (default 20)")
    parser.add_argument("--threads", type=int, default=1, help="PARLEY_CPU_THREADS of each worker (default 1)")
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.probes = 20, 5

    print(host_line())
    tmp = Path(tempfile.mkdtemp(prefix="bench-queue-"))
    env = {**PRODUCTION_ENV, "PARLEY_CPU_THREADS": str(args.threads), "PARLEY_DEVICE": "cpu"}
    workers = [(f"asr-{n + 1}", "asr") for n in range(args.workers)]
    redis = RedisServer(tmp)
    redis.start()
    try:
        with running_stack(tmp, redis, args.database_url, workers=workers, **env) as stack:
            # The first job of each worker process imports the engines it did not warm up; not queue time.
            timings(stack, [submit(stack) for _ in range(args.workers)], timeout=300)

            probes = []
            for _ in range(args.probes):
                time.sleep(1.5)  # long enough for the workers' fetch loops to back off to their idle poll
                job_id = submit(stack)
                probes += timings(stack, [job_id], timeout=120)

            started = time.monotonic()
            with ThreadPoolExecutor(args.clients) as pool:
                job_ids = list(pool.map(lambda _: submit(stack), range(args.jobs)))
            upload_s = time.monotonic() - started
            burst = timings(stack, job_ids, timeout=3600)
    finally:
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    span = max(r["finished_at"] for r in burst) - min(r["created_at"] for r in burst)
    per_minute = 60 * len(burst) / span
    job_s = [r["finished_at"] - r["started_at"] for r in burst]
    print(f"burst: {len(burst)} jobs uploaded in {upload_s:.1f} s by {args.clients} clients, all done "
          f"{span:.1f} s after the first was created; {args.workers} workers")
    print()
    print(table(["measure", "value"], [
        ["jobs per minute", f"{per_minute:.0f}"],
        ["job run time (started..finished) p50 / p99 ms",
         f"{1000 * percentile(job_s, 50):.0f} / {1000 * percentile(job_s, 99):.0f}"],
    ]))
    print()
    rows = [ms_row("idle pick-up: created -> started", [r["started_at"] - r["created_at"] for r in probes]),
            ms_row("burst: created -> started (incl. backlog)", [r["started_at"] - r["created_at"] for r in burst]),
            ms_row("burst: dispatch gap (worker free -> started)", dispatch_gaps(burst))]
    print(table(["latency", "n", "p50 ms", "p90 ms", "p99 ms", "max ms"], rows))

    idle_p50 = 1000 * percentile([r["started_at"] - r["created_at"] for r in probes], 50)
    gap_p50 = 1000 * percentile(dispatch_gaps(burst), 50)
    print()
    print(table(["measure", "value", "target", "verdict"], [
        ["idle pick-up p50", f"{idle_p50:.1f} ms", f"< {TARGET_P50_MS:.0f} ms",
         "met" if idle_p50 < TARGET_P50_MS else "MISSED"],
        ["burst dispatch gap p50", f"{gap_p50:.1f} ms", f"< {TARGET_P50_MS:.0f} ms",
         "met" if gap_p50 < TARGET_P50_MS else "MISSED"],
    ]))
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
