"""What a request handler reads from the app: its settings and its event hub (both made once, in create_app)."""
from __future__ import annotations

from flask import current_app

from parley.config import Settings


def settings() -> Settings:
    return current_app.config["PARLEY_SETTINGS"]


def hub():
    """The web process's one Redis subscription, fanned out to its stream clients (web.streams.EventHub)."""
    return current_app.extensions["parley_hub"]
