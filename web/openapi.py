"""Builds the OpenAPI 3.0.3 document that describes Parley's HTTP API."""

from __future__ import annotations

import importlib.metadata
from typing import Any

OPENAPI_VERSION = "3.0.3"
JOB_STATES = ["queued", "processing", "completed", "failed", "canceled"]
RESULT_FORMATS = ["json", "srt", "vtt", "txt"]
DISPLAY_TIME = r"^\d{2,}:\d{2}:\d{2}\.\d{3}$"
LIVE_MESSAGE_SCHEMAS = {
    "status": "LiveStatusMessage",
    "segment": "LiveSegmentMessage",
    "speakers": "LiveSpeakersMessage",
    "heartbeat": "LiveHeartbeatMessage",
}

Schema = dict[str, Any]


# --------------------------------------------------------------------------
# small schema helpers
# --------------------------------------------------------------------------


def _api_version() -> str:
    try:
        return importlib.metadata.version("parley")
    except importlib.metadata.PackageNotFoundError:
        return "0.1.0"


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def string(description: str | None = None, **extra: Any) -> Schema:
    return _typed("string", description, extra)


def number(description: str | None = None, **extra: Any) -> Schema:
    return _typed("number", description, extra)


def integer(description: str | None = None, **extra: Any) -> Schema:
    return _typed("integer", description, extra)


def boolean(description: str | None = None, **extra: Any) -> Schema:
    return _typed("boolean", description, extra)


def _typed(type_: str, description: str | None, extra: dict[str, Any]) -> Schema:
    schema: Schema = {"type": type_}
    if description:
        schema["description"] = description
    schema.update(extra)
    return schema


def nullable(schema: Schema) -> Schema:
    return {**schema, "nullable": True}


def array(items: Schema, description: str | None = None) -> Schema:
    return _typed("array", description, {"items": items})


def obj(
    properties: dict[str, Schema],
    *,
    required: list[str] | str | None = "all",
    description: str | None = None,
) -> Schema:
    """An object schema; by default every listed property is required.

    additionalProperties stays open so responses may grow new fields.
    """
    schema: Schema = {"type": "object"}
    if description:
        schema["description"] = description
    schema["properties"] = properties
    names = list(properties) if required == "all" else list(required or [])
    if names:
        schema["required"] = names
    schema["additionalProperties"] = True
    return schema


def epoch_seconds(description: str) -> Schema:
    return number(f"{description} (Unix epoch seconds)", format="double")


def job_id_schema() -> Schema:
    return string("Job id (a UUID)", format="uuid")


# --------------------------------------------------------------------------
# component schemas
# --------------------------------------------------------------------------


def _error_schema() -> Schema:
    return obj(
        {
            "detail": string("Human readable description of the problem"),
            "error": string("Error class name, e.g. BadRequestError", example="BadRequestError"),
            "message": string("Same text as detail"),
        },
        description="Error body returned by every endpoint on failure",
    )


def _meta_schemas() -> dict[str, Schema]:
    return {
        "Health": obj(
            {
                "status": string(enum=["ok"]),
                "timestamp": string("Server time, ISO 8601", example="2024-01-01T12:00:00+00:00"),
            }
        ),
        "ServiceInfo": obj(
            {
                "name": string("Service name"),
                "version": string("Service version"),
                "endpoints": {
                    "type": "object",
                    "description": "Endpoint name to path",
                    "additionalProperties": string(),
                },
            }
        ),
    }


def chunk_info() -> Schema:
    # Inlined (not $ref'd) where nullable: OpenAPI 3.0 ignores siblings of $ref.
    return obj(
        {
            "current_chunk": integer("Chunk being processed"),
            "total_chunks": integer("Number of chunks in the recording"),
            "chunk_progress": number("Progress within the current chunk"),
        },
        description="Progress of chunked processing",
    )


