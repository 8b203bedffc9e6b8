"""Wall-clock time as the sessions tables and the sessions API store it: integer milliseconds since the epoch."""
from __future__ import annotations

import time


def now_ms() -> int:
    """Milliseconds since the Unix epoch, now."""
    return int(time.time() * 1000)
