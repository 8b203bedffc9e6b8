"""Worker middleware: database set-up at boot, and the heartbeats that say which workers are alive (read by jobs.heartbeats)."""
from __future__ import annotations

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

from jobs.heartbeats import (HEARTBEAT_INTERVAL_S, LAST_BEAT_KEY_PREFIX, LAST_BEAT_TTL_S, SPEECH_QUEUES,
                             WORKER_KEY_PREFIX, process_name)
from parley.config import ensure_dirs, get_settings

log = logging.getLogger(__name__)



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
        from workers import diarize

        queues = sorted(worker.consumer_whitelist or broker.get_declared_queues())
        self.key = f"{WORKER_KEY_PREFIX}{socket.gethostname()}:{os.getpid()}"
        self.info = {
            "name": process_name(),
            "log": f"{process_name()}.log",
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "queues": queues,
            "device": _device_label(),
            "diarization": diarize.available_here(),
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


def _device_label() -> str:
    """The GPUs this worker is pinned to (CUDA_VISIBLE_DEVICES), else cpu or auto."""
    settings = get_settings()
    if settings.cuda_visible_devices is not None:
        return settings.cuda_visible_devices
    return "cpu" if settings.device == "cpu" else "auto"
