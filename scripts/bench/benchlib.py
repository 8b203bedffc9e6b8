"""What the engine benchmarks share: production broker settings, the host line and a table printer."""
from __future__ import annotations

import os
from pathlib import Path

PRODUCTION_ENV = {"PARLEY_BROKER_HEARTBEAT_TIMEOUT_MS": "30000", "PARLEY_BROKER_MAINTENANCE_CHANCE": "10000",
                  "PARLEY_HEARTBEAT_S": "15"}


def host_line() -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "unknown CPU")
    return f"host: {cpu}, nproc {os.cpu_count()}, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"


def table(headers: list[str], rows: list[list]) -> str:
    cells = [headers] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells[1:])])
