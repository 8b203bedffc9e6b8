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


class StandInNvml:
    """NVML as nvidia-ml-py presents it on an H100 host: the answers of the real library there (the fan is not
    supported on that board). The real library is the boundary: no GPU and no NVIDIA driver on this machine."""

    NVML_TEMPERATURE_GPU = 0

    class NVMLError(Exception):
        pass

    class Memory:
        total, used, free = 81559 * 2**20, 1234 * 2**20, 80325 * 2**20

    class Rates:
        gpu, memory = 5, 1

    class Proc:
        pid, usedGpuMemory = None, 1100 * 2**20

    def __init__(self, pid: int):
        self.Proc.pid = pid
        self.inits = 0

    def nvmlInit(self):
        self.inits += 1

    def nvmlDeviceGetCount(self):
        return 1

    def nvmlDeviceGetHandleByIndex(self, index):
        return ("gpu", index)

    def nvmlDeviceGetName(self, handle):
        return b"NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetFanSpeed(self, handle):
        raise self.NVMLError("Not Supported")

    def nvmlDeviceGetPerformanceState(self, handle):
        return 0

    def nvmlDeviceGetMemoryInfo(self, handle):
        return self.Memory

    def nvmlDeviceGetUtilizationRates(self, handle):
        return self.Rates

    def nvmlDeviceGetTemperature(self, handle, sensor):
        return 31

    def nvmlDeviceGetPowerUsage(self, handle):
        return 71500  # milliwatts

    def nvmlDeviceGetEnforcedPowerLimit(self, handle):
        return 700000

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return [self.Proc]

    def nvmlSystemGetDriverVersion(self):
        return "550.54.15"

    def nvmlSystemGetCudaDriverVersion(self):
        return 12040


def test_gpu_stats_list_the_gpus_processes_and_the_cuda_version(monkeypatch):
    """With NVML answering as on an H100 host (a stand-in: there is no GPU here), every figure lands in its field;
    with the real nvidia-ml-py on this driverless machine, the answer says CPU, with nothing invented."""
    import os
    import sys

    import psutil
    import pytest

    from services import gpu
    from web.system import gpu_stats

    stand_in = StandInNvml(pid=os.getpid())
    monkeypatch.setitem(sys.modules, "pynvml", stand_in)
    gpu._nvml.cache_clear()
    try:
        stats = gpu_stats()
        stats_again = gpu_stats()
    finally:
        gpu._nvml.cache_clear()
    assert stand_in.inits == 1  # initialised once per process, not per request
    assert stats == stats_again
    assert stats["available"] and stats["cudaVersion"] == "12.4" and stats["driverVersion"] == "550.54.15"
    card = stats["gpus"][0]
    assert (card["name"], card["performanceState"], card["fanSpeedPercent"]) == ("NVIDIA H100 80GB HBM3", "P0", None)
    assert card["memory"] == {"totalMb": 81559, "usedMb": 1234, "freeMb": 80325}
    assert card["power"] == {"drawWatts": 71.5, "limitWatts": 700.0} and card["temperature"]["currentCelsius"] == 31
    assert card["processes"] == [{"pid": os.getpid(), "name": psutil.Process().exe(), "memoryUsedMb": 1100.0}]
    assert stats["summary"]["totalMemoryMb"] == 81559 and stats["summary"]["avgGpuUtilizationPercent"] == 5

    monkeypatch.delitem(sys.modules, "pynvml")
    import pynvml  # the real nvidia-ml-py: no driver here, so its initialisation fails

    with pytest.raises(pynvml.NVMLError):
        pynvml.nvmlInit()
    stats = gpu_stats()
    assert (stats["available"], stats["cudaVersion"], stats["gpus"], stats["executionProvider"]) == (
        False, None, [], "cpu")