def _transcribe_schemas() -> dict[str, Schema]:
    return {
        "JobState": string("State of a transcription job", enum=JOB_STATES),
        "ModelInfo": obj(
            {
                "name": string("Short model name used in requests", example="tiny.en"),
                "full_name": string("Full model identifier"),
                "is_downloaded": boolean("Whether the weights are available locally"),
                "size_mb": number("Approximate model size in MB"),
                "description": string(),
                "languages": string("English-only or multilingual model", enum=["en", "multilingual"]),
            }
        ),
        "ModelList": obj({"models": array(ref("ModelInfo"))}),
        "JobAccepted": obj(
            {
                "job_id": job_id_schema(),
                "status": string(enum=["queued"]),
                "message": string(),
            },
            description="A transcription job was queued",
        ),
        "JobSummary": obj(
            {
                "job_id": string("Job id"),
                "status": ref("JobState"),
                "progress": number("Percent complete", minimum=0, maximum=100),
                "updated_at": epoch_seconds("Last update time"),
                "message": string(),
            }
        ),
        "JobList": obj(
            {
                "jobs": array(ref("JobSummary")),
                "count": integer("Number of jobs returned", minimum=0),
            }
        ),
        "ChunkInfo": chunk_info(),
        "JobStatus": obj(
            {
                "job_id": string("Job id"),
                "status": ref("JobState"),
                "message": string(),
                "progress": number("Percent complete", minimum=0, maximum=100),
                "updated_at": epoch_seconds("Last update time"),
                "chunk_info": nullable(chunk_info()),
                "error": nullable(string("Failure reason when status is failed")),
            }
        ),
        "JobNotFound": obj(
            {
                "job_id": string("The requested job id"),
                "status": string(enum=["not_found"]),
                "message": string(example="Transcription job not found or expired"),
                "progress": number("Always 0", example=0),
                "updated_at": epoch_seconds("Time of the lookup"),
                "detail": string(),
            },
            description="Status body for an unknown or expired job",
        ),
        "Word": obj(
            {
                "start": number("Start time in seconds"),
                "end": number("End time in seconds"),
                "word": string(),
                "probability": number("Recognition probability"),
            }
        ),
        "Segment": obj(
            {
                "id": integer("Segment index"),
                "start": number("Start time in seconds"),
                "end": number("End time in seconds"),
                "text": string(),
                "speaker": nullable(string("Speaker label, e.g. SPEAKER_00")),
                "speaker_confidence": nullable(number("Confidence of the speaker label", minimum=0, maximum=1)),
                "start_display": string("Start time as HH:MM:SS.mmm", pattern=DISPLAY_TIME, example="00:01:02.345"),
                "end_display": string("End time as HH:MM:SS.mmm", pattern=DISPLAY_TIME, example="00:01:04.000"),
                "words": array(ref("Word"), "Word-level timestamps"),
            }
        ),
        "Transcript": obj(
            {
                "job_id": string("Job id"),
                "status": ref("JobState"),
                "segments": array(ref("Segment")),
                "text": string("Full transcript text"),
                "language": nullable(string("Detected or requested language (ISO 639-1)")),
                "audio_duration": nullable(number("Audio duration in seconds")),
                "model_used": string("Model that produced the transcript"),
            }
        ),
        "DebugInfo": obj(
            {
                "cached_segments": nullable(integer("Segments held in the live cache")),
                "latest_time": nullable(number("End time (s) of the latest segment")),
                "chunks_done": nullable(integer()),
                "total_chunks": nullable(integer()),
                "event_seq": nullable(integer("Sequence number of the latest live event")),
                "attempts": nullable(integer("Processing attempts")),
                "audio_sha256": nullable(string()),
                "audio_path_exists": nullable(boolean()),
            },
            required=None,
            description="Free-form diagnostics for a job; fields may be added or missing",
        ),
    }


def _live_schemas() -> dict[str, Schema]:
    def message(type_: str, properties: dict[str, Schema]) -> Schema:
        return obj({"type": string(enum=[type_]), **properties})

    seq = integer("Event sequence number (also the SSE event id)", minimum=0)
    return {
        "LiveStatusMessage": message(
            "status",
            {
                "seq": seq,
                "status": ref("JobState"),
                "message": string(),
                "progress": number("Percent complete", minimum=0, maximum=100),
                "chunk_info": nullable(chunk_info()),
            },
        ),
        "LiveSegmentMessage": {
            "allOf": [
                message("segment", {"seq": seq}),
                ref("Segment"),
            ],
            "description": "A newly transcribed segment (all Segment fields plus type and seq)",
        },
        "LiveSpeakersMessage": message(
            "speakers",
            {
                "seq": seq,
                "segments": array(
                    obj(
                        {
                            "id": integer("Segment id"),
                            "speaker": nullable(string()),
                            "speaker_confidence": nullable(number(minimum=0, maximum=1)),
                        }
                    ),
                    "Updated speaker labels for earlier segments",
                ),
            },
        ),
        "LiveHeartbeatMessage": message("heartbeat", {}),
        "LiveMessage": {
            "oneOf": [ref(name) for name in LIVE_MESSAGE_SCHEMAS.values()],
            "discriminator": {
                "propertyName": "type",
                "mapping": {
                    type_: f"#/components/schemas/{name}"
                    for type_, name in LIVE_MESSAGE_SCHEMAS.items()
                },
            },
        },
    }


