"""Which workers are alive: the heartbeat keys workers write in Redis, and reading them (web, CLI, reconciler).

Worker processes write the keys (jobs.middleware.WorkerHeartbeat); anything may read them without loading
an actor or an engine.
"""
from __future__ import annotations

import json
import os
import socket
import sys

import redis

from parley.config import get_settings

WORKER_KEY_PREFIX = "parley:worker:"
# The last heartbeat of each worker name, kept after the worker stops, so a gone worker reads "exited".
LAST_BEAT_KEY_PREFIX = "parley:lastbeat:"
LAST_BEAT_TTL_S = 24 * 3600
HEARTBEAT_INTERVAL_S = 5.0

SPEECH_QUEUES = {"asr", "asr_quick"}


def process_name() -> str:
    """This process's name (PARLEY_PROCESS_NAME, set per Procfile line); without one, its queues joined by '-'."""
    name = get_settings().process_name
    if name:
        return name
    argv = sys.argv
    queues = []
    if "--queues" in argv:  # dramatiq's own command line: ... --queues asr asr_quick [--other ...]
        for arg in argv[argv.index("--queues") + 1:]:
            if arg.startswith("-"):
                break
            queues.append(arg)
    return "-".join(queues) or "worker"


def last_beats(conn: redis.Redis) -> list[dict]:
    """The last heartbeat of every worker name seen in the past day, alive or not."""
    keys = list(conn.scan_iter(match=LAST_BEAT_KEY_PREFIX + "*", count=200))
    values = conn.mget(keys) if keys else []
    return [json.loads(v) for v in values if v]


def alive_workers(conn: redis.Redis) -> list[dict]:
    """The workers whose heartbeat has not expired, less those of this host whose process is gone.

    A worker killed with SIGKILL leaves its last heartbeat for up to three intervals; beside its
    replacement it would count twice (and show as two workers) until then.
    """
    keys = list(conn.scan_iter(match=WORKER_KEY_PREFIX + "*", count=200))
    values = conn.mget(keys) if keys else []
    return [beat for beat in (json.loads(v) for v in values if v) if not _gone_from_this_host(beat)]


def _gone_from_this_host(beat: dict) -> bool:
    if beat.get("host") != socket.gethostname() or not beat.get("pid"):
        return False
    try:
        os.kill(int(beat["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, OverflowError):
        return False  # a process of another user holds the pid: alive as far as we can tell
    return False
