"""pytest plugin: with PARLEY_NO_SKIPS=1 (set by .ci/run) a skipped test fails the run.

A test that silently does not run where chromium, root or PostgreSQL is missing would let a regression
through; CI has them all, so there a skip means something is broken.
"""
from __future__ import annotations

import os

_SKIPPED: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail") and os.environ.get("PARLEY_NO_SKIPS") == "1":
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _SKIPPED.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session, exitstatus):
    if _SKIPPED:
        print("\nPARLEY_NO_SKIPS=1, and these tests were skipped:\n  " + "\n  ".join(_SKIPPED))
        if session.exitstatus == 0:
            session.exitstatus = 1
