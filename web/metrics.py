"""Prometheus metrics at /metrics: HTTP requests, queue depths, job durations, speeds; the route declared."""
from __future__ import annotations

import logging
import os
import time

from flask import Blueprint, Flask, Response, current_app, g, request

from parley.config import get_settings
from web.declared import Documented, endpoint

# Production runs several gunicorn worker processes (Procfile: --workers ${PARLEY_WEB_PROCESSES:-2}) and a
# scrape reaches only one of them, so in-memory counters would jump between the processes' own totals.
# prometheus_client's multiprocess mode fixes that: with PROMETHEUS_MULTIPROC_DIR set before prometheus_client
# is first imported, every process writes its counters to memory-mapped files in that directory, and a scrape
# of any process sums all the files, those of exited processes included (counters must not fall when a worker
# is recycled). The launcher sets the variable and empties the directory each time the web tier starts
# (Procfile `web:` line; tests: Stack.start_web), since stale files would add an earlier run's counts.
# Only counters and histograms live here, so a dead process's files need no mark_process_dead clean-up.
# Without the variable (one process, e.g. `flask run`) plain in-memory metrics are exact.
MULTIPROC_DIR = get_settings().prometheus_multiproc_dir
if MULTIPROC_DIR:
    os.makedirs(MULTIPROC_DIR, exist_ok=True)  # before the first metric opens its file there

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest  # noqa: E402
from prometheus_client import multiprocess, values  # noqa: E402

log = logging.getLogger(__name__)

metrics_bp = Blueprint("metrics", __name__, url_prefix=None)

#: The classic text format, which every Prometheus reads; generate_latest writes it for names like ours
#: (prometheus_client 0.26's CONTENT_TYPE_LATEST names 1.0.0, which only new servers negotiate).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Label for requests that matched no route (404s, 405s): raw paths would make one series per URL tried.
UNMATCHED = "<unmatched>"
METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
#: Seconds until the response is handed to the server (for streams: until their headers).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# This process's own metrics; in multiprocess mode a scrape reads the files instead of this registry.
_local = CollectorRegistry()
HTTP_REQUESTS = Counter("parley_http_requests", "HTTP requests answered, by route template, method and status",
                        ["route", "method", "status"], registry=_local)
HTTP_LATENCY = Histogram("parley_http_request_duration_seconds", "Seconds to answer an HTTP request, by route "
                         "template and method (streamed responses: until the headers)", ["route", "method"],
                         buckets=LATENCY_BUCKETS, registry=_local)


def _multiprocess() -> bool:
    # True when prometheus_client chose file-backed values at import, i.e. the variable was set in time.
    return values.ValueClass is not values.MutexValue


def install_metrics(app: Flask) -> None:
    """Count every response by the template of the route it matched, and offer the store's figures."""
    from jobs.broker import QUEUES
    from services.metrics import StoreCollector

    if MULTIPROC_DIR and not _multiprocess():
        log.warning("PROMETHEUS_MULTIPROC_DIR is set but prometheus_client was imported before it was: "
                    "/metrics counts this process only")
    app.extensions["parley_metrics"] = StoreCollector(
        redis_client=lambda: app.extensions["parley_redis"], queues=list(QUEUES),
        data_dir=app.config["PARLEY_SETTINGS"].data_dir,
        cache_s=app.config["PARLEY_SETTINGS"].metrics_cache_s)

    @app.after_request
    def _count(response):
        rule = request.url_rule
        route = rule.rule if rule is not None else UNMATCHED
        method = request.method if request.method in METHODS else "other"
        # The request clock of web/__init__.py starts first of all before_request hooks, so access-control
        # refusals and CORS preflights are timed too.
        started = g.get("started")
        HTTP_REQUESTS.labels(route, method, str(response.status_code)).inc()
        if started is not None:
            HTTP_LATENCY.labels(route, method).observe(time.perf_counter() - started)
        return response


EXPOSITION = Documented("Metrics in Prometheus text format", {CONTENT_TYPE: {"schema": {
    "type": "string", "description": "Prometheus text exposition format 0.0.4",
    "example": 'parley_queue_messages{queue="asr",state="waiting"} 2.0'}}})


@metrics_bp.get("/metrics")
@endpoint(tag="monitoring", operation_id="metrics", responses={200: EXPOSITION})
def scrape():
    """Prometheus metrics

    For a Prometheus scrape job. HTTP: `parley_http_requests_total` (route template, method, status) and
    `parley_http_request_duration_seconds`, summed over all web processes. Read from Redis at scrape time:
    `parley_queue_messages` (queue; state waiting, in_progress, delayed, dead), `parley_workers`,
    `parley_workers_busy`. Read from the database (cached a few seconds): `parley_jobs` (type, kind, status),
    `parley_job_duration_seconds` (creation to end), `parley_transcription_processing_seconds` (first start to
    end), `parley_transcription_realtime_factor` (audio seconds per processing second),
    `parley_transcription_audio_seconds_total`, `parley_transcription_elapsed_seconds_total`,
    `parley_llm_generation_seconds`, `parley_llm_completion_tokens_total`, `parley_llm_tokens_per_second`.
    `parley_metrics_source_up` says whether Redis and the database could be read. Under `parley supervise`:
    `parley_process_restarts_total`, `parley_process_up` and `parley_process_crash_looping` (process).
    """
    registry = CollectorRegistry()
    if _multiprocess():
        multiprocess.MultiProcessCollector(registry, path=MULTIPROC_DIR)
    else:
        registry.register(_LocalMetrics())
    registry.register(current_app.extensions["parley_metrics"])
    return Response(generate_latest(registry), mimetype=None, content_type=CONTENT_TYPE)


class _LocalMetrics:
    """This process's registry as one collector of a scrape's registry."""

    def collect(self):
        return _local.collect()

    def describe(self):
        return []