def _retranslate_schemas() -> dict[str, Schema]:
    return {
        "RetranslateResult": obj(
            {
                "segment_id": string(),
                "text": string("New transcription of the segment"),
                "confidence": number(minimum=0, maximum=1),
                "speaker": nullable(string("Speaker of the overlapping original segment, when known")),
                "model_used": string(),
            }
        ),
        "RetranslateAccepted": obj(
            {
                "job_id": string("Job id to poll at /api/transcribe/status/{job_id}"),
                "status": string("Job status, e.g. queued or processing"),
                "message": string(),
            },
            description="The worker did not answer in time; the job continues in the background",
        ),
        "RetranslateFromFullRequest": obj(
            {
                "segment_id": string(),
                "start_time": number("Start of the range in seconds"),
                "end_time": number("End of the range in seconds"),
                "model_name": string("Whisper model to use; defaults to the job's model"),
                "language": string("ISO 639-1 language code"),
            },
            required=["segment_id", "start_time", "end_time"],
        ),
    }


def components() -> dict[str, Any]:
    schemas: dict[str, Schema] = {"Error": _error_schema()}
    schemas.update(_meta_schemas())
    schemas.update(_transcribe_schemas())
    schemas.update(_live_schemas())
    schemas.update(_retranslate_schemas())
    return {
        "schemas": schemas,
        "headers": {
            "X-Request-ID": {
                "description": "Request id, echoed in logs",
                "required": True,
                "schema": string(),
            },
            "X-Process-Time-Ms": {
                "description": "Server-side processing time in milliseconds",
                "required": True,
                "schema": number(),
            },
        },
    }


# --------------------------------------------------------------------------
# response / parameter helpers
# --------------------------------------------------------------------------


def _std_headers() -> dict[str, Any]:
    return {
        "X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"},
        "X-Process-Time-Ms": {"$ref": "#/components/headers/X-Process-Time-Ms"},
    }


def response(
    description: str,
    schema: Schema | None = None,
    *,
    media_type: str = "application/json",
    content: dict[str, Any] | None = None,
    headers: dict[str, Any] | None = None,
) -> dict[str, Any]:
    result: dict[str, Any] = {"description": description, "headers": {**_std_headers(), **(headers or {})}}
    if content is not None:
        result["content"] = content
    elif schema is not None:
        result["content"] = {media_type: {"schema": schema}}
    return result


def error(description: str) -> dict[str, Any]:
    return response(description, ref("Error"))


def path_param(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": string()}


def query_param(name: str, schema: Schema, *, required: bool = False, description: str | None = None) -> dict[str, Any]:
    param: dict[str, Any] = {"name": name, "in": "query", "required": required, "schema": schema}
    if description:
        param["description"] = description
    return param


JOB_ID_PARAM = "Job id returned by POST /api/transcribe/"


def operation(
    tag: str,
    operation_id: str,
    summary: str,
    responses: dict[str, Any],
    *,
    description: str | None = None,
    parameters: list[dict[str, Any]] | None = None,
    request_body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {"tags": [tag], "operationId": operation_id, "summary": summary}
    if description:
        op["description"] = description
    if parameters:
        op["parameters"] = parameters
    if request_body:
        op["requestBody"] = request_body
    op["responses"] = responses
    return op


def multipart_body(properties: dict[str, Schema], required: list[str]) -> dict[str, Any]:
    schema: Schema = {"type": "object", "properties": properties, "required": required}
    return {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": schema,
                "encoding": {"file": {"contentType": "audio/*, video/*, application/octet-stream"}},
            }
        },
    }


def audio_file() -> Schema:
    return string("Audio (or video) file", format="binary")


# --------------------------------------------------------------------------
# paths
# --------------------------------------------------------------------------


def _meta_paths() -> dict[str, Any]:
    return {
        "/health": {
            "get": operation("meta", "health", "Liveness check", {"200": response("Service is up", ref("Health"))})
        },
        "/": {
            "get": operation(
                "meta",
                "service_info",
                "Service name, version and main endpoints",
                {"200": response("Service information", ref("ServiceInfo"))},
            )
        },
    }


