"""Backup (export/import) and reset of all data: the admin area of the sessions API."""
from __future__ import annotations

from flask import Blueprint

admin_bp = Blueprint("admin", __name__, url_prefix="/api/admin")
