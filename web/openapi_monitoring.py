"""The OpenAPI part for the dashboard, /metrics and the process view (web/dashboard.py, web/metrics.py, web/processes.py)."""
from __future__ import annotations

from typing import Any


def dashboard_paths() -> dict[str, Any]:
    return {}


def metrics_paths() -> dict[str, Any]:
    return {}


def process_paths() -> dict[str, Any]:
    return {}


def monitoring_paths() -> dict[str, Any]:
    return {**dashboard_paths(), **metrics_paths(), **process_paths()}
