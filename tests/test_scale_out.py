"""Scale-out: two web processes and two speech workers (pinned to devices 0 and 1) behind one Redis and one PostgreSQL."""
from __future__ import annotations

import copy
import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
import requests

from conftest import AUDIO, ROOT, VENV_BIN, Process, Stack, free_port, truth, wait_until
from helpers import Collector, events_of, normalise, read_sse, wer

WORKERS = {"asr-gpu0": "0", "asr-gpu1": "1"}  # PARLEY_PROCESS_NAME -> CUDA_VISIBLE_DEVICES


def another_web(first: Stack, name: str) -> Stack:
    """A second web process of the same deployment: the same environment (data directory, database,
    Redis database number), its own port and process name; as a second machine behind a load balancer."""
    other = copy.copy(first)
    other.port = free_port()
    other.base = f"http://127.0.0.1:{other.port}"
    other.env = dict(first.env, PARLEY_PROCESS_NAME=name)
    other.web, other.workers, other.session = None, {}, requests.Session()
    return other


def start_like_procfile(web: Stack, *, processes: int = 2) -> None:
    """Start `web` as the Procfile does: several gunicorn processes forked from one master (Stack starts one)."""
    web.web = Process("web", [str(VENV_BIN / "gunicorn"), "--config", str(ROOT / "gunicorn.conf.py"),
                              "--worker-class", "gthread", "--workers", str(processes), "--threads", "16",
                              "--bind", f"127.0.0.1:{web.port}", "--graceful-timeout", "2", "--no-control-socket",
                              "web:create_app()"], web.web_env(), web.tmp)
    wait_until(web._healthy, timeout=60, what=f"web tier ({web.web.log_path})")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, redis_server, models_ready, postgres_url):
    """Web A and web B, and one `asr` worker per device, all on one Redis and one PostgreSQL database."""
    tmp = tmp_path_factory.mktemp("scale-out")
    # No warm-up: tiny.en loads in a second on the first job, and the jobs here ask for no speaker labels.
    web_a = Stack(tmp, redis_server, postgres_url, PARLEY_PROCESS_NAME="web-a", PARLEY_WARMUP="0",
                  PARLEY_CHUNK_SECONDS="30")
    web_b = another_web(web_a, "web-b")
    try:
        web_a.start_web()
        start_like_procfile(web_b)
        for name, device in WORKERS.items():
            web_a.env["CUDA_VISIBLE_DEVICES"] = device  # as the Procfile's asr line does with PARLEY_ASR_DEVICE
            web_a.start_worker(name, "asr", wait=False)
        web_a.env.pop("CUDA_VISIBLE_DEVICES")
        for worker in web_a.workers.values():
            web_a.wait_worker_ready(worker)
        yield web_a, web_b
    finally:
        web_a.stop()
        web_b.stop()


def worker_names(stack: Stack) -> dict[str, dict]:
    """Live workers' heartbeats by worker id ("host:pid", as a job's `worker` field names it)."""
    conn = redis.Redis.from_url(stack.env["REDIS_URL"])
    beats = [json.loads(v) for v in conn.mget(list(conn.scan_iter(match="parley:worker:*"))) if v]
    return {f"{b['host']}:{b['pid']}": b for b in beats}


def stream(web: Stack, job_id: str) -> Collector:
    collector = Collector(lambda sink: read_sse(web.url(f"/api/transcribe/events/{job_id}"), on_event=sink.append))
    collector.start()
    return collector


def assert_streamed_once(frames: list[dict], segments: list[dict]) -> None:
    """Every segment reached the client exactly once, in order, and the stream ended with the job."""
    events = events_of(frames)
    seen = [e for e in events if e["type"] == "segment"]
    assert [e["id"] for e in seen] == list(range(len(segments)))
    assert normalise(" ".join(e["text"] for e in seen)) == normalise(" ".join(s["text"] for s in segments))
    assert events[-1]["type"] == "status" and events[-1]["status"] == "completed"


def test_workers_report_their_devices(deployment):
    web_a, web_b = deployment
    beats = worker_names(web_a)
    assert sorted((b["name"], b["device"], b["queues"]) for b in beats.values()) == [
        ("asr-gpu0", "0", ["asr"]), ("asr-gpu1", "1", ["asr"])]
    for name, device in WORKERS.items():
        log = (web_a.data_dir / "logs" / f"{name}.log").read_text()
        assert f"consuming queues asr on device {device}" in log
    # Either web process sees both workers: heartbeats live in the shared Redis.
    containers = web_b.get("/api/docker/status").json()["containers"]
    running = {c["name"] for c in containers if c["state"] == "running"}
    assert {"parley-worker-asr-gpu0", "parley-worker-asr-gpu1", "parley-web"} <= running


