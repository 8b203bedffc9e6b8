"""Worker middleware: database set-up at boot, and heartbeats that say which workers are alive."""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import socket
import sys
import threading
import time

import dramatiq
import redis
from dramatiq.middleware import Middleware

from parley.config import ensure_dirs, get_settings

log = logging.getLogger(__name__)

WORKER_KEY_PREFIX = "parley:worker:"
# The last heartbeat of each worker name, kept after the worker stops, so a gone worker reads "exited".
LAST_BEAT_KEY_PREFIX = "parley:lastbeat:"
LAST_BEAT_TTL_S = 24 * 3600
HEARTBEAT_INTERVAL_S = 5.0


SPEECH_QUEUES = {"asr", "asr_quick"}


class WorkerBoot(Middleware):
    """Readies a worker process before it takes messages: database migrated, engines warmed up.

    Warm-up (PARLEY_WARMUP, default 1) loads the default Whisper model and runs the speaker encoder
    once, so the first job does not pay for model loading and numba's JIT compilation.
    """

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        from models import migrate
        from parley.logs import configure_logging

        settings = get_settings()
        ensure_dirs(settings)
        path = configure_logging(process_name(), log_dir=settings.log_dir)
        log.info("worker %s (pid %d) booting; log file %s", process_name(), os.getpid(), path)
        migrate(settings.database_url)

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        queues = set(worker.consumer_whitelist or broker.get_declared_queues())
        if get_settings().warmup and queues & SPEECH_QUEUES:
            from workers.pipeline import warm_up

            warm_up(get_settings())


class WorkerHeartbeat(Middleware):
    """Every few seconds, writes this worker's queues, device and current job under a key that expires.

    Readers (the upload readiness gate, the dashboard) see a worker as alive while its key exists.
    """

    def __init__(self, *, interval_s: float = HEARTBEAT_INTERVAL_S):
        self.interval_s = interval_s
        self.current: dict[str, str] = {}  # message id -> actor name, of messages being processed
        # message id -> "actor:first argument": the reconciler reads these to leave running jobs alone
        self.holding: dict[str, str] = {}
        self._stop = threading.Event()

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        queues = sorted(worker.consumer_whitelist or broker.get_declared_queues())
        self.key = f"{WORKER_KEY_PREFIX}{socket.gethostname()}:{os.getpid()}"
        self.info = {
            "name": process_name(),
            "log": f"{process_name()}.log",
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "queues": queues,
            "device": _device_label(),
            "diarization": diarization_available(),
            "started_at": time.time(),
        }
        self._worker = worker
        log.info("worker %s (pid %d) consuming queues %s on device %s", self.info["name"], os.getpid(),
                 ", ".join(queues), self.info["device"])
        threading.Thread(target=self._beat, name="parley-heartbeat", daemon=True).start()

    def before_worker_shutdown(self, broker, worker) -> None:
        self._stop.set()
        try:
            self._redis.delete(self.key)
            last = dict(self.info, busy=[], seen_at=time.time(), stopped_at=time.time())
            self._redis.set(LAST_BEAT_KEY_PREFIX + self.info["name"], json.dumps(last), ex=LAST_BEAT_TTL_S)
        except (redis.RedisError, AttributeError):
            pass

    def before_process_message(self, broker, message) -> None:
        self.current[message.message_id] = message.actor_name
        if message.args:
            self.holding[message.message_id] = f"{message.actor_name}:{message.args[0]}"

    def after_process_message(self, broker, message, *, result=None, exception=None) -> None:
        self.current.pop(message.message_id, None)
        self.holding.pop(message.message_id, None)

    after_skip_message = after_process_message

    def _held_jobs(self) -> list[str]:
        """"actor:first argument" of the messages this process runs or has fetched and not started yet.

        Dramatiq prefetches messages into in-memory queues; after a Redis restart those are in no Redis
        key, yet this worker will still run them, so they must count as held too.
        """
        held = set(self.holding.values())
        worker = getattr(self, "_worker", None)
        queues = [worker.work_queue] + [c.delay_queue for c in list(worker.consumers.values())] if worker else []
        for waiting in queues:
            for item in list(waiting.queue):  # a snapshot: the queue's own lock is not ours to take
                message = getattr(item, "message", None)
                if message is not None and message.args:
                    held.add(f"{message.actor_name}:{message.args[0]}")
        return sorted(held)

    def _beat(self) -> None:
        from parley.redisconn import client

        self._redis = client(get_settings().redis_url)
        while not self._stop.is_set():
            try:
                llm = sys.modules.get("workers.llm")  # loaded only in processes that run LLM work
                resident = getattr(llm, "resident", None)  # None while that module is still importing
                on_gpu = getattr(llm, "resident_on_gpu", None)
                state = dict(self.info, busy=sorted(self.current.values()), jobs=self._held_jobs(),
                             seen_at=time.time(),
                             llm_resident=resident() if resident else None,
                             llm_on_gpu=bool(on_gpu and on_gpu()))
                self._redis.set(self.key, json.dumps(state), ex=int(self.interval_s * 3))
                self._redis.set(LAST_BEAT_KEY_PREFIX + self.info["name"], json.dumps(state), ex=LAST_BEAT_TTL_S)
            except Exception as exc:  # noqa: BLE001  (a dead heartbeat would make a live worker look dead)
                log.warning("worker heartbeat failed: %s", exc)
            self._stop.wait(self.interval_s)


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


def _device_label() -> str:
    """The GPUs this worker is pinned to (CUDA_VISIBLE_DEVICES), else cpu or auto."""
    settings = get_settings()
    if settings.cuda_visible_devices is not None:
        return settings.cuda_visible_devices
    return "cpu" if settings.device == "cpu" else "auto"


def last_beats(conn: redis.Redis) -> list[dict]:
    """The last heartbeat of every worker name seen in the past day, alive or not."""
    keys = list(conn.scan_iter(match=LAST_BEAT_KEY_PREFIX + "*", count=200))
    values = conn.mget(keys) if keys else []
    return [json.loads(v) for v in values if v]


def diarization_available() -> bool:
    """Whether this process can label speakers: not switched off (PARLEY_DIARIZATION=0), sherpa-onnx is
    installed, and the diarization models are in the model store (scripts/bootstrap makes them)."""
    if not get_settings().diarization:
        return False
    if importlib.util.find_spec("sherpa_onnx") is None:
        return False
    folder = get_settings().model_dir / "diarization"
    return all((folder / name).is_file() for name in ("segmentation-3.0.onnx", "campplus-zh-en-common.onnx"))


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
