"""Wall-clock time as Parley stores it: integer milliseconds since the epoch, in columns named `*_ms`.

Every table keeps this one convention. Where an API says epoch seconds (the transcription service's jobs,
the dashboard), the wire converts with `seconds`.
"""
from __future__ import annotations

import time


def now_ms() -> int:
    """Milliseconds since the Unix epoch, now."""
    return int(time.time() * 1000)


def seconds(ms: int | None) -> float | None:
    """Epoch milliseconds as epoch seconds, for the wire; None stays None."""
    return None if ms is None else ms / 1000
