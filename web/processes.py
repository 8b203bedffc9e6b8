"""The deployment's processes in the shape of the sessions API's Docker endpoints."""
from __future__ import annotations

from flask import Blueprint

processes_bp = Blueprint("processes", __name__, url_prefix="/api/docker")
