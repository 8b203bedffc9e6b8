"""Health, readiness, active counts, GPU figures without a GPU, and the transcription reset."""
from __future__ import annotations

from conftest import AUDIO, RedisServer, running_stack, wait_until
from test_sessions_api import upload, wait_session


def test_health_and_readiness(stack):
    health = stack.get("/api/health")
    assert health.status_code == 200 and health.json()["status"] == "OK"
    assert health.json()["database"] == "connected" and health.json()["elasticsearch"] == "connected"
    ready = stack.get("/api/status/readiness").json()
    assert ready["ready"] is True and ready["services"]["database"] == "connected"
    assert ready["services"]["whisper"] == "connected"  # the stack runs an asr worker
    assert ready["services"]["llm"] == "disconnected"  # ... and no llm worker


def test_readiness_while_redis_is_stopped_and_after_it_comes_back(tmp_path):
    for folder in ("own-redis", "stack"):
        (tmp_path / folder).mkdir()
    redis = RedisServer(tmp_path / "own-redis")
    redis.start()
    try:
        with running_stack(tmp_path / "stack", redis) as s:
            assert s.get("/api/status/readiness").status_code == 200
            redis.stop()
            down = s.get("/api/status/readiness")
            assert down.status_code == 503 and down.json()["ready"] is False
            assert down.json()["services"]["redis"] == "disconnected"
            assert down.json()["services"]["database"] == "connected"
            assert "Redis" in down.json()["message"]
            # Reading stored data does not need the queue.
            assert s.get("/api/sessions").status_code == 200
            redis.start()  # same port, as a restarted server would be
            wait_until(lambda: s.get("/api/status/readiness").status_code == 200, timeout=30, what="readiness back")
            back = s.get("/api/status/readiness").json()
            assert back["ready"] is True and back["services"]["redis"] == "connected" and "message" not in back
    finally:
        redis.stop()


def test_gpu_stats_without_a_gpu(stack):
    stats = stack.get("/api/system/gpu-stats").json()
    assert stats["available"] is False and stats["gpus"] == [] and stats["executionProvider"] == "cpu"
    assert stats["summary"]["gpuCount"] == 0 and stats["summary"]["isUnifiedMemory"] is False
    with open("/proc/meminfo") as fh:
        total_kb = int(next(line for line in fh if line.startswith("MemTotal")).split()[1])
    memory = stats["systemMemory"]
    assert memory["totalMb"] == round(total_kb / 1024) and 0 < memory["usedMb"] < memory["totalMb"]
    assert 0 < memory["percentUsed"] < 100


def test_active_count_and_reset(stack):
    running = upload(stack, AUDIO / "long_two_speakers.mp3", numSpeakers="2").json()["sessionId"]
    queued = upload(stack, AUDIO / "silence.mp3").json()["sessionId"]
    wait_until(lambda: stack.get(f"/api/sessions/{running}").json()["status"] == "transcribing", timeout=60,
               what="first session transcribing")
    counts = stack.get("/api/jobs/active-count").json()
    assert counts["transcription"] >= 2 and counts["total"] == counts["transcription"] + counts["analysis"]

    reset = stack.post("/api/jobs/reset-transcription").json()
    assert reset["success"] is True and reset["canceledJobs"] >= 2
    assert stack.get("/api/jobs/active-count").json()["transcription"] == 0
    for sid in (running, queued):
        session = stack.get(f"/api/sessions/{sid}").json()
        assert session["status"] == "failed" and "reset by the operator" in session["errorMessage"]
        canceled = stack.get(f"/api/transcribe/status/{session['whisperJobId']}").json()
        assert (canceled["status"], canceled["state"]) == ("failed", "canceled")
    # The worker let the running job go: it stays canceled, and the worker takes new work.
    fresh = upload(stack, AUDIO / "silence.mp3").json()["sessionId"]
    assert wait_session(stack, fresh)[0]["status"] == "completed"
    assert stack.get(f"/api/sessions/{running}").json()["status"] == "failed"


FAKE_NVIDIA_SMI = """#!/bin/sh
case "$*" in
  *query-gpu*) echo "0, NVIDIA H100 80GB HBM3, [N/A], P0, 81559, 1234, 80325, 5, 1, 31, 71.50, 700.00, 550.54.15, GPU-5f1e" ;;
  *query-compute-apps*) echo "GPU-5f1e, 4242, /srv/parley/.venv/bin/python, 1100" ;;
  -q) printf '==============NVSMI LOG==============\\nDriver Version                            : 550.54.15\\nCUDA Version                              : 12.4\\n' ;;
esac
"""


def test_gpu_stats_list_the_gpus_processes_and_the_cuda_version(tmp_path, monkeypatch):
    """There is no GPU here: a stand-in nvidia-smi (the boundary) prints what the real one prints on an H100
    host, so the parsing is what is tested. Without nvidia-smi the answer says CPU, with nothing invented."""
    import os
    import stat

    from web.system import gpu_stats

    fake = tmp_path / "nvidia-smi"
    fake.write_text(FAKE_NVIDIA_SMI)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    stats = gpu_stats()
    assert stats["available"] and stats["cudaVersion"] == "12.4" and stats["driverVersion"] == "550.54.15"
    assert stats["gpus"][0]["processes"] == [{"pid": 4242, "name": "/srv/parley/.venv/bin/python",
                                              "memoryUsedMb": 1100.0}]
    assert stats["gpus"][0]["fanSpeedPercent"] is None and stats["summary"]["totalMemoryMb"] == 81559

    fake.unlink()
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    stats = gpu_stats()
    assert (stats["available"], stats["cudaVersion"], stats["gpus"], stats["executionProvider"]) == (
        False, None, [], "cpu")
