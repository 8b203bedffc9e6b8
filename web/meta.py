"""Service metadata: liveness at /health and the endpoint index at /, declared."""
from __future__ import annotations

import datetime
from typing import Literal

from flask import Blueprint

from parley import __version__
from web.declared import Field, WireModel, endpoint

meta_bp = Blueprint("meta", __name__)

ENDPOINTS = {
    "health": "/health",
    "docs": "/api/docs",
    "openapi": "/api/openapi.json",
    "models": "/api/transcribe/models",
    "transcribe": "/api/transcribe/",
    "jobs": "/api/transcribe/jobs",
    "status": "/api/transcribe/status/{job_id}",
    "result": "/api/transcribe/result/{job_id}",
    "live": "/api/transcribe/live/{job_id}",
    "events": "/api/transcribe/events/{job_id}",
    "debug": "/api/transcribe/debug/{job_id}",
    "retranslate_segment": "/api/retranslate/segment",
    "retranslate_from_full": "/api/retranslate/segment-from-full?job_id={job_id}",
}


class Health(WireModel):
    status: Literal["ok"]
    timestamp: str = Field(description="Server time, ISO 8601", json_schema_extra={
        "example": "2024-01-01T12:00:00+00:00"})


class ServiceInfo(WireModel):
    name: str = Field(description="Service name")
    version: str = Field(description="Service version")
    endpoints: dict[str, str] = Field(description="Endpoint name to path")


@meta_bp.get("/health")
@endpoint(tag="meta", responses={200: (Health, "Service is up")})
def health():
    """Liveness check"""
    return Health(status="ok", timestamp=datetime.datetime.now(datetime.timezone.utc).isoformat())


@meta_bp.get("/")
@endpoint(tag="meta", responses={200: (ServiceInfo, "Service information")})
def service_info():
    """Service name, version and main endpoints"""
    return ServiceInfo(name="Parley", version=__version__, endpoints=ENDPOINTS)
