"""Metrics read at scrape time from Redis and the database: queue depths, workers, job counts, durations, speeds.

Jobs run in worker processes, often on other hosts, so nothing here is counted in memory: every figure is
read from what all processes share (Dramatiq's Redis keys, worker heartbeats, job rows). Any web process
therefore gives the same answer, whichever process did the work, and a restart loses nothing.

Totals are over every job row still stored: they only fall when jobs are deleted (a session deleted with
its jobs), which Prometheus treats like a counter reset. The database part is one aggregate query per job
table (a single pass, no per-row data leaves the database), cached for `cache_s` so frequent scrapes from
several web processes stay cheap on a large table.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import peewee
import redis
from peewee import SQL, Case, fn
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from models import AnalysisJob, Job, LlmJob, UsageLog, db
from models.statuses import TERMINAL, JobStatus

log = logging.getLogger(__name__)

#: Seconds: from a re-transcribed segment (a second or two) to a multi-hour recording.
DURATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 3600, 7200, 14400)
#: Seconds of one language-model call's generation.
GENERATION_BUCKETS = (0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
#: Audio seconds per processing second: below 1 is slower than real time.
REALTIME_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 20, 50, 100, 200)
#: Completion tokens per second of generation.
TOKENS_PER_SECOND_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)

#: What `queue depth` means in Dramatiq's Redis broker (see jobs/queues.py).
QUEUE_STATES = ("waiting", "in_progress", "delayed", "dead")


@dataclass(eq=False)  # registries key collectors by identity
class StoreCollector:
    """A prometheus_client collector over Redis and the database; register it in the registry of a scrape.

    `redis_client` is a callable so a collector can outlive a reconnect; `queues` are the Dramatiq queue
    names to report (the broker's, fixed, so label values stay few); `data_dir`, where given, is where
    the process supervisors of this host keep their state (parley/supervisor.py).
    """

    redis_client: Callable[[], redis.Redis]
    queues: Sequence[str]
    cache_s: float = 5.0
    data_dir: Path | None = None
    _cached: tuple[float, list[Metric]] | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def describe(self) -> list[Metric]:
        # Without this the registry would scrape Redis and the database just to learn the names.
        return []

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("parley_metrics_source_up", "Whether this scrape could read the source (1) or not (0)",
                               labels=["source"])
        redis_families, redis_ok = self._redis_families()
        db_families, db_ok = self._database_families()
        up.add_metric(["redis"], 1 if redis_ok else 0)
        up.add_metric(["database"], 1 if db_ok else 0)
        yield up
        yield from redis_families
        yield from db_families
        yield from self._process_families()

    # --- the supervisor: restarts and crash loops ---------------------------------------------------
    def _process_families(self) -> list[Metric]:
        from parley.supervisor import read_states

        lines = read_states(self.data_dir) if self.data_dir else {}
        if not lines:
            return []  # not started by `parley supervise`: nothing is known of restarts
        restarts = CounterMetricFamily("parley_process_restarts", "Restarts of a Procfile process by the supervisor "
                                       "since it started", labels=["process"])
        up = GaugeMetricFamily("parley_process_up", "Whether the Procfile process is running (1) or waiting to be "
                               "restarted or stopped (0)", labels=["process"])
        looping = GaugeMetricFamily("parley_process_crash_looping", "Whether the Procfile process keeps exiting "
                                    "within seconds of each start (1) or not (0)", labels=["process"])
        for name, line in sorted(lines.items()):
            restarts.add_metric([name], float(line.get("restarts") or 0))
            up.add_metric([name], 1 if line.get("state") == "running" else 0)
            looping.add_metric([name], 1 if line.get("crash_looping") else 0)
        return [restarts, up, looping]

    # --- Redis: queues and workers ------------------------------------------------------------------
    def _redis_families(self) -> tuple[list[Metric], bool]:
        from jobs import queues
        from jobs.heartbeats import alive_workers

        depth = GaugeMetricFamily(
            "parley_queue_messages",
            "Messages in a Dramatiq queue: waiting to be fetched, in progress (fetched by a worker, running or "
            "prefetched, not yet acknowledged), delayed (retry back-off), dead (dead-lettered)",
            labels=["queue", "state"])
        workers = GaugeMetricFamily("parley_workers", "Worker processes whose heartbeat is current, by queue they "
                                    "consume", labels=["queue"])
        busy = GaugeMetricFamily("parley_workers_busy", "Of those, the ones processing a message now", labels=["queue"])
        try:
            conn = self.redis_client()
            counted = [queues.counts(conn, queue) for queue in self.queues]
            alive = alive_workers(conn)
        except redis.RedisError as exc:
            log.warning("metrics: cannot read Redis: %s", exc)
            return [], False
        for c in counted:
            for state in QUEUE_STATES:
                depth.add_metric([c.name, state], getattr(c, state))
        for queue in self.queues:
            consuming = [w for w in alive if queue in w.get("queues", [])]
            workers.add_metric([queue], len(consuming))
            busy.add_metric([queue], sum(1 for w in consuming if w.get("busy")))
        return [depth, workers, busy], True

    # --- database: jobs, durations, speeds ----------------------------------------------------------
    def _database_families(self) -> tuple[list[Metric], bool]:
        with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < self.cache_s:
                return self._cached[1], True
            try:
                with db.connection_context():
                    families = _job_counts() + _job_durations() + _transcription_speed() + _llm_speed()
            except peewee.PeeweeException as exc:
                log.warning("metrics: cannot read the database: %s", exc)
                return [], False
            self._cached = (time.monotonic(), families)
            return families, True


def _job_counts() -> list[Metric]:
    family = GaugeMetricFamily("parley_jobs", "Jobs stored, by type, kind and status",
                               labels=["type", "kind", "status"])
    for kind, status, count in Job.select(Job.kind, Job.status, fn.COUNT(SQL("*"))).group_by(
            Job.kind, Job.status).tuples():
        family.add_metric(["transcription", kind, status], count)
    for kind, status, count in LlmJob.select(LlmJob.kind, LlmJob.status, fn.COUNT(SQL("*"))).group_by(
            LlmJob.kind, LlmJob.status).tuples():
        family.add_metric(["llm", kind, status], count)
    for status, count in AnalysisJob.select(AnalysisJob.status, fn.COUNT(SQL("*"))).group_by(
            AnalysisJob.status).tuples():
        family.add_metric(["analysis", "analysis", status], count)
    return [family]


def _seconds_between(start_ms: Any, end_ms: Any) -> Any:
    """SQL for the seconds between two epoch-millisecond columns (a float, not integer division)."""
    return (end_ms - start_ms) / 1000.0


def _job_durations() -> list[Metric]:
    total = HistogramMetricFamily(
        "parley_job_duration_seconds",
        "Seconds from a job's creation to its end, queue wait included (LLM and analysis jobs store no start "
        "time), for finished jobs, by type, kind and final status", labels=["type", "kind", "status"])
    finished = Job.status.in_(Job.TERMINAL) & Job.finished_at_ms.is_null(False)
    _add_histogram(total, Job, _seconds_between(Job.created_at_ms, Job.finished_at_ms), [Job.kind, Job.status],
                   finished & (Job.finished_at_ms >= Job.created_at_ms), DURATION_BUCKETS, fixed=["transcription"])
    _add_histogram(total, LlmJob, _seconds_between(LlmJob.created_at_ms, LlmJob.finished_at_ms),
                   [LlmJob.kind, LlmJob.status],
                   LlmJob.status.in_(Job.TERMINAL) & LlmJob.finished_at_ms.is_null(False)
                   & (LlmJob.finished_at_ms >= LlmJob.created_at_ms), DURATION_BUCKETS, fixed=["llm"])
    _add_histogram(total, AnalysisJob, _seconds_between(AnalysisJob.created_at_ms, AnalysisJob.completed_at_ms),
                   [AnalysisJob.status],
                   AnalysisJob.status.in_(TERMINAL)
                   & AnalysisJob.completed_at_ms.is_null(False)
                   & (AnalysisJob.completed_at_ms >= AnalysisJob.created_at_ms), DURATION_BUCKETS,
                   fixed=["analysis", "analysis"])

    processing = HistogramMetricFamily(
        "parley_transcription_processing_seconds",
        "Seconds from a transcription job's first start on a worker to its end (a resumed job counts the time "
        "it waited to resume), by kind and final status", labels=["kind", "status"])
    _add_histogram(processing, Job, _seconds_between(Job.started_at_ms, Job.finished_at_ms), [Job.kind, Job.status],
                   finished & Job.started_at_ms.is_null(False) & (Job.finished_at_ms >= Job.started_at_ms),
                   DURATION_BUCKETS)

    return [total, processing]


def _transcription_speed() -> list[Metric]:
    done = ((Job.kind == "transcribe") & (Job.status == JobStatus.COMPLETED) & (Job.audio_duration > 0)
            & Job.started_at_ms.is_null(False) & (Job.finished_at_ms > Job.started_at_ms))
    elapsed = _seconds_between(Job.started_at_ms, Job.finished_at_ms)
    rtf = HistogramMetricFamily(
        "parley_transcription_realtime_factor",
        "Real-time factor of each completed transcription: seconds of audio per second of processing (decoding, "
        "recognition and speaker labels); 10 means ten times faster than real time", labels=["model"])
    _add_histogram(rtf, Job, Job.audio_duration / elapsed, [Job.model_name], done, REALTIME_BUCKETS)
    # The histogram's sum adds ratios; these two give the fleet's factor: rate(audio) / rate(elapsed).
    audio = CounterMetricFamily("parley_transcription_audio_seconds", "Seconds of audio in completed "
                                "transcriptions", labels=["model"])
    spent = CounterMetricFamily("parley_transcription_elapsed_seconds", "Seconds of processing those "
                                "transcriptions took", labels=["model"])
    for model, audio_s, spent_s in Job.select(Job.model_name, fn.SUM(Job.audio_duration), fn.SUM(elapsed)).where(
            done).group_by(Job.model_name).tuples():
        audio.add_metric([model], float(audio_s or 0))
        spent.add_metric([model], float(spent_s or 0))
    return [rtf, audio, spent]


def _llm_speed() -> list[Metric]:
    # Each language-model call is logged with its completion tokens and generation milliseconds. The model
    # label takes the names actually used, which a deployment keeps to a handful; source is a fixed set.
    timed = (UsageLog.type == "llm") & (UsageLog.duration > 0)
    generation = HistogramMetricFamily(
        "parley_llm_generation_seconds", "Seconds one language-model call spent generating, by model and what it "
        "was for", labels=["model", "source"])
    _add_histogram(generation, UsageLog, UsageLog.duration / 1000.0, [UsageLog.model, UsageLog.source], timed,
                   GENERATION_BUCKETS)
    # rate(tokens) / rate(parley_llm_generation_seconds_sum) is the overall tokens per second.
    tokens = CounterMetricFamily("parley_llm_completion_tokens", "Completion tokens generated by those calls",
                                 labels=["model"])
    for model, token_sum in UsageLog.select(UsageLog.model, fn.SUM(fn.COALESCE(UsageLog.completion_tokens, 0))).where(
            timed).group_by(UsageLog.model).tuples():
        tokens.add_metric([model], float(token_sum or 0))
    speed = HistogramMetricFamily(
        "parley_llm_tokens_per_second", "Completion tokens per second of generation, per language-model call",
        labels=["model"])
    _add_histogram(speed, UsageLog, UsageLog.completion_tokens * 1000.0 / UsageLog.duration, [UsageLog.model],
                   timed & (UsageLog.completion_tokens > 0), TOKENS_PER_SECOND_BUCKETS)
    return [generation, tokens, speed]


def _add_histogram(family: HistogramMetricFamily, model: type[peewee.Model], value: Any, labels: list[Any],
                   where: Any, buckets: Sequence[float], *, fixed: Sequence[str] = ()) -> None:
    """One grouped query: per value of the `labels` columns, how many values fall at or under each bucket
    bound, their count and sum. `fixed` label values go first, the same for every row."""
    columns = list(labels) + [fn.SUM(Case(None, [(value <= bound, 1)], 0)) for bound in buckets]
    columns += [fn.COUNT(SQL("*")), fn.SUM(value)]
    for row in model.select(*columns).where(where).group_by(*labels).tuples():
        label_values = [*fixed, *(str(v) for v in row[:len(labels)])]
        counts = row[len(labels):len(labels) + len(buckets)]
        pairs = [(floatToGoString(bound), float(n or 0)) for bound, n in zip(buckets, counts)]
        pairs.append(("+Inf", float(row[-2])))
        family.add_metric(label_values, pairs, float(row[-1] or 0))
