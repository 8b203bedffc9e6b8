"""The OpenAPI part for multi-session analysis jobs (web/analysis.py); merged by web.openapi."""
from __future__ import annotations

from typing import Any

from models.statuses import TERMINAL
from services.llm_config import LOCAL_BASE_URL
from web.openapi_schema import (array, boolean, error, header, integer, json_body, nullable, number, obj, operation,
                                path_param, ref, response, sse_events, string)

TAG = "analysis"
ANALYSIS_STATES = ["pending", "generating_strategy", "mapping", "reducing", "completed", "failed", "canceling",
                   "canceled"]  # models.AnalysisJob.status
TERMINAL_STATES = list(TERMINAL)
SUMMARY_STATES = ["pending", "processing", "completed", "failed"]  # models.AnalysisSummary.status
MAX_SESSIONS = 50  # web.analysis.MAX_SESSIONS
PROMPT_CHARS = (10, 5000)  # web.analysis.PROMPT_CHARS
MAP_PROMPT_MAX = 2000
BASE_URL_MAX = 2048
# The worker's events on the stream (workers.analysis.Stream), besides the snapshot every connection starts with.
STREAM_EVENT_TYPES = ["status", "start", "thinking", "token", "truncated", "end", "error"]
STREAM_PHASES = ["map", "reduce", "status"]

STREAM_DESCRIPTION = """\
Server-Sent Events for `new EventSource(...)`: every event is unnamed (no `event:`, `id:` or `retry:` lines), one
line `data: <compact JSON>` and a blank line; lines starting with `:` are keep-alive comments (about every 2 s).
Each connection, reconnects included, starts with a `snapshot` (schema `AnalysisStreamSnapshot`): the job row and
its raw summary rows. Then come the worker's events as they happen (schema `AnalysisStreamEvent`, each with
`jobId` and `timestamp`):

| type | phase | other fields |
|---|---|---|
| `status` | `map` / `reduce` | `status`: `mapping` / `reducing` when the phase starts |
| `truncated` | `map` | `sessionId`, `summaryId`, `originalTokens`, `finalTokens`, `droppedParagraphs` |
| `start` | `map` / `reduce` | `promptTokens` (map: also `sessionId`, `summaryId`) |
| `status` | `map` / `reduce` | `status`: `thinking`, then `responding` before the first token (map: `sessionId`, \
`summaryId`) |
| `thinking` / `token` | `map` / `reduce` | `delta`: a piece of the reasoning / of the answer (map: `sessionId`, \
`summaryId`) |
| `end` | `map` / `reduce` | `promptTokens`, `completionTokens`, `duration` (ms) (map: `sessionId`, `summaryId`) |
| `error` | `map` | `sessionId`, `summaryId`, `message`: that session failed; the job goes on |
| `error` | `status` | `status`: `failed`, `message`; the terminal `status` event follows |
| `status` | `status` | `status`: `completed`, `canceled` or `failed`: the last event; the stream then closes |

A job that is already completed, failed or canceled gets its snapshot and the terminal `status` event at once. A
job that ends while an event was missed still gets the terminal event. Errors are plain text, not `Error` JSON: an
unknown job is a 404 `Job not found`."""


def analysis_strategy() -> dict[str, Any]:
    # Inlined (not $ref'd) where nullable: OpenAPI 3.0 ignores siblings of $ref.
    return obj(
        {
            "intermediate_question": string("The question asked of each session (the map step)", maxLength=600),
            "final_synthesis_instructions": string("How the per-session answers are combined (the reduce step)",
                                                   maxLength=800),
        },
        description="The plan the model wrote for a job with useAdvancedStrategy (the parsed strategy_json)",
    )


