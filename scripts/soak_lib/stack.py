"""The stack under soak: scripts/start (the real supervisor) on a temporary data directory, with HTTP helpers."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from conftest import free_port, wait_until  # tests/conftest.py, on sys.path (scripts/soak)
from parley.supervisor import group_members, read_states

ROOT = Path(__file__).resolve().parents[2]
LINES = ("redis", "web", "asr", "asr_quick", "io", "llm")
WORKERS = ("asr", "asr_quick", "io", "llm")
GEMMA = "gemma-3-270m-q4_k_m.gguf"
# Answers that a client meets while a fault is on and should retry after a moment: Redis or the database down
# (503), the web tier restarting (no connection, 502/504 from nothing in between here, but harmless to list).
RETRYABLE = (502, 503, 504)


@dataclass
class ProcessFigures:
    """One Procfile line's processes at one moment: pids, resident memory and open file descriptors summed."""

    line: str
    pids: list[int] = field(default_factory=list)
    rss_mib: float = 0.0
    fds: int = 0
    restarts: int = 0


def _rss_kib(pid: int) -> int:
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith("VmRSS:"):
            return int(row.split()[1])
    return 0


class SoakStack:
    """scripts/start in its own session, on its own data directory, Redis port and web port."""

    def __init__(self, tmp: Path, *, model_dir: Path, extra_env: dict[str, str] | None = None):
        self.tmp = tmp
        self.data_dir = tmp / "data"
        self.port, self.redis_port = free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "PARLEY_DATA_DIR": str(self.data_dir), "PARLEY_MODEL_DIR": str(model_dir),
            "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0", "PARLEY_BIND": f"127.0.0.1:{self.port}",
            "PARLEY_WEB_PROCESSES": "1", "PARLEY_CPU_THREADS": "2",
            "PARLEY_CHUNK_SECONDS": "30", "PARLEY_RATE_LIMIT": "off", "PARLEY_HEARTBEAT_S": "2",
            # A killed worker's message goes back to its queue within seconds, and a lost one is re-sent soon.
            "PARLEY_BROKER_HEARTBEAT_TIMEOUT_MS": "3000", "PARLEY_BROKER_MAINTENANCE_CHANCE": "1000000",
            "PARLEY_RECONCILE_AFTER_S": "20", "PARLEY_RECONCILE_EVERY_S": "3",
            "PARLEY_RESTART_MAX_S": "3", "PARLEY_RESTART_STABLE_S": "8",
            # Gemma 270M on two busy cores: small contexts and short answers keep LLM jobs to seconds; one thread,
            # as llama.cpp's threads wait for each other spinning, which costs most when the cores are shared.
            "PARLEY_LLM_THREADS": "1", "PARLEY_LLM_DEFAULT_CONTEXT": "2048", "PARLEY_CHAT_MAX_TOKENS": "16",
            "PARLEY_CHAT_WAIT_S": "60", "PARLEY_RETRANSLATE_WAIT_S": "30",
            "PARLEY_ANALYSIS_MAP_TOKENS": "16", "PARLEY_ANALYSIS_REDUCE_TOKENS": "24",
            "PARLEY_BOOTSTRAP_MODELS": "tiny.en gemma-3-270m", "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
        for name in ("DATABASE_URL", "PARLEY_PROCFILE", "PROMETHEUS_MULTIPROC_DIR", "PARLEY_LOG_DIR"):
            self.env.pop(name, None)
        self.log_path = tmp / "start.log"
        self.proc: subprocess.Popen | None = None

    @property
    def db_path(self) -> Path:
        return self.data_dir / "parley.db"

    def start(self) -> None:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([str(ROOT / "scripts" / "start")], cwd=ROOT, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_up(self, timeout: float = 600) -> None:
        """Every line running and every worker's heartbeat seen by the web tier (it is ready for work then)."""
        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"scripts/start exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                containers = {c["name"]: c for c in self.get("/api/docker/status", timeout=5).json()["containers"]}
            except (requests.RequestException, ValueError, KeyError):
                return False
            return all(containers.get(f"parley-worker-{w}", {}).get("state") == "running" for w in WORKERS)
        wait_until(up, timeout=timeout, what=f"the stack up ({self.log_path})")

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    # --- processes ----------------------------------------------------------------------------------
    def lines(self) -> dict[str, dict]:
        """The supervisor's own view of each Procfile line (its state file): pid (= process group), restarts."""
        return read_states(self.data_dir)

    def job_process(self, line: str) -> int | None:
        """The Dramatiq worker process that runs a worker line's jobs: the dramatiq process whose parent is the
        line's dramatiq main process (the line itself may be a shell running it; a job's ffmpeg is neither)."""
        pgid = self.lines().get(line, {}).get("pid")
        parents, dramatiq = {}, set()
        for pid in group_members(pgid) if pgid else []:
            try:
                parents[pid] = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
                if b"dramatiq" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 2)[1]:
                    dramatiq.add(pid)
            except (OSError, ValueError, IndexError):
                continue
        workers = [pid for pid in dramatiq if parents.get(pid) in dramatiq]
        return max(workers) if workers else None

    def figures(self) -> dict[str, ProcessFigures]:
        out = {}
        for line, state in self.lines().items():
            fig = ProcessFigures(line, restarts=state.get("restarts", 0))
            for pid in group_members(state["pid"]) if state.get("pid") else []:
                try:
                    fig.rss_mib += _rss_kib(pid) / 1024
                    fig.fds += len(os.listdir(f"/proc/{pid}/fd"))
                    fig.pids.append(pid)
                except OSError:
                    continue  # it ended between the listing and the reading
            out[line] = fig
        return out

    def wait_running(self, line: str, *, restarts_above: int, timeout: float = 120) -> None:
        wait_until(lambda: (s := self.lines().get(line, {})).get("state") == "running"
                   and s.get("restarts", 0) > restarts_above, timeout=timeout, interval=0.2, what=f"{line} back")

    # --- HTTP ---------------------------------------------------------------------------------------
    def get(self, path: str, **kw) -> requests.Response:
        return requests.get(self.base + path, timeout=kw.pop("timeout", 30), **kw)

    def post(self, path: str, **kw) -> requests.Response:
        return requests.post(self.base + path, timeout=kw.pop("timeout", 60), **kw)

    def patient(self, method: str, path: str, *, give_up_s: float = 180, on_retry=None, timeout: float = 90,
                **kw) -> requests.Response:
        """One request, repeated while the stack answers as a fault would (no connection, 502-504) until it
        answers otherwise; `on_retry(reason)` counts each retry. Raises TimeoutError after `give_up_s`.
        Bodies must be bytes (files as (name, bytes)), so a retry sends them again whole."""
        deadline = time.monotonic() + give_up_s
        while True:
            try:
                response = requests.request(method, self.base + path, timeout=timeout, **kw)
                if response.status_code not in RETRYABLE:
                    return response
                reason = f"HTTP {response.status_code}: {_message(response)}"
            except requests.RequestException as exc:
                reason = type(exc).__name__
            if on_retry:
                on_retry(reason)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{method} {path}: still {reason} after {give_up_s:.0f}s")
            time.sleep(1.0)


def _message(response: requests.Response) -> str:
    try:
        return str(response.json().get("message", ""))[:60]
    except ValueError:
        return response.text[:60]