LIVE_DESCRIPTION = """\
Messages are JSON objects (schema `LiveMessage` in components):

* `{"type": "status", "seq", "status", "message", "progress", "chunk_info"}`: job status changed
  (`LiveStatusMessage`);
* `{"type": "segment", "seq", ...Segment}`: a newly transcribed segment (`LiveSegmentMessage`);
* `{"type": "speakers", "seq", "segments": [{"id", "speaker", "speaker_confidence"}]}`: speaker
  labels of earlier segments were updated (`LiveSpeakersMessage`);
* `{"type": "heartbeat"}`: keep-alive (`LiveHeartbeatMessage`).

`seq` increases by one per event of a job, so a client can resume without gaps."""


def _transcribe_paths() -> dict[str, Any]:
    job = path_param("job_id", JOB_ID_PARAM)
    return {
        "/api/transcribe/models": {
            "get": operation(
                "transcribe",
                "list_models",
                "List available Whisper models",
                {"200": response("Known models", ref("ModelList"))},
            )
        },
        "/api/transcribe/": {
            "post": operation(
                "transcribe",
                "create_transcription",
                "Upload audio and queue a transcription job",
                {
                    "200": response("Job queued", ref("JobAccepted")),
                    "400": error("Not an audio file, empty file, unknown model or language"),
                    "413": error("Upload exceeds the size limit"),
                    "503": error("Job queue unavailable"),
                },
                request_body=multipart_body(
                    {
                        "file": audio_file(),
                        "model_name": string("Whisper model name", default="tiny.en"),
                        "language": string("ISO 639-1 language code; detected when omitted"),
                        "diarize": boolean("Label speakers", default=True),
                        "num_speakers": integer("Expected number of speakers", minimum=1, maximum=10),
                    },
                    ["file"],
                ),
            )
        },
        "/api/transcribe/jobs": {
            "get": operation(
                "transcribe",
                "list_jobs",
                "List recent jobs",
                {"200": response("Jobs", ref("JobList")), "400": error("Invalid status or limit")},
                parameters=[
                    query_param("status", ref("JobState"), description="Only jobs in this state"),
                    query_param(
                        "limit", integer(minimum=1, maximum=500, default=100), description="Maximum jobs returned"
                    ),
                ],
            )
        },
        "/api/transcribe/status/{job_id}": {
            "get": operation(
                "transcribe",
                "job_status",
                "Status of a transcription job",
                {
                    "200": response("Job status", ref("JobStatus")),
                    "404": response("Job not found or expired", ref("JobNotFound")),
                },
                parameters=[job],
            )
        },
        "/api/transcribe/result/{job_id}": {
            "get": operation(
                "transcribe",
                "job_result",
                "Transcript of a completed job",
                {
                    "200": response(
                        "Transcript: JSON for format=json, SubRip (text/plain) for srt, WebVTT for vtt, "
                        "plain text for txt",
                        content={
                            "application/json": {"schema": ref("Transcript")},
                            "text/plain": {
                                "schema": string("SubRip subtitles (format=srt) or plain text (format=txt)")
                            },
                            "text/vtt": {"schema": string("WebVTT subtitles (format=vtt)")},
                        },
                    ),
                    "400": error("Unknown format"),
                    "404": error("Unknown job"),
                    "409": error("Job has not completed yet"),
                },
                parameters=[
                    job,
                    query_param("format", string(enum=RESULT_FORMATS, default="json"), description="Output format"),
                ],
            )
        },
        "/api/transcribe/live/{job_id}": {
            "get": operation(
                "transcribe",
                "job_live_websocket",
                "WebSocket stream of live job events",
                {
                    "101": {
                        "description": "Switching Protocols: the connection is upgraded to a WebSocket",
                    },
                    "404": error("Unknown job"),
                },
                description="WebSocket endpoint (connect with `ws://` / `wss://`). " + LIVE_DESCRIPTION,
                parameters=[job],
            )
        },
        "/api/transcribe/events/{job_id}": {
            "get": operation(
                "transcribe",
                "job_events_sse",
                "Server-Sent Events stream of live job events",
                {
                    "200": response(
                        "Event stream; each event carries `id: <seq>`, `event: <type>` and a JSON `data:` line",
                        string("text/event-stream; data lines follow the LiveMessage schema"),
                        media_type="text/event-stream",
                    ),
                    "404": error("Unknown job"),
                },
                description="The SSE twin of the WebSocket endpoint `/api/transcribe/live/{job_id}`. "
                + LIVE_DESCRIPTION,
                parameters=[
                    job,
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "description": "Resume after this event sequence number",
                        "schema": integer(minimum=0),
                    },
                ],
            )
        },
        "/api/transcribe/debug/{job_id}": {
            "get": operation(
                "transcribe",
                "job_debug",
                "Diagnostic information about a job",
                {"200": response("Diagnostics", ref("DebugInfo")), "404": error("Unknown job")},
                parameters=[job],
            )
        },
    }