def test_forked_web_processes_each_have_their_own_database_connections(deployment):
    # gunicorn's master reads the token table before it forks; a connection it kept would be shared
    # by the forked processes, which then read each other's answers (or fail) under concurrent requests.
    web_a, web_b = deployment
    assert "Traceback" not in web_b.web.log_path.read_text(errors="replace")
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: web_b.get(("/api/transcribe/jobs", "/api/sessions")[i % 2]), range(200)))
    assert [a.status_code for a in answers] == [200] * len(answers)
    # Each answer is the one its request asked for: the job list's object, the sessions' array.
    assert [type(a.json()) for a in answers] == [dict, list] * (len(answers) // 2)
    assert all("jobs" in a.json() for a in answers[::2])


def test_jobs_from_both_web_processes_spread_over_both_workers(deployment):
    web_a, web_b = deployment
    clips = ["two_speakers", "three_speakers", "two_speakers", "three_speakers"]
    submitted = []  # (web it went to, job id, clip)
    for number, name in enumerate(clips):
        web = (web_a, web_b)[number % 2]
        answer = web.upload(AUDIO / f"{name}.mp3", diarize="false")
        assert answer.status_code in (200, 202), answer.text
        submitted.append((web, answer.json()["job_id"], name))
    # Streams read from the web process the job was NOT submitted to.
    streams = {job_id: stream(web_b if web is web_a else web_a, job_id) for web, job_id, _ in submitted[:2]}

    workers = worker_names(web_a)
    ran_on = set()
    for web, job_id, name in submitted:
        other = web_b if web is web_a else web_a
        assert other.wait_job(job_id, timeout=150)["status"] == "completed"
        result = other.get(f"/api/transcribe/result/{job_id}").json()
        assert wer(" ".join(t["text"] for t in truth(name)["turns"]), result["text"]) < 0.15, result["text"]
        ran_on.add(workers[web.get(f"/api/transcribe/debug/{job_id}").json()["worker"]]["name"])
        if job_id in streams:
            assert_streamed_once(streams[job_id].result(timeout=60), result["segments"])
    assert ran_on == set(WORKERS)
    # One database: both web processes list every job.
    for web in (web_a, web_b):
        assert {j["job_id"] for j in web.get("/api/transcribe/jobs").json()["jobs"]} >= {j for _, j, _ in submitted}


def test_killing_a_worker_mid_job_loses_nothing(deployment):
    web_a, web_b = deployment
    job_id = web_b.upload(AUDIO / "long_two_speakers.mp3", diarize="false").json()["job_id"]
    watch = stream(web_a, job_id)

    def mid_job():
        debug = web_a.get(f"/api/transcribe/debug/{job_id}").json()
        return debug if debug["total_chunks"] >= 4 and 1 <= debug["chunks_done"] < debug["total_chunks"] - 1 else None
    before = wait_until(mid_job, timeout=150, interval=0.05, what="a finished chunk")
    workers = worker_names(web_a)
    victim = workers[before["worker"]]["name"]
    web_a.workers[victim].kill()  # SIGKILL to its process group: no clean-up, no ack

    # Its unacknowledged message goes back to the queue once its broker heartbeat is stale, and the
    # other worker finishes the job from the last committed segment.
    status = web_b.wait_job(job_id, timeout=180)
    assert status["status"] == "completed", status
    debug = web_b.get(f"/api/transcribe/debug/{job_id}").json()
    survivor = workers[debug["worker"]]["name"]
    assert survivor != victim and survivor in WORKERS
    assert debug["attempts"] == 2 and debug["chunks_done"] == debug["total_chunks"]

    segments = web_b.get(f"/api/transcribe/result/{job_id}").json()["segments"]
    assert [s["id"] for s in segments] == list(range(len(segments)))
    for prev, seg in zip(segments, segments[1:]):
        assert seg["start"] >= prev["end"] - 0.05, (prev, seg)  # nothing transcribed twice
    words = " ".join(t["text"] for t in truth("long_two_speakers")["turns"])
    assert wer(words, " ".join(s["text"] for s in segments)) < 0.15  # no gap
    assert_streamed_once(watch.result(timeout=60), segments)

    # Nothing left behind in the queue or among the dead letters.
    conn = redis.Redis.from_url(web_a.env["REDIS_URL"])
    assert conn.llen("dramatiq:asr") == 0 and conn.zcard("dramatiq:asr.XQ") == 0