def analysis_schemas() -> dict[str, Any]:
    ms = "(Unix epoch milliseconds)"
    job_id = integer("Analysis job id", minimum=1)
    return {
        "AnalysisJobState": string(
            "State of an analysis job: generating_strategy (advanced strategy only), pending, mapping, reducing, "
            "then completed; or failed; or canceling, then canceled",
            enum=ANALYSIS_STATES,
        ),
        "AnalysisSummaryState": string("State of one session's answer", enum=SUMMARY_STATES),
        "AnalysisJob": obj(
            {
                "id": job_id,
                "original_prompt": string("The question, trimmed"),
                "short_prompt": string(
                    'A title: first `Analysis of "<first 30 characters>..." (summarizing)`, later a short title '
                    "the model wrote"
                ),
                "status": ref("AnalysisJobState"),
                "final_result": nullable(string("The combined answer; may start with a <think>...</think> block")),
                "error_message": nullable(string("Why the job failed")),
                "created_at": integer(f"Creation time {ms}"),
                "completed_at": nullable(integer(f"When it completed, failed or was canceled {ms}")),
                "model_name": nullable(string("The model the job uses")),
                "context_size": nullable(integer("Context size asked for; null: estimated or the model's own",
                                                 minimum=1)),
                "strategy_json": nullable(string("The advanced strategy as raw JSON; null without one")),
                "thinking_budget": nullable(integer("-1 unrestricted, 0 off, >0 a limit", minimum=-1)),
                "temperature": nullable(number(minimum=0, maximum=2)),
                "top_p": nullable(number(minimum=0, maximum=1)),
                "repeat_penalty": nullable(number(minimum=0.5, maximum=2)),
                "num_gpu_layers": nullable(integer("null: auto", minimum=0)),
                "map_phase_system_prompt": nullable(string("The system prompt of the map step; null: the default",
                                                           maxLength=MAP_PROMPT_MAX)),
                "llm_base_url": nullable(string("The remote LLM server; null: the local engine")),
            },
            description="An analysis job as listed (snake_case). The last seven fields are the job's own LLM "
            "settings",
        ),
        "AnalysisSummaryRow": obj(
            {
                "id": integer("Summary id", minimum=1),
                "analysis_job_id": job_id,
                "session_id": integer("The session", minimum=1),
                "summary_text": nullable(string("The session's answer once completed; may start with a "
                                                "<think>...</think> block")),
                "status": ref("AnalysisSummaryState"),
                "error_message": nullable(string("Why this session failed")),
            },
            description="One session's answer to the job's question (the map step)",
        ),
        "AnalysisSessionSummary": {
            "allOf": [
                ref("AnalysisSummaryRow"),
                obj(
                    {
                        "sessionName": string('The session name, else its file name, else "Session ID <id>"'),
                        "sessionDate": string("The session date (as SessionMeta.date), or empty"),
                    }
                ),
            ],
            "description": "A summary row with its session's name and date",
        },
        "AnalysisJobDetail": {
            "allOf": [
                ref("AnalysisJob"),
                obj(
                    {
                        "summaries": array(ref("AnalysisSessionSummary"), "One per session, by session date "
                                                                          "(then id)"),
                        "strategy": nullable(analysis_strategy()),
                    }
                ),
            ],
            "description": "A job with its per-session summaries; strategy is null (never absent) without an "
            "advanced strategy",
        },
        "AnalysisJobCreate": obj(
            {
                "sessionIds": {
                    **array(integer(minimum=1, maximum=2 ** 63 - 1), f"1 to {MAX_SESSIONS} sessions, each with a completed transcript; "
                            "duplicates are dropped"),
                    "minItems": 1,
                    "maxItems": MAX_SESSIONS,
                },
                "prompt": string(f"The question; trimmed, then {PROMPT_CHARS[0]} to {PROMPT_CHARS[1]} characters",
                                 minLength=PROMPT_CHARS[0]),
                "modelName": nullable(string("A model in the store (any name with a remote baseUrl); absent, null "
                                             "or empty: the active model")),
                "useAdvancedStrategy": boolean("The model first writes a strategy (a per-session question and "
                                               "how to combine the answers)", default=False),
                "contextSize": nullable(integer("At most the model's context length; absent: estimated from the "
                                                "longest transcript, the prompt and 4096 tokens", minimum=1)),
                "mapPhaseSystemPrompt": nullable(string("System prompt of the map step; empty or null: the default",
                                                        maxLength=MAP_PROMPT_MAX)),
                "baseUrl": nullable(string(f"A remote OpenAI-compatible server (http(s), at most {BASE_URL_MAX} "
                                           f"characters); null, empty or {LOCAL_BASE_URL}: the local engine")),
                "temperature": nullable(number(minimum=0, maximum=2)),
                "topP": nullable(number(minimum=0, maximum=1)),
                "repeatPenalty": nullable(number(minimum=0.5, maximum=2)),
                "numGpuLayers": nullable(integer(minimum=0)),
                "thinkingBudget": nullable(integer("-1 unrestricted, 0 off, >0 a limit", minimum=-1)),
            },
            required=["sessionIds", "prompt"],
            description="The model, its context and the given parameters also become the active LLM settings",
        ),
        "AnalysisJobAccepted": obj({"jobId": job_id}, description="Follow it with GET /api/analysis-jobs/{job_id} "
                                   "or its stream"),
        "AnalysisStreamSnapshot": obj(
            {
                "type": string(enum=["snapshot"]),
                "phase": string(enum=["status"]),
                "job": ref("AnalysisJob"),
                "summaries": array(ref("AnalysisSummaryRow"), "Ordered by id"),
            },
            description="The first event of every connection; it has no jobId or timestamp",
        ),
        "AnalysisStreamEvent": obj(
            {
                "type": string(enum=STREAM_EVENT_TYPES),
                "phase": string(enum=STREAM_PHASES),
                "jobId": integer(minimum=1),
                "timestamp": integer(f"When it was sent {ms}"),
                "status": string("status events: mapping, reducing, thinking, responding, or (phase status) "
                                 "completed, canceled, failed; error events of phase status: failed"),
                "sessionId": integer("Map events: the session", minimum=1),
                "summaryId": integer("Map events: the summary row", minimum=1),
                "delta": string("thinking and token events: the new text"),
                "promptTokens": integer(minimum=0),
                "completionTokens": integer(minimum=0),
                "duration": integer("end events: generation time in milliseconds", minimum=0),
                "originalTokens": integer("truncated events: the transcript's tokens", minimum=0),
                "finalTokens": integer("truncated events: tokens kept (head and tail)", minimum=0),
                "droppedParagraphs": integer(minimum=0),
                "message": string("error events: what went wrong"),
            },
            required=["type", "phase", "jobId", "timestamp"],
            description="A progress event of the worker; which other fields it carries depends on type and phase",
        ),
        "AnalysisStreamMessage": {
            "oneOf": [ref("AnalysisStreamSnapshot"), ref("AnalysisStreamEvent")],
            "description": "The JSON of one `data:` line",
        },
    }


