"""The OpenAPI part for the dashboard, /metrics and the process view (web/dashboard.py, web/metrics.py, web/processes.py)."""
from __future__ import annotations

from typing import Any

from web.processes import expected_names


def dashboard_paths() -> dict[str, Any]:
    from web.openapi_schema import (array, boolean, error, header, integer, nullable, number, obj, operation, path_param,
                                    response, sse_events, string)

    tag, when = "monitoring", "(Unix epoch seconds)"
    queue = obj({"name": string(), "waiting": integer("In the queue, not yet taken by a worker"),
                 "in_progress": integer("Taken by a worker and not yet acknowledged (running or prefetched)"),
                 "delayed": integer("Waiting out the backoff before a retry"), "dead": integer("Dead-lettered")})
    worker = obj({"id": string("host:pid"), "host": string(), "pid": integer(), "queues": array(string()),
                  "device": string("CUDA_VISIBLE_DEVICES, cpu or auto"), "busy": array(string("Actor name")),
                  "started_at": number(when), "seen_at": number(f"Last heartbeat {when}")},
                 description="A worker whose heartbeat has not expired; more fields of the heartbeat may follow")
    letter = obj({"queue": string(), "message_id": string("The broker's id of the message"),
                  "actor": string("transcribe, retranscribe, generate, analyze, ..."), "args": array({}),
                  "dead_at": number(f"When it was dead-lettered {when}"), "retries": integer(),
                  "error": string("Last line of the traceback it failed with, else the error of the job it "
                                  "names; may be empty")})
    job = obj({"id": string("UUID; an analysis job's integer id as digits"),
               "kind": string("transcribe, retranscribe, analysis, or an LLM job's kind (chat_reply, summary, ...)"),
               "queue": string(), "status": string(), "progress": nullable(number("Percent")), "message": string(),
               "error": nullable(string()), "created_at": number(when), "started_at": nullable(number(when)),
               "finished_at": nullable(number(when)),
               "duration_s": nullable(number("Seconds from the start (or creation, for kinds that record no start) "
                                             "to the end or now; null while waiting")),
               "worker": nullable(string("host:pid that last ran it")),
               "cancelable": boolean("Not finished: POST /dashboard/jobs/{job_id}/cancel applies")})
    no_redis_yet = string("Why Redis could not be read; queues, workers and dead letters are then empty")
    state = obj({"generated_at": number(when), "redis_error": nullable(no_redis_yet),
                 "queues": array(queue, "asr, asr_quick, io, llm and any other queue found in Redis"),
                 "workers": array(worker), "dead_letters": array(letter, "Newest first, up to 50 per queue"),
                 "jobs": array(job, "Every unfinished job and the 25 newest finished ones of each type, newest first")})
    queue_param = path_param("queue", "Queue name, e.g. asr")
    message_param = path_param("message_id", "message_id of a dead letter in GET /dashboard/state")
    unknown = error("Unknown queue, or no such dead letter in it")
    no_redis = error("Redis is unavailable; nothing was changed")
    return {
        "/dashboard": {"get": operation(
            tag, "dashboard", "The operators' queue dashboard (HTML)",
            {"200": response("HTML page, rendered with the current state and kept live by its script",
                             string(), media_type="text/html")},
            description="Queues with waiting, in-progress, delayed and dead-lettered counts; live workers; dead "
            "letters with Retry and Delete; recent and running jobs with Cancel. The page follows "
            "GET /dashboard/stream.")},
        "/dashboard/static/{filename}": {"get": operation(
            tag, "dashboard_static", "The dashboard's script and style sheet",
            {"200": response("dashboard.js or dashboard.css", string(), media_type="application/octet-stream"),
             "404": error("No such file")},
            parameters=[path_param("filename", "dashboard.js or dashboard.css")])},
        "/dashboard/state": {"get": operation(
            tag, "dashboard_state", "The dashboard's current state (JSON)",
            {"200": response("Snapshot", state)})},
        "/dashboard/stream": {"get": operation(
            tag, "dashboard_stream", "The dashboard's state, live (Server-Sent Events)",
            {"200": response("`event: snapshot` frames whose data is the JSON of GET /dashboard/state",
                             sse_events(state, "`event: snapshot` and the state's JSON"),
                             media_type="text/event-stream",
                             headers={"Cache-Control": header("no-cache, no-transform"),
                                      "X-Accel-Buffering": header("no: proxies must not buffer the stream",
                                                                  string(enum=["no"]))})},
            description="A snapshot at once, then whenever something changed (checked every second; the ticking "
            "durations of running jobs alone are no change); a `: keep-alive` comment at least every 5 s. The "
            "stream ends after 10 minutes; EventSource reconnects (retry: 2000).")},
        "/dashboard/dead-letters/{queue}/{message_id}/retry": {"post": operation(
            tag, "dashboard_retry_dead_letter", "Put a dead letter back on its queue",
            {"200": response("Moved to the end of the queue's waiting list", obj({
                "retried": boolean(), "queue": string(), "message_id": string(), "actor": string(),
                "job_id": nullable(string("The failed job it names, made queued (analysis: pending) again"))})),
             "404": unknown, "503": no_redis},
            parameters=[queue_param, message_param],
            description="Atomic: the message leaves the dead letters and joins the waiting list with its retry count "
            "reset. A transcription, LLM or analysis job it names that had failed is set back to queued (its "
            "partial results were already dropped), so the worker runs it again instead of skipping it.")},
        "/dashboard/dead-letters/{queue}/{message_id}": {"delete": operation(
            tag, "dashboard_delete_dead_letter", "Drop a dead letter for good",
            {"200": response("Deleted", obj({"deleted": boolean(), "queue": string(), "message_id": string()})),
             "404": unknown, "503": no_redis},
            parameters=[queue_param, message_param],
            description="The job it names, if any, is left as it is (failed).")},
        "/dashboard/jobs/{job_id}/cancel": {"post": operation(
            tag, "dashboard_cancel_job", "Cancel a transcription, LLM or analysis job",
            {"202": response("Canceled, or cancellation requested (a running job stops at its next step)", obj({
                "id": string(), "kind": string(), "status": string("canceled; canceling or processing while the "
                                                                    "job winds down"), "message": string()})),
             "400": error("An analysis job id of 0"),
             "404": error("No such job"),
             "409": error("The job is already completed, failed or canceled")},
            parameters=[path_param("job_id", "id from GET /dashboard/state (a UUID, or an analysis job's integer)")],
            description="A transcription becomes canceled at once (its waiting queue message is dropped; a worker "
            "running it stops at its next segment) and its session failed (or completed, for a re-transcription "
            "that keeps a transcript). An LLM job: canceled if still queued, else it stops at its next token. An "
            "analysis job becomes canceling, as POST /api/analysis-jobs/{job_id}/cancel does.")},
    }


