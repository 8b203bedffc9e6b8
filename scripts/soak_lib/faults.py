"""The soak's faults on a schedule: kill -9 of workers, Redis and the web tier, and the database locked a while.

Nothing here restarts anything: the supervisor of scripts/start must bring every killed process back by
itself. Each fault waits (bounded) until the killed line runs again, so the next one finds a whole stack.
"""
from __future__ import annotations

import os
import random
import signal
import sqlite3
import threading
import time
from dataclasses import dataclass, field

from .stack import WORKERS, SoakStack


@dataclass(order=True)
class Fault:
    at_s: float
    kind: str = field(compare=False)  # kill_worker, restart_redis, restart_web, lock_db
    done_at_s: float | None = field(default=None, compare=False)
    detail: str = field(default="", compare=False)


def schedule(duration_s: float, rng: random.Random, *, lock_s: float) -> list[Fault]:
    """Worker kills every 30-90 s (closer in runs under 10 min, at least one), two Redis restarts (one under 5 min),
    one web restart, one database lock per 10 min (at least one); none in the last tenth of the load."""
    scale = 1.0 if duration_s >= 600 else max(duration_s / 600, 0.4)
    faults, t = [], rng.uniform(30, 90) * scale
    while t < duration_s * 0.9:
        faults.append(Fault(t, "kill_worker"))
        t += rng.uniform(30, 90) * scale
    if not faults:
        faults.append(Fault(duration_s * 0.2, "kill_worker"))
    redis_at = (0.3, 0.75) if duration_s >= 300 else (0.35,)
    faults += [Fault(duration_s * share, "restart_redis") for share in redis_at]
    faults.append(Fault(duration_s * 0.55, "restart_web"))
    locks = max(1, round(duration_s / 600))
    faults += [Fault(duration_s * (0.45 + 0.4 * i / locks), "lock_db", detail=f"{lock_s:.0f} s") for i in range(locks)]
    return sorted(faults)


class Chaos(threading.Thread):
    """Runs the schedule from the load's start; `faults` records when each one was done and on what."""

    def __init__(self, stack: SoakStack, faults: list[Fault], rng: random.Random, *, lock_s: float):
        super().__init__(daemon=True, name="chaos")
        self.stack, self.faults, self.rng, self.lock_s = stack, faults, rng, lock_s
        self.errors: list[str] = []
        self._halt = threading.Event()
        self.started = 0.0

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        self.started = time.monotonic()
        for fault in self.faults:
            if self._halt.wait(max(0.0, self.started + fault.at_s - time.monotonic())):
                return
            try:
                getattr(self, f"_{fault.kind}")(fault)
                fault.done_at_s = time.monotonic() - self.started
            except Exception as exc:  # a fault that could not be caused, or a line that did not come back
                self.errors.append(f"{fault.kind} at {fault.at_s:.0f}s: {type(exc).__name__}: {exc}")

    def _kill_line(self, line: str, pid: int) -> None:
        restarts = self.stack.lines()[line]["restarts"]
        os.kill(pid, signal.SIGKILL)
        self.stack.wait_running(line, restarts_above=restarts, timeout=120)

    def _kill_worker(self, fault: Fault) -> None:
        line = self.rng.choice(WORKERS)
        leader = self.stack.lines()[line]["pid"]  # the line's process group: the last resort
        # The Dramatiq process that runs the jobs is the main process's child: kill that one, as the OOM killer
        # would; Dramatiq's main process then exits and the supervisor restarts the line.
        pid = self.stack.job_process(line) or leader
        fault.detail = f"{line} pid {pid}"
        self._kill_line(line, pid)

    def _restart_redis(self, fault: Fault) -> None:
        pid = self.stack.lines()["redis"]["pid"]
        fault.detail = f"redis-server pid {pid}"
        self._kill_line("redis", pid)

    def _restart_web(self, fault: Fault) -> None:
        pid = self.stack.lines()["web"]["pid"]
        fault.detail = f"web master pid {pid}"
        self._kill_line("web", pid)

    def _lock_db(self, fault: Fault) -> None:
        holder = sqlite3.connect(self.stack.db_path, isolation_level=None, timeout=30)
        try:
            holder.execute("BEGIN EXCLUSIVE")  # as a long migration or a stuck process would
            self._halt.wait(self.lock_s)
            holder.execute("ROLLBACK")
        finally:
            holder.close()
