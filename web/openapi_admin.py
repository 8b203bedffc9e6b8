"""The OpenAPI part for backup, restore and reset (web/admin.py)."""
from __future__ import annotations

from typing import Any


def admin_paths() -> dict[str, Any]:
    return {}