def metrics_paths() -> dict[str, Any]:
    from web.openapi_schema import operation, response, string

    exposition = {"text/plain; version=0.0.4; charset=utf-8": {"schema": string(
        "Prometheus text exposition format 0.0.4", example="parley_queue_messages{queue=\"asr\",state=\"waiting\"} 2.0")}}
    return {"/metrics": {"get": operation(
        "monitoring", "metrics", "Prometheus metrics", {"200": response("Metrics in Prometheus text format",
                                                                        content=exposition)},
        description="For a Prometheus scrape job. HTTP: `parley_http_requests_total` (route template, method, "
        "status) and `parley_http_request_duration_seconds`, summed over all web processes. Read from Redis at "
        "scrape time: `parley_queue_messages` (queue; state waiting, in_progress, delayed, dead), `parley_workers`, "
        "`parley_workers_busy`. Read from the database (cached a few seconds): `parley_jobs` (type, kind, "
        "status), `parley_job_duration_seconds` (creation to end), `parley_transcription_processing_seconds` "
        "(first start to end), `parley_transcription_realtime_factor` (audio seconds per processing second), "
        "`parley_transcription_audio_seconds_total`, `parley_transcription_elapsed_seconds_total`, "
        "`parley_llm_generation_seconds`, `parley_llm_completion_tokens_total`, `parley_llm_tokens_per_second`. "
        "`parley_metrics_source_up` says whether Redis and the database could be read. Under `parley supervise`: "
        "`parley_process_restarts_total`, `parley_process_up` and `parley_process_crash_looping` (process).")}}


