"""Health, readiness, queue counts, GPU and memory figures, and resetting transcription work."""
from __future__ import annotations

import datetime
import threading
import time

from typing import Annotated, Literal

import redis
from flask import Blueprint, current_app
from pydantic import WithJsonSchema

from jobs.heartbeats import alive_workers
from models import AnalysisJob, Job, db
from models.statuses import ACTIVE_JOB
from services import gpu, job_control
from web.declared import Field, SparseWireModel, WireModel, endpoint
from web.errors import ApiError

system_bp = Blueprint("system", __name__, url_prefix="/api")

ACTIVE_ANALYSIS = ("generating_strategy", "pending", "mapping", "reducing", "canceling")
GPU_CACHE_S = 1.5  # the sidebar polls every 2 s; one answer serves every tab open on it


def _now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def _database_ok() -> bool:
    try:
        db.execute_sql("SELECT 1")
        return True
    except Exception:  # noqa: BLE001  (any failure means "not usable")
        return False


def _workers() -> list[dict] | None:
    try:
        return alive_workers(current_app.extensions["parley_redis"])
    except redis.RedisError:
        return None


def _search_ok() -> bool:
    try:
        from services import search
        return search.healthy()
    except Exception:  # noqa: BLE001
        return False


def _state(ok: bool) -> str:
    return "connected" if ok else "disconnected"


# --- shapes --------------------------------------------------------------------------------------------
State = Literal["connected", "disconnected"]
Number = Annotated[int | float, WithJsonSchema({"type": "number"})]  # an int stays an int on the wire


class ApiHealth(WireModel):
    status: Literal["OK", "DEGRADED"]
    database: State
    elasticsearch: State
    timestamp: str = Field(description="ISO 8601")


class ServiceStates(WireModel):
    database: State
    redis: State
    elasticsearch: State
    llm: State
    whisper: State


class Readiness(SparseWireModel):
    ready: bool = Field(description="True when the database is usable")
    timestamp: str = Field(description="ISO 8601")
    services: ServiceStates
    message: str | None = Field(None, description="Only when not ready: what is missing")


class ActiveCount(WireModel):
    total: int
    transcription: int
    analysis: int


class ResetDone(WireModel):
    success: bool
    canceled_jobs: int


class Memory(WireModel):
    total_mb: Number
    used_mb: Number
    free_mb: Number


class GpuUtilization(WireModel):
    gpu_percent: Number | None
    memory_percent: Number | None


class GpuTemperature(WireModel):
    current_celsius: Number | None


class GpuPower(WireModel):
    draw_watts: Number | None
    limit_watts: Number | None


class GpuProcess(WireModel):
    pid: int
    name: str
    memory_used_mb: Number


class Gpu(WireModel):
    id: int
    name: str
    fan_speed_percent: Number | None
    performance_state: str
    memory: Memory
    utilization: GpuUtilization
    temperature: GpuTemperature
    power: GpuPower
    processes: list[GpuProcess]
    is_unified_memory: bool


class GpuSummary(WireModel):
    gpu_count: int
    total_memory_mb: Number
    total_memory_used_mb: Number
    avg_gpu_utilization_percent: Number | None
    avg_memory_utilization_percent: Number | None
    avg_temperature_celsius: Number | None
    total_power_draw_watts: Number | None
    total_power_limit_watts: Number | None
    is_unified_memory: bool


class SystemMemory(Memory):
    percent_used: Number


class GpuStats(WireModel):
    available: bool = Field(description="Whether an NVIDIA GPU was found")
    driver_version: str | None
    cuda_version: str | None
    gpus: list[Gpu]
    summary: GpuSummary
    execution_provider: Literal["gpu", "cpu", "metal"]
    system_memory: SystemMemory


@system_bp.get("/health")
@endpoint(tag="system", operation_id="api_health", responses={200: (ApiHealth, "Both answer"),
                                                               503: (ApiHealth, "One of them does not")})
def health():
    """Database and search health"""
    database, search_ok = _database_ok(), _search_ok()
    body = ApiHealth(status="OK" if database and search_ok else "DEGRADED", database=_state(database),
                     elasticsearch=_state(search_ok), timestamp=_now_iso())
    return body, 200 if database and search_ok else 503


