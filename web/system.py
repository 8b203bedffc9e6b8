"""Health, readiness, queue counts, GPU and memory figures, and resetting transcription work."""
from __future__ import annotations

import datetime
import threading
import time

import redis
from flask import Blueprint, current_app, jsonify

from jobs.heartbeats import alive_workers
from models import AnalysisJob, Job, db
from models.statuses import ACTIVE_JOB
from services import gpu, job_control
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


@system_bp.get("/health")
def health():
    database, search_ok = _database_ok(), _search_ok()
    body = {"status": "OK" if database and search_ok else "DEGRADED", "database": _state(database),
            "elasticsearch": _state(search_ok), "timestamp": _now_iso()}
    return jsonify(body), 200 if database and search_ok else 503


@system_bp.get("/status/readiness")
def readiness():
    """Ready when the database and the job queue answer; whether workers are up is informational."""
    workers = _workers()
    queues = {q for w in workers or [] for q in w.get("queues", [])}
    database, queue = _database_ok(), workers is not None
    body = {"ready": database and queue, "timestamp": _now_iso(), "services": {
        "database": _state(database), "redis": _state(queue), "elasticsearch": _state(_search_ok()),
        "llm": _state("llm" in queues), "whisper": _state("asr" in queues)}}
    if not body["ready"]:
        missing = [name for name, ok in (("the database", database), ("Redis (the job queue)", queue)) if not ok]
        body["message"] = f"{' and '.join(missing)} cannot be reached; uploads and jobs wait until it is back"
    return jsonify(body), 200 if body["ready"] else 503


@system_bp.get("/jobs/active-count")
def active_count():
    transcription = Job.select().where((Job.kind == "transcribe") & Job.status.in_(ACTIVE_JOB)).count()
    analysis = AnalysisJob.select().where(AnalysisJob.status.in_(ACTIVE_ANALYSIS)).count()
    return jsonify(total=transcription + analysis, transcription=transcription, analysis=analysis)


@system_bp.post("/jobs/reset-transcription")
def reset_transcription():
    """Drop queued and running transcriptions: queue messages removed, jobs canceled, sessions marked failed.

    A worker in the middle of one notices the cancel at its next segment and stops. Nothing else is touched.
    """
    try:
        canceled = job_control.reset_transcriptions()
    except redis.RedisError as exc:
        raise ApiError(503, f"the job queue is unavailable ({type(exc).__name__}); nothing was reset") from None
    return jsonify(success=True, canceledJobs=canceled)


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
def system_gpu_stats():
    with _gpu_lock:
        if time.monotonic() - _gpu_cache.get("at", -GPU_CACHE_S) >= GPU_CACHE_S:
            _gpu_cache.update(at=time.monotonic(), stats=gpu_stats())
        return jsonify(_gpu_cache["stats"])
