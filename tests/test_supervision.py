"""The real `scripts/start` process tree survives kill -9 of each of its processes; crash loops and poison messages show.

One stack is started with scripts/start (bootstrap's fast path, migrations, `parley supervise`) on the
repository's own Procfile plus one extra worker line that can never start (its module does not exist),
in a fresh data directory with its own Redis port and web port. The tests run in file order against it:
each kills one kind of process with SIGKILL while work is under way, and checks that the other processes
kept their pids, that the API kept answering (503 only while Redis itself was down), that the killed one
was back within seconds, and that the work finished once. The model pull's "remote" is a local HTTP file
server (tests/test_model_pulls.py's), a boundary we can run here.
"""
from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from conftest import AUDIO, GEMMA, MODEL_DIR, ROOT, free_port, truth, wait_until
from helpers import wer
from parley.supervisor import group_members
from test_model_pulls import FileServer, make_gguf

BROKEN_LINE = ("asr_broken: env PARLEY_PROCESS_NAME=asr_broken .venv/bin/dramatiq jobs.no_such_module "
               "--processes 1 --threads 1 --queues asr_broken\n")
WORKERS = ("asr", "asr_quick", "io", "llm")


class StartedStack:
    """scripts/start running in its own session; HTTP helpers and the supervisor's view of each process."""

    def __init__(self, tmp: Path, *, ports: tuple[int, int] | None = None):
        self.tmp = tmp
        self.data_dir = tmp / "data"
        self.procfile = tmp / "Procfile"
        self.procfile.write_text((ROOT / "Procfile").read_text() + BROKEN_LINE)
        self.port, self.redis_port = ports or (free_port(), free_port())
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "PARLEY_PROCFILE": str(self.procfile), "PARLEY_DATA_DIR": str(self.data_dir),
            "PARLEY_MODEL_DIR": str(MODEL_DIR), "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "PARLEY_BIND": f"127.0.0.1:{self.port}", "PARLEY_WEB_PROCESSES": "1", "PARLEY_WEB_CONNECTIONS": "200",
            "PARLEY_CPU_THREADS": "2", "PARLEY_CHUNK_SECONDS": "30", "PARLEY_RATE_LIMIT": "100000 per minute",
            # A killed worker's message goes back to the queue within seconds, not a minute.
            "PARLEY_BROKER_HEARTBEAT_TIMEOUT_MS": "3000", "PARLEY_BROKER_MAINTENANCE_CHANCE": "1000000",
            "PARLEY_MAX_CRASHES": "2", "PARLEY_RESTART_MAX_S": "3", "PARLEY_RESTART_STABLE_S": "8",
            "PARLEY_LLM_THREADS": "2", "PARLEY_LLM_DEFAULT_CONTEXT": "2048", "PARLEY_CHAT_MAX_TOKENS": "160",
            "PARLEY_CHAT_WAIT_S": "120", "PYTHONUNBUFFERED": "1",
            "PARLEY_BOOTSTRAP_MODELS": "tiny.en gemma-3-270m",
        }
        self.env.pop("DATABASE_URL", None)
        self.log_path = tmp / "start.log"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([str(ROOT / "scripts" / "start")], cwd=ROOT, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def get(self, path: str, **kw) -> requests.Response:
        return requests.get(self.base + path, timeout=kw.pop("timeout", 30), **kw)

    def post(self, path: str, **kw) -> requests.Response:
        return requests.post(self.base + path, timeout=kw.pop("timeout", 60), **kw)

    def containers(self) -> dict[str, dict]:
        return {c["name"]: c for c in self.get("/api/docker/status").json()["containers"]}

    def lines(self) -> dict[str, dict]:
        """Procfile line -> the supervisor's view (from GET /api/docker/status), for web, workers and Redis."""
        names = {"parley-web": "web", "parley-redis": "redis",
                 **{f"parley-worker-{w}": w for w in (*WORKERS, "asr_broken")}}
        return {names[n]: {**c["details"]["supervisor"], "container": c} for n, c in self.containers().items()
                if n in names and "supervisor" in c["details"]}

    def worker_pid(self, name: str) -> int | None:
        """The pid of the Dramatiq worker process (the child that runs jobs) of a worker line, from its heartbeat."""
        container = self.containers().get(f"parley-worker-{name}")
        if container and container["state"] == "running":
            return container["details"].get("pid")
        return None

    def wait_up(self, timeout: float = 300) -> None:
        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"scripts/start exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                containers = self.containers()
            except (requests.RequestException, ValueError):
                return False
            return all(containers.get(f"parley-worker-{w}", {}).get("state") == "running" for w in WORKERS)
        wait_until(up, timeout=timeout, interval=0.5, what=f"the stack up ({self.log_path})")

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


class ApiWatch:
    """Asks the API every 0.1 s, from a thread, and records every answer (or connection error) it got."""

    def __init__(self, stack: StartedStack, paths=("/api/health", "/api/sessions/")):
        self.stack, self.paths = stack, paths
        self.answers: list[tuple[str, int | str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for path in self.paths:
                try:
                    self.answers.append((path, self.stack.get(path, timeout=5).status_code))
                except requests.RequestException as exc:
                    self.answers.append((path, type(exc).__name__))
            self._stop.wait(0.1)

    def __enter__(self) -> "ApiWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def statuses(self) -> set:
        return {status for _, status in self.answers}


@pytest.fixture(scope="module")
def started(tmp_path_factory, models_ready, llm_ready):
    stack = StartedStack(tmp_path_factory.mktemp("started"))
    try:
        stack.wait_up()
        yield stack
    finally:
        stack.stop()


def _stop_leaving_nothing(stack: StartedStack) -> None:
    def all_up():
        lines = _safe_lines(stack)
        return lines if all(lines.get(n, {}).get("state") == "running" for n in ("web", "redis", *WORKERS)) else None
    lines = wait_until(all_up, timeout=60, interval=0.2, what="every line running")
    groups = [line["pid"] for line in lines.values() if line.get("pid")]
    assert stack.stop() == 0, stack.log_tail()
    leftovers = {g: group_members(g) for g in groups if group_members(g)}
    assert leftovers == {}, f"processes left after stop: {leftovers}"
    assert "every process has stopped" in stack.log_tail(5)


def _safe_lines(stack: StartedStack) -> dict:
    try:
        return stack.lines()
    except (requests.RequestException, ValueError, KeyError):
        return {}


def _kill_and_watch(stack: StartedStack, line: str, pid: int, *, back_within_s: float = 5.0) -> dict:
    """SIGKILL `pid`; wait until the supervisor has restarted `line`; check that no other line was touched."""
    before = stack.lines()
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()

    def restarted():
        lines = _safe_lines(stack)
        mine = lines.get(line)
        return (mine and mine["restarts"] == before[line]["restarts"] + 1 and mine["state"] == "running"
                and lines)
    after = wait_until(restarted, timeout=60, interval=0.1, what=f"{line} restarted")
    assert time.monotonic() - killed_at < back_within_s, f"{line} took {time.monotonic() - killed_at:.1f}s"
    for name, was in before.items():
        if name not in (line, "asr_broken"):
            assert after[name]["pid"] == was["pid"] and after[name]["restarts"] == was["restarts"], (name, was)
    return after


def test_asr_worker_killed_mid_job_is_restarted_and_the_job_completes(started):
    stack = started
    with open(AUDIO / "long_two_speakers.mp3", "rb") as fh:
        job_id = stack.post("/api/transcribe/", files={"file": ("long.mp3", fh)}).json()["job_id"]

    def mid_job():
        debug = stack.get(f"/api/transcribe/debug/{job_id}").json()
        return debug if debug["total_chunks"] >= 4 and 1 <= debug["chunks_done"] < debug["total_chunks"] - 1 else None
    wait_until(mid_job, timeout=240, interval=0.1, what="a finished chunk")
    with ApiWatch(stack) as watch:
        _kill_and_watch(stack, "asr", stack.worker_pid("asr"))
        status = wait_until(lambda: (b := stack.get(f"/api/transcribe/status/{job_id}").json())["status"]
                            in ("completed", "failed") and b, timeout=300, interval=0.5, what="the job")
    assert status["status"] == "completed", status
    assert watch.statuses() == {200}, watch.answers  # the API answered throughout
    debug = stack.get(f"/api/transcribe/debug/{job_id}").json()
    assert debug["attempts"] == 2
    segments = stack.get(f"/api/transcribe/result/{job_id}").json()["segments"]
    for prev, seg in zip(segments, segments[1:]):
        assert seg["start"] >= prev["end"] - 0.05, (prev, seg)  # nothing transcribed twice
    gt = " ".join(t["text"] for t in truth("long_two_speakers")["turns"])
    assert wer(gt, " ".join(s["text"] for s in segments)) < 0.15  # nothing lost
    container = stack.containers()["parley-worker-asr"]
    # Dramatiq's main process exited when its child died, and the supervisor said so. (Dramatiq's own
    # "exited unexpectedly" line is not asserted: its log thread can stop before writing it.)
    assert container["details"]["supervisor"]["lastExit"].startswith("exit code")
    assert re.search(r"\| asr exited after [0-9.]+ s \(exit code \d+\); restarting in", stack.log_tail(100000))


def test_asr_quick_worker_killed_with_a_request_waiting_is_restarted_and_answers(started):
    stack = started
    with open(AUDIO / "two_speakers.mp3", "rb") as fh:
        clip = fh.read()
    with ApiWatch(stack) as watch:
        pid = stack.worker_pid("asr_quick")
        answer: dict = {}
        request = threading.Thread(target=lambda: answer.update(r=stack.post(
            "/api/retranslate/segment", files={"file": ("clip.mp3", clip)},
            data={"segment_id": "seg-1"}, timeout=180)))
        request.start()
        _kill_and_watch(stack, "asr_quick", pid)
        request.join(timeout=200)
    assert watch.statuses() == {200}, watch.answers
    response = answer["r"]
    # The re-transcription waited for the replacement, or was answered as still running (202) with its job.
    assert response.status_code in (200, 202), response.text
    if response.status_code == 202:
        job_id = response.json()["job_id"]
        wait_until(lambda: stack.get(f"/api/transcribe/status/{job_id}").json()["status"] == "completed",
                   timeout=120, what="the re-transcription")
    else:
        assert "thank you for coming in" in response.json()["text"].lower()


def test_llm_worker_killed_mid_reply_is_restarted_and_the_reply_is_stored_once(started):
    stack = started
    answer = stack.post("/api/llm/set-model", json={"modelName": GEMMA, "contextSize": None})
    assert answer.status_code == 200, answer.text
    wait_until(lambda: stack.get("/api/llm/status").json()["loadState"] == "completed", timeout=120, what="model load")
    chat_id = stack.post("/api/chats", json={}).json()["id"]
    tokens = threading.Event()

    def ask():
        with requests.post(f"{stack.base}/api/chats/{chat_id}/messages", json={"text": "Say hello to the team."},
                           stream=True, timeout=300) as response:
            for raw in response.iter_lines():
                if b'"chunk"' in raw:
                    tokens.set()
    asking = threading.Thread(target=ask, daemon=True)
    asking.start()
    assert tokens.wait(timeout=120), "no token streamed"
    def replied():
        messages = stack.get(f"/api/chats/{chat_id}").json()["messages"]
        return [m for m in messages if m["sender"] == "ai"]
    with ApiWatch(stack) as watch:
        _kill_and_watch(stack, "llm", stack.worker_pid("llm"))
        assert replied() == []  # killed mid-reply: nothing was stored yet
        ai = wait_until(replied, timeout=240, interval=0.5, what="the AI reply")
    assert watch.statuses() == {200}, watch.answers
    assert len(ai) == 1, ai  # the reply is committed once, at its end: the rerun wrote the only one
    assert len([m for m in stack.get(f"/api/chats/{chat_id}").json()["messages"] if m["sender"] == "user"]) == 1


def test_io_worker_killed_mid_pull_is_restarted_and_the_pull_completes_once(started, tmp_path):
    stack = started
    files = FileServer()
    try:
        data = make_gguf(tmp_path / "source.gguf", rows=1600, seed=5)
        route = files.serve("/files/supervised.gguf", data, chunk=8 * 1024, delay_s=0.05)
        pull_id = stack.post("/api/llm/pull-model", json={"modelUrl": files.base + "/files/supervised.gguf"}
                             ).json()["jobId"]

        def status():
            return stack.get(f"/api/llm/pull-status/{pull_id}").json()
        wait_until(lambda: status()["completedBytes"] >= 200 * 1024, timeout=60, interval=0.05, what="some bytes")
        with ApiWatch(stack) as watch:
            _kill_and_watch(stack, "io", stack.worker_pid("io"))
            route.delay_s = 0.0
            final = wait_until(lambda: (b := status())["status"] in ("completed", "failed", "canceled") and b,
                               timeout=120, interval=0.1, what="the resumed pull")
        assert watch.statuses() == {200}, watch.answers
        assert final["status"] == "completed", final
        assert (MODEL_DIR / "llm" / "supervised.gguf").read_bytes() == data
        assert len(route.ranges) == 2 and route.ranges[1] is not None  # resumed once, from its .part
    finally:
        files.close()
        (MODEL_DIR / "llm" / "supervised.gguf").unlink(missing_ok=True)


def test_web_killed_is_back_within_seconds(started):
    stack = started
    web_pid = stack.lines()["web"]["pid"]
    _kill_and_watch(stack, "web", web_pid, back_within_s=10)
    wait_until(lambda: _safe_lines(stack).get("web"), timeout=30, interval=0.1, what="the API answering again")
    assert stack.get("/api/sessions/").status_code == 200


def test_redis_killed_gives_503_meanwhile_and_work_goes_on_after(started):
    stack = started
    info = subprocess.run(["redis-cli", "-p", str(stack.redis_port), "info", "server"], capture_output=True,
                          text=True).stdout
    redis_pid = int(next(line.split(":")[1] for line in info.splitlines() if line.startswith("process_id")))
    with ApiWatch(stack) as watch:
        _kill_and_watch(stack, "redis", redis_pid)
        wait_until(lambda: stack.get("/api/health").status_code == 200, timeout=30, what="Redis back")
        with open(AUDIO / "two_speakers.mp3", "rb") as fh:
            job_id = stack.post("/api/transcribe/", files={"file": ("after.mp3", fh)}).json()["job_id"]
        status = wait_until(lambda: (b := stack.get(f"/api/transcribe/status/{job_id}").json())["status"]
                            in ("completed", "failed") and b, timeout=180, interval=0.5, what="a job after Redis")
    assert status["status"] == "completed", status
    assert watch.statuses() <= {200, 503}, watch.answers  # 503 only: Redis was down, the API was not
    assert ("/api/sessions/", 503) not in watch.answers  # what needs no Redis kept answering


def test_a_crash_looping_worker_is_visible_in_status_metrics_and_dashboard(started):
    stack = started
    container = wait_until(lambda: (c := stack.containers()["parley-worker-asr_broken"])["details"]
                           .get("supervisor", {}).get("crashLooping") and c, timeout=60, what="a crash loop")
    assert container["state"] == "restarting"
    supervisor = container["details"]["supervisor"]
    assert supervisor["restarts"] >= 3 and supervisor["lastExit"].startswith("exit code")
    assert "Restarting (exit code" in container["status"] and "crash loop" in container["status"]
    metrics = stack.get("/metrics").text
    assert 'parley_process_crash_looping{process="asr_broken"} 1.0' in metrics
    assert 'parley_process_crash_looping{process="asr"} 0.0' in metrics
    assert 'parley_process_restarts_total{process="asr"} 1.0' in metrics
    processes = {p["name"]: p for p in stack.get("/dashboard/state").json()["processes"]}
    assert processes["asr_broken"]["crash_looping"] and processes["asr_broken"]["restarts"] >= 3
    assert "is crash-looping" in stack.log_path.read_text()


def test_a_poison_message_fails_its_job_after_bounded_tries(started):
    stack = started
    with open(AUDIO / "long_two_speakers.mp3", "rb") as fh:
        job_id = stack.post("/api/transcribe/", files={"file": ("poison.mp3", fh)}).json()["job_id"]
    killed = 0
    # Plays the OOM killer: whenever a worker starts this job, it dies. PARLEY_MAX_CRASHES is 2.
    while killed < 2:
        debug = wait_until(lambda: (d := stack.get(f"/api/transcribe/debug/{job_id}").json())["attempts"] > killed
                           and d["status"] == "processing" and d, timeout=180, interval=0.05, what="a try")
        os.kill(int(debug["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
        killed += 1
    status = wait_until(lambda: (b := stack.get(f"/api/transcribe/status/{job_id}").json())["status"]
                        in ("completed", "failed") and b, timeout=180, interval=0.5, what="the poison job")
    assert status["status"] == "failed", status
    assert "stopped after 2 tries" in status["error"] and "died" in status["error"]
    assert stack.get(f"/api/transcribe/debug/{job_id}").json()["attempts"] == 2  # never run a third time
    # The worker is not stuck on it: the next job runs.
    with open(AUDIO / "two_speakers.mp3", "rb") as fh:
        next_id = stack.post("/api/transcribe/", files={"file": ("next.mp3", fh)}).json()["job_id"]
    wait_until(lambda: stack.get(f"/api/transcribe/status/{next_id}").json()["status"] == "completed",
               timeout=180, interval=0.5, what="the next job")


def test_the_database_kept_every_job(started):
    with sqlite3.connect(started.data_dir / "parley.db") as conn:
        statuses = conn.execute("SELECT status, count(*) FROM job GROUP BY status").fetchall()
    assert dict(statuses).get("completed", 0) >= 3 and dict(statuses).get("failed", 0) == 1, statuses


def test_sigterm_stops_everything_and_a_second_start_works(started):
    with sqlite3.connect(started.data_dir / "parley.db") as conn:
        finished = dict(conn.execute("SELECT id, status FROM job WHERE status IN ('completed', 'failed')"))
    _stop_leaving_nothing(started)

    # The same data directory and the same ports: nothing of the first run holds them.
    again = StartedStack(started.tmp, ports=(started.port, started.redis_port))
    try:
        again.wait_up()
        for job_id, status in finished.items():
            assert again.get(f"/api/transcribe/status/{job_id}").json()["status"] == status
    finally:
        _stop_leaving_nothing(again)