@system_bp.get("/status/readiness")
@endpoint(tag="system", responses={200: (Readiness, "Ready (the database and the job queue answer)"),
                                   503: (Readiness, "Not ready")})
def readiness():
    """Whether the backend is ready

    llm and whisper say whether a worker for that queue is alive; they do not block readiness.
    """
    workers = _workers()
    queues = {q for w in workers or [] for q in w.get("queues", [])}
    database, queue = _database_ok(), workers is not None
    body = Readiness(ready=database and queue, timestamp=_now_iso(), services=ServiceStates(
        database=_state(database), redis=_state(queue), elasticsearch=_state(_search_ok()),
        llm=_state("llm" in queues), whisper=_state("asr" in queues)))
    if not body.ready:
        missing = [name for name, ok in (("the database", database), ("Redis (the job queue)", queue)) if not ok]
        body.message = f"{' and '.join(missing)} cannot be reached; uploads and jobs wait until it is back"
    return body, 200 if body.ready else 503


@system_bp.get("/jobs/active-count")
@endpoint(tag="system", responses={200: (ActiveCount, "Counts")})
def active_count():
    """Transcriptions and analyses in progress"""
    transcription = Job.select().where((Job.kind == "transcribe") & Job.status.in_(ACTIVE_JOB)).count()
    analysis = AnalysisJob.select().where(AnalysisJob.status.in_(ACTIVE_ANALYSIS)).count()
    return ActiveCount(total=transcription + analysis, transcription=transcription, analysis=analysis)


@system_bp.post("/jobs/reset-transcription")
@endpoint(tag="system", responses={200: (ResetDone, "Reset"), 503: "The queue is unreachable; nothing was reset"})
def reset_transcription():
    """Drop queued and running transcriptions

    Queue messages are removed, the jobs canceled (a running one stops at its next segment) and their sessions
    marked failed, so `parley retranscribe --failed` can queue them again.
    """
    try:
        canceled = job_control.reset_transcriptions()
    except redis.RedisError as exc:
        raise ApiError(503, f"the job queue is unavailable ({type(exc).__name__}); nothing was reset") from None
    return ResetDone(success=True, canceled_jobs=canceled)


# --- GPU and memory -------------------------------------------------------------------------------
_gpu_cache: dict = {}
_gpu_lock = threading.Lock()


def _mean(values):
    values = [v for v in values if v is not None]
    return round(sum(values) / len(values), 1) if values else None


def gpu_stats() -> dict:
    gpus, driver, cuda = gpu.gpus()
    summary = {
        "gpuCount": len(gpus), "totalMemoryMb": sum(g["memory"]["totalMb"] for g in gpus),
        "totalMemoryUsedMb": sum(g["memory"]["usedMb"] for g in gpus),
        "avgGpuUtilizationPercent": _mean(g["utilization"]["gpuPercent"] for g in gpus),
        "avgMemoryUtilizationPercent": _mean(g["utilization"]["memoryPercent"] for g in gpus),
        "avgTemperatureCelsius": _mean(g["temperature"]["currentCelsius"] for g in gpus),
        "totalPowerDrawWatts": sum(g["power"]["drawWatts"] or 0 for g in gpus) if gpus else None,
        "totalPowerLimitWatts": sum(g["power"]["limitWatts"] or 0 for g in gpus) if gpus else None,
        "isUnifiedMemory": False,
    }
    return {"available": bool(gpus), "driverVersion": driver, "cudaVersion": cuda, "gpus": gpus, "summary": summary,
            "executionProvider": "gpu" if gpus else "cpu", "systemMemory": gpu.system_memory()}


@system_bp.get("/system/gpu-stats")
@endpoint(tag="system", operation_id="gpu_stats", responses={200: (GpuStats, "Figures (cached 1.5 s); "
                                                                   "available:false and real system memory "
                                                                   "without a GPU")})
def system_gpu_stats():
    """GPU and system memory figures"""
    with _gpu_lock:
        if time.monotonic() - _gpu_cache.get("at", -GPU_CACHE_S) >= GPU_CACHE_S:
            _gpu_cache.update(at=time.monotonic(), stats=GpuStats.model_validate(gpu_stats()))
        return _gpu_cache["stats"]