def analysis_paths() -> dict[str, Any]:
    job = path_param("job_id", "Analysis job id (jobId of POST /api/analysis-jobs)")
    job["schema"] = string("Positive integer (1 or more), as digits", pattern="^0*[1-9][0-9]*$", maxLength=18,
                           example="1")
    bad_id = "Job id is not a positive integer"
    bad = error(bad_id)
    unknown = error("Unknown analysis job")
    plain = {"text/plain": {"schema": string()}}
    return {
        "/api/analysis-jobs": {
            "get": operation(
                TAG,
                "list_analysis_jobs",
                "List analysis jobs",
                {"200": response("All jobs, newest first", array(ref("AnalysisJob")))},
            ),
            "post": operation(
                TAG,
                "create_analysis_job",
                "Ask a question across several sessions",
                {
                    "202": response("The job was queued", ref("AnalysisJobAccepted")),
                    "400": error(
                        f"Body not a JSON object; sessionIds not 1 to {MAX_SESSIONS} positive integers, an unknown "
                        f"session or one without a finished transcript; prompt not {PROMPT_CHARS[0]} to "
                        f"{PROMPT_CHARS[1]} characters; mapPhaseSystemPrompt not a string of at most {MAP_PROMPT_MAX} "
                        "characters; baseUrl not an http(s) URL; no modelName and no active model, or a model not in "
                        "the store; contextSize larger than the model's, or (when absent) the longest transcript "
                        "needing more context than the model has; a parameter out of range"
                    ),
                    "503": error("The job queue is unavailable (nothing is stored)"),
                },
                description="An LLM worker answers the question for each session (the map step), then combines "
                "the answers (the reduce step); with useAdvancedStrategy it first writes the questions for both "
                "steps. Follow it with GET /api/analysis-jobs/{job_id} or GET /api/analysis-jobs/{job_id}/stream. "
                "The job's model, context size and parameters (except thinkingBudget) become the active LLM "
                "settings.",
                request_body=json_body(ref("AnalysisJobCreate")),
            ),
        },
        "/api/analysis-jobs/{job_id}": {
            "get": operation(
                TAG,
                "get_analysis_job",
                "An analysis job with its per-session summaries",
                {"200": response("The job", ref("AnalysisJobDetail")), "400": bad, "404": unknown},
                parameters=[job],
            ),
            "delete": operation(
                TAG,
                "delete_analysis_job",
                "Delete an analysis job and its summaries",
                {
                    "200": response('"Analysis job <id> and all associated data deleted."', ref("Confirmation")),
                    "400": bad,
                    "404": unknown,
                },
                description="The job's state is not checked.",
                parameters=[job],
            ),
        },
        "/api/analysis-jobs/{job_id}/stream": {
            "get": operation(
                TAG,
                "stream_analysis_job",
                "Follow an analysis job live (Server-Sent Events)",
                {
                    "200": response(
                        "Server-Sent Events stream of the job",
                        sse_events(ref("AnalysisStreamMessage"),
                                   "`data: <AnalysisStreamMessage JSON>` lines, each followed by a blank line"),
                        media_type="text/event-stream",
                        headers={
                            "Cache-Control": header("no-cache, no-transform",
                                                    string(example="no-cache, no-transform")),
                            "X-Accel-Buffering": header("no: proxies must not buffer the stream",
                                                        string(enum=["no"])),
                        },
                    ),
                    "400": response(bad_id + " (plain text: the message)", content=plain),
                    "404": response("Unknown analysis job (plain text `Job not found`)",
                                    content={"text/plain": {"schema": string(enum=["Job not found"])}}),
                },
                description=STREAM_DESCRIPTION,
                parameters=[job],
            )
        },
        "/api/analysis-jobs/{job_id}/cancel": {
            "post": operation(
                TAG,
                "cancel_analysis_job",
                "Ask a running analysis job to stop",
                {
                    "202": response('"Cancellation request for job <id> accepted."', ref("Confirmation")),
                    "400": bad,
                    "404": unknown,
                    "409": error("The job is already completed, failed or canceled"),
                },
                description="No body. The status becomes canceling; the worker stops between steps and sets "
                "canceled.",
                parameters=[job],
            )
        },
    }

