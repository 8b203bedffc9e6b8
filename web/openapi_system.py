"""The OpenAPI part for health, readiness, queue counts, GPU figures and the transcription reset (web/system.py)."""
from __future__ import annotations

from typing import Any

from web.openapi_schema import array, boolean, error, integer, nullable, number, obj, operation, response, string

STATE = string("connected or disconnected", enum=["connected", "disconnected"])


def _memory() -> dict[str, Any]:
    return obj({"totalMb": number(), "usedMb": number(), "freeMb": number()})


def gpu_stats_schema() -> dict[str, Any]:
    gpu = obj({
        "id": integer(), "name": string(), "fanSpeedPercent": nullable(number()), "performanceState": string(),
        "memory": _memory(), "utilization": obj({"gpuPercent": nullable(number()), "memoryPercent": nullable(number())}),
        "temperature": obj({"currentCelsius": nullable(number())}),
        "power": obj({"drawWatts": nullable(number()), "limitWatts": nullable(number())}),
        "processes": array(obj({"pid": integer(), "name": string(), "memoryUsedMb": number()})),
        "isUnifiedMemory": boolean(),
    })
    return obj({
        "available": boolean("Whether an NVIDIA GPU was found"),
        "driverVersion": nullable(string()), "cudaVersion": nullable(string()),
        "gpus": array(gpu),
        "summary": obj({"gpuCount": integer(), "totalMemoryMb": number(), "totalMemoryUsedMb": number(),
                        "avgGpuUtilizationPercent": nullable(number()), "avgMemoryUtilizationPercent": nullable(number()),
                        "avgTemperatureCelsius": nullable(number()), "totalPowerDrawWatts": nullable(number()),
                        "totalPowerLimitWatts": nullable(number()), "isUnifiedMemory": boolean()}),
        "executionProvider": string(enum=["gpu", "cpu", "metal"]),
        "systemMemory": obj({"totalMb": number(), "usedMb": number(), "freeMb": number(), "percentUsed": number()}),
    })


def system_paths() -> dict[str, Any]:
    health = obj({"status": string(enum=["OK", "DEGRADED"]), "database": STATE, "elasticsearch": STATE,
                  "timestamp": string("ISO 8601")})
    ready = obj({"ready": boolean("True when the database is usable"), "timestamp": string("ISO 8601"),
                 "services": obj({"database": STATE, "redis": STATE, "elasticsearch": STATE, "llm": STATE,
                                  "whisper": STATE}),
                 "message": string("Only when not ready: what is missing")},
                required=["ready", "timestamp", "services"])
    return {
        "/api/health": {"get": operation("system", "api_health", "Database and search health", {
            "200": response("Both answer", health), "503": response("One of them does not", health)})},
        "/api/status/readiness": {"get": operation("system", "readiness", "Whether the backend is ready", {
            "200": response("Ready (the database and the job queue answer)", ready), "503": response("Not ready", ready)},
            description="llm and whisper say whether a worker for that queue is alive; they do not block readiness.")},
        "/api/jobs/active-count": {"get": operation("system", "active_count", "Transcriptions and analyses in progress", {
            "200": response("Counts", obj({"total": integer(), "transcription": integer(), "analysis": integer()}))})},
        "/api/jobs/reset-transcription": {"post": operation(
            "system", "reset_transcription", "Drop queued and running transcriptions", {
                "200": response("Reset", obj({"success": boolean(), "canceledJobs": integer()})),
                "503": error("The queue is unreachable; nothing was reset")},
            description="Queue messages are removed, the jobs canceled (a running one stops at its next segment) "
            "and their sessions marked failed, so `parley retranscribe --failed` can queue them again.")},
        "/api/system/gpu-stats": {"get": operation("system", "gpu_stats", "GPU and system memory figures", {
            "200": response("Figures (cached 1.5 s); available:false and real system memory without a GPU",
                            gpu_stats_schema())})},
    }


def access_paths() -> dict[str, Any]:
    """The browser sign-in for the operator pages (web/auth.py); API clients send a Bearer token instead."""
    page = response("The sign-in form", string(), media_type="text/html")
    form = {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": obj(
        {"token": string("An API token"), "next": string("Where to go afterwards (a path on this server)")})}}}
    redirect = response("Signed in: the parley_token cookie (HttpOnly, SameSite=Strict) is set; redirect to `next`",
                        headers={"Location": {"schema": string()}})
    return {
        "/auth/login": {
            "get": operation("admin", "login_form", "The sign-in form for the dashboard", {"200": page}),
            "post": operation("admin", "login", "Sign in with an API token", {
                "303": redirect, "400": response("No token given", string(), media_type="text/html"),
                "401": response("Unknown or revoked token", string(), media_type="text/html")},
                request_body=form),
        },
        "/auth/logout": {"post": operation("admin", "logout", "Sign out (clears the cookie)", {
            "303": response("Signed out; redirect to the sign-in form", headers={"Location": {"schema": string()}})})},
    }