def _retranslate_paths() -> dict[str, Any]:
    accepted = response(
        "The worker did not answer in time; poll /api/transcribe/status/{job_id}",
        ref("RetranslateAccepted"),
    )
    return {
        "/api/retranslate/segment": {
            "post": operation(
                "retranslate",
                "retranslate_segment",
                "Re-transcribe an uploaded audio snippet",
                {
                    "200": response("New transcription of the segment", ref("RetranslateResult")),
                    "202": accepted,
                    "400": error("Invalid upload or parameters"),
                    "413": error("Upload exceeds the size limit"),
                    "503": error("Job queue unavailable"),
                },
                request_body=multipart_body(
                    {
                        "file": audio_file(),
                        "segment_id": string("Id of the segment being redone"),
                        "start_time": number("Segment start in seconds"),
                        "end_time": number("Segment end in seconds"),
                        "model_name": string("Whisper model name"),
                        "language": string("ISO 639-1 language code"),
                    },
                    ["file", "segment_id"],
                ),
            )
        },
        "/api/retranslate/segment-from-full": {
            "post": operation(
                "retranslate",
                "retranslate_segment_from_full",
                "Re-transcribe a time range of a job's stored audio",
                {
                    "200": response(
                        "New transcription; speaker is that of the overlapping original segment when known",
                        ref("RetranslateResult"),
                    ),
                    "202": accepted,
                    "400": error("Invalid time range or JSON body"),
                    "404": error("Unknown job, or its audio is gone"),
                },
                parameters=[query_param("job_id", string(), required=True, description=JOB_ID_PARAM)],
                request_body={
                    "required": True,
                    "content": {"application/json": {"schema": ref("RetranslateFromFullRequest")}},
                },
            )
        },
    }


def _docs_paths() -> dict[str, Any]:
    return {
        "/api/openapi.json": {
            "get": operation(
                "docs",
                "openapi_document",
                "This OpenAPI document",
                {"200": response("OpenAPI 3.0.3 document", {"type": "object", "additionalProperties": True})},
            )
        },
        "/api/docs": {
            "get": operation(
                "docs",
                "api_docs",
                "Interactive API documentation (Swagger UI)",
                {"200": response("HTML page", string(), media_type="text/html")},
            )
        },
        "/api/schema": {
            "get": operation(
                "docs",
                "api_schema_redirect",
                "Redirect to the API documentation",
                {
                    "302": response(
                        "Redirect to /api/docs",
                        headers={"Location": {"description": "The docs URL", "schema": string()}},
                    )
                },
            )
        },
    }


TAGS = [
    {"name": "meta", "description": "Service health and information"},
    {"name": "transcribe", "description": "Upload audio, follow transcription jobs and fetch transcripts"},
    {"name": "retranslate", "description": "Re-transcribe single segments"},
    {"name": "docs", "description": "This API description and its viewer"},
]


def openapi_document(*, server_url: str | None = None) -> dict:
    """Return the OpenAPI 3.0.3 document for the Parley API.

    server_url, when given (e.g. ``request.host_url``), becomes the single entry
    of ``servers``; a trailing slash is dropped so paths join cleanly.
    """
    paths: dict[str, Any] = {}
    for part in (_meta_paths(), _transcribe_paths(), _retranslate_paths(), _docs_paths()):
        paths.update(part)
    document: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Parley API",
            "version": _api_version(),
            "description": "Transcription API: upload recordings, follow jobs live and fetch speaker-labelled "
            "transcripts. Errors are JSON objects following the `Error` schema.",
        },
    }
    if server_url:
        document["servers"] = [{"url": server_url.rstrip("/") or "/"}]
    document["tags"] = [dict(tag) for tag in TAGS]
    document["paths"] = paths
    document["components"] = components()
    return document