def process_paths() -> dict[str, Any]:
    from web.openapi_schema import array, error, integer, obj, operation, path_param, response, string

    port = obj({"PrivatePort": integer("Port the process listens on"), "PublicPort": integer("Port clients use"),
                "Type": string(enum=["tcp"]), "IP": string("Address it is reached at")}, required=["PrivatePort", "Type"])
    container = obj({
        "id": string("host:pid of the process (the database: its file or host:port/name); N/A when not found"),
        "name": string("parley-web, parley-worker-<name>, parley-redis, parley-database, parley-search, or an "
                       "alias: therascript_whisper_service, therascript_elasticsearch_service"),
        "image": string("What runs, as name:version, e.g. redis:7.0.15, sqlite:3.40.1; N/A when not found"),
        "state": string(enum=["running", "restarting", "exited", "not_found", "unhealthy"]),
        "status": string("Docker-style wording, e.g. 'Up 3 minutes (idle)', 'Exited (stopped 2 minutes ago)', "
                         "'Container not found'"),
        "ports": array(port),
        "details": obj({}, required=None, description="kind (web, worker, redis, database, search, alias); workers: "
                       "host, pid, queues, device, busy; aliases: aliasOf. Under `parley supervise`: "
                       "supervisor {state, pid, restarts, crashLooping, lastExit, lastExitAt, lastOutput}"),
    }, required=["id", "name", "image", "state", "status", "ports"])
    logs = obj({"logs": string("The last 200 lines, with UTC timestamps, secrets redacted; or why there is no log"),
                "containerName": string("The name asked for")})
    return {
        "/api/docker/status": {"get": operation(
            "monitoring", "docker_status", "The deployment's processes, as containers",
            {"200": response("Every process, sorted by name", obj({"containers": array(container)}))},
            description="Parley runs no containers: this lists its processes in the sessions API's shape. Workers' "
            "state comes from heartbeats (running; exited once a worker's heartbeat stopped; not_found when the "
            "Procfile expects one that never beat); Redis, the database and search are probed (running or "
            "unhealthy). Under `parley supervise` (scripts/start) a process waiting to be restarted, or "
            "crash-looping and not up, is restarting, and its status names its last exit and restart count. "
            "therascript_whisper_service stands for the transcription workers and "
            "therascript_elasticsearch_service for the search backend.")},
        "/api/docker/logs/{name}": {"get": operation(
            "monitoring", "docker_logs", "The last lines of a process's log",
            {"200": response("The log's last 200 lines, or a sentence saying why the process has none", logs),
             "400": error("Not a known process name; the message lists the known names"),
             "404": error("The name holds a line break, which no process name has: no route matches it")},
            parameters=[{**path_param("name", "A name from GET /api/docker/status: those the Procfile stands for "
                                              "(listed here). Workers beyond them (another machine's, or a "
                                              "second process of one line: name.1, name.2) are answered too"),
                         "schema": string(enum=expected_names())}],
            description="Each process writes `<PARLEY_LOG_DIR>/<process name>.log` (default `<data_dir>/logs`). An "
            "alias gives the logs of the processes it stands for.")},
    }


def monitoring_paths() -> dict[str, Any]:
    return {**dashboard_paths(), **metrics_paths(), **process_paths()}
