"""The actor that keeps the search index current, on the `io` queue.

Each message names one operation on one session or chat (see `services.search.apply`); operations read the
current rows and replace what the index holds for them, so a repeated or late message does no harm.
"""
from __future__ import annotations

import dramatiq

from jobs.broker import broker  # noqa: F401  (the broker must exist before actors are declared)


# Retried a few times quickly: a search engine that is briefly away must not lose an update.
@dramatiq.actor(queue_name="io", max_retries=5, min_backoff=500, max_backoff=30_000, time_limit=600_000)
def update_search(op: str, ident: int) -> None:
    from services import search

    search.apply(op, ident)
