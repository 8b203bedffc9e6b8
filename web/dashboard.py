"""The operators' queue dashboard: a server-rendered page kept live over SSE."""
from __future__ import annotations

from flask import Blueprint

dashboard_bp = Blueprint("dashboard", __name__, url_prefix=None)
