"""Service metadata: liveness at /health and the endpoint index at /."""
from __future__ import annotations

import datetime

from flask import Blueprint, jsonify

from parley import __version__

meta_bp = Blueprint("meta", __name__)


@meta_bp.get("/health")
def health():
    return jsonify(status="ok", timestamp=datetime.datetime.now(datetime.timezone.utc).isoformat())


@meta_bp.get("/")
def index():
    return jsonify(
        name="Parley",
        version=__version__,
        endpoints={
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
        },
    )
