"""The `parley` operator command: its group and shared helpers; the commands are in parley/cli/*.py.

It uses the same PARLEY_*, DATABASE_URL and REDIS_URL as the running stack and only does what the
web tier does (rows in the database, messages on the queues), so it is safe while the stack runs.
"""
from __future__ import annotations

import datetime

import click

from parley.config import ensure_dirs, get_settings


def open_db():
    from models import init_db, migrate

    settings = get_settings()
    ensure_dirs(settings)
    migrate(settings.database_url)
    return init_db(settings.database_url)


def when(epoch_ms: int | None) -> str:
    return datetime.datetime.fromtimestamp(epoch_ms / 1000).strftime("%Y-%m-%d %H:%M") if epoch_ms else "-"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Operate a Parley deployment (uses the same PARLEY_*, DATABASE_URL and REDIS_URL as the stack)."""


# The commands register themselves on `main` when their modules are imported.
from parley.cli import data, setup, voices  # noqa: E402

__all__ = ["data", "main", "open_db", "setup", "voices", "when"]
