"""Builds the OpenAPI 3.0.3 document that describes Parley's HTTP API."""

from __future__ import annotations

import importlib.metadata
from typing import Any

from web.openapi_schema import (Schema, array, boolean, error, header, id_param, integer, json_body,
                                nullable, number, obj, operation, query_param, ref, response, sse_events,
                                string)

OPENAPI_VERSION = "3.0.3"
NONBLANK = r"\S"  # at least one non-whitespace character; the server trims the value


def _api_version() -> str:
    try:
        return importlib.metadata.version("parley")
    except importlib.metadata.PackageNotFoundError:
        return "0.1.0"


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


MESSAGE_SENDERS = ["user", "ai"]
MESSAGE_STATES = ["complete", "cancelled", "failed"]  # models.Message.status
CHAT_MESSAGE_MAX = 10_000  # web.chats.MAX_MESSAGE_CHARS
CHAT_NAME_MAX = 200  # web.chats.MAX_NAME_CHARS
CHAT_TAGS_MAX, CHAT_TAG_MAX = 10, 50  # web.chats.MAX_TAGS, MAX_TAG_CHARS
RESERVED_OUTPUT_TOKENS = 512  # services.chat_context.RESERVED_OUTPUT_TOKENS
# The frames of the chat reply stream, by the one key each carries (web.chats.stream_reply).
CHAT_STREAM_SCHEMAS = {
    "status": "ChatStreamStatus",
    "usage": "ChatStreamUsage",
    "thinkingChunk": "ChatStreamThinkingChunk",
    "chunk": "ChatStreamChunk",
    "done": "ChatStreamDone",
    "error": "ChatStreamError",
}


def _chats_schemas() -> dict[str, Schema]:
    tokens = nullable(integer(minimum=0))
    name = nullable(string("Chat name; null when unnamed"))
    tags = nullable(array(string(), "Tags, sorted; null when there are none"))
    meta = {"id": integer("Chat id", minimum=1), "timestamp": integer("Creation time (Unix epoch milliseconds)")}

    def frame(key: str, schema: Schema, description: str) -> Schema:
        return obj({key: schema}, description=description)

    return {
        "StandaloneChatMeta": obj(
            {
                **meta,
                "sessionId": nullable(integer("Always null for a standalone chat")),
                "name": name,
                "tags": tags,
            },
        ),
        "Message": obj(
            {
                "id": integer(minimum=1),
                "chatId": integer(minimum=1),
                "sender": string(enum=MESSAGE_SENDERS),
                "text": string("AI text may start with a <think>...</think> block holding the model's reasoning"),
                "timestamp": integer("Creation time (Unix epoch milliseconds)"),
                "promptTokens": tokens,
                "completionTokens": tokens,
                "duration": nullable(integer("Generation time in milliseconds", minimum=0)),
                "isTruncated": nullable(boolean("The history was cut to fit the context")),
                "thinkingTokens": tokens,
                "status": string(
                    "complete; cancelled when the client went away mid-reply (the partial text is kept); failed. "
                    "A Parley extension to the sessions client's Message",
                    enum=MESSAGE_STATES,
                ),
            },
            description="A chat message; AI fields (tokens, duration, isTruncated) are null on user messages",
        ),
        "SessionChatDetail": {
            "allOf": [ref("SessionChatMeta"), obj({"messages": array(ref("Message"), "Ordered by id")})],
            "description": "A session chat with its messages",
        },
        "StandaloneChatDetail": {
            "allOf": [ref("StandaloneChatMeta"), obj({"messages": array(ref("Message"), "Ordered by id")})],
            "description": "A standalone chat with its messages",
        },
        "ChatMessageRequest": obj(
            {
                "text": string(
                    f"The user's message; trimmed, then at most {CHAT_MESSAGE_MAX} characters",
                    minLength=1,
                    pattern=NONBLANK,
                ),
                "maxTokens": integer("Optional cap on the reply's tokens; the server's PARLEY_CHAT_MAX_TOKENS "
                                     "(default 512) still bounds it", minimum=1, maximum=32768),
            },
            required=["text"],
        ),
        "ChatNameUpdate": obj(
            {
                "name": nullable(
                    string(
                        f"New name; trimmed, at most {CHAT_NAME_MAX} characters; blank or null clears it. An empty "
                        "string is refused",
                        minLength=1,
                    )
                )
            }
        ),
        "ChatDetailsUpdate": obj(
            {
                "name": nullable(string(f"Trimmed, at most {CHAT_NAME_MAX} characters; blank, null or absent "
                                        "clears it")),
                "tags": nullable(
                    {
                        **array(string(maxLength=CHAT_TAG_MAX)),
                        "description": f"Trimmed, blanks dropped, de-duplicated and sorted; then at most "
                        f"{CHAT_TAGS_MAX} tags of at most {CHAT_TAG_MAX} characters. Empty, null or absent clears them",
                    }
                ),
            },
            required=None,
            description="Both fields are replaced: a missing key clears that field",
        ),
        "ContextUsage": obj(
            {
                "model": obj(
                    {
                        "name": string("The active model; empty when none is configured"),
                        "configuredContextSize": nullable(integer(minimum=1)),
                        "defaultContextSize": nullable(integer("The model's maximum (local models only)", minimum=1)),
                        "effectiveContextSize": nullable(
                            integer("configured, else min(default, PARLEY_LLM_DEFAULT_CONTEXT), else null", minimum=1)
                        ),
                    }
                ),
                "breakdown": obj(
                    {
                        "systemTokens": tokens,
                        "transcriptTokens": nullable(integer("The session's transcriptTokenCount; null for a "
                                                             "standalone chat", minimum=0)),
                        "chatHistoryTokens": nullable(integer("From the first user message on", minimum=0)),
                        "inputDraftTokens": nullable(integer("Tokens of inputDraft; null when none was given",
                                                             minimum=0)),
                    }
                ),
                "reserved": obj({"outputTokens": integer(minimum=0, default=RESERVED_OUTPUT_TOKENS)}),
                "totals": obj(
                    {
                        "promptTokens": nullable(integer("Sum of the non-null breakdown parts", minimum=0)),
                        "percentUsed": nullable(number("min(1, promptTokens / effectiveContextSize)",
                                                       minimum=0, maximum=1)),
                        "remainingForPrompt": nullable(integer(minimum=0)),
                        "remainingForOutput": nullable(integer("remainingForPrompt - reserved, at least 0",
                                                               minimum=0)),
                    }
                ),
                "thresholds": obj({"warnAt": number(example=0.75), "dangerAt": number(example=0.9)}),
            },
            description="How much of the model's context the next reply would use, counted with the model's "
            "tokenizer",
        ),
        "ChatStreamStatus": frame("status", string(enum=["thinking", "responding"]),
                                  "Phase: thinking first, responding once before the first chunk"),
        "ChatStreamUsage": frame("usage", ref("ContextUsage"), "Context usage including the new user message"),
        "ChatStreamThinkingChunk": frame("thinkingChunk", string(), "A piece of the model's reasoning"),
        "ChatStreamChunk": frame("chunk", string(), "A piece of the visible answer"),
        "ChatStreamDone": obj(
            {
                "done": boolean(enum=[True]),
                "promptTokens": integer(minimum=0),
                "completionTokens": nullable(integer("0 for an empty reply", minimum=0)),
                "thinkingTokens": integer(minimum=0),
                "duration": nullable(integer("Generation time in milliseconds", minimum=0)),
                "isTruncated": boolean(),
            },
            required=["done"],
            description="The reply is complete and stored; keys without a value are omitted",
        ),
        "ChatStreamError": frame("error", string(), "The reply failed; no done follows (except after an empty reply)"),
        "ChatStreamEvent": {
            "oneOf": [ref(name) for name in CHAT_STREAM_SCHEMAS.values()],
            "description": "The JSON of one `data:` line; each frame carries exactly one of the keys "
            + ", ".join(CHAT_STREAM_SCHEMAS),
        },
    }


def components() -> dict[str, Any]:
    schemas: dict[str, Schema] = {"Error": _error_schema()}
    schemas.update(_chats_schemas())
    from web.openapi_analysis import analysis_schemas

    schemas.update(analysis_schemas())
    return {
        "schemas": schemas,
        "securitySchemes": {"bearerToken": {
            "type": "http", "scheme": "bearer",
            "description": "An API token from `parley tokens create` (scopes read < write < admin). While no token "
            "exists Parley serves loopback clients without one. Missing token: 401; scope too low: 403; too many "
            "uploads, chat messages or analyses for one token: 429 with Retry-After (never for the loopback client "
            "of an install without tokens)."}},
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
# paths
# --------------------------------------------------------------------------


SESSION_ID_PARAM = "Session id"
BAD_SESSION_ID = "Session id is not a non-negative integer"
UNKNOWN_SESSION = "Unknown session"


CHAT_STREAM_DESCRIPTION = """\
The user's message is stored before the response starts; its id is in the `X-User-Message-Id` header. The reply
comes as Server-Sent Events: each event is exactly one line `data: <compact JSON>` and a blank line, with no
`event:`, `id:` or `retry:` lines; lines starting with `:` are keep-alive comments. Each JSON object carries one
kind of payload (schema `ChatStreamEvent` in components), in this order:

1. `{"status":"thinking"}`;
2. `{"usage":ContextUsage}`: context usage including the new message;
3. zero or more `{"thinkingChunk":"..."}`: the model's reasoning;
4. `{"status":"responding"}`, once, before the first chunk;
5. one or more `{"chunk":"..."}`: the answer;
6. `{"done":true,"promptTokens","completionTokens","thinkingTokens","duration","isTruncated"}` (keys without a
   value are omitted), then the stream closes. The AI message is stored by then.

A failure mid-stream sends `{"error":"..."}` and closes without `done`; an empty reply sends `{"error":...}` then
`{"done":true,"completionTokens":0}`. When the client disconnects the reply is canceled; the partial text is kept
as a message with status `cancelled`. Errors before the stream starts are JSON `Error` bodies."""


def _chat_stream_response() -> dict[str, Any]:
    return response(
        "Server-Sent Events stream of the reply",
        sse_events(ref("ChatStreamEvent"), "`data: <ChatStreamEvent JSON>` lines, each followed by a blank line"),
        media_type="text/event-stream",
        headers={
            "X-User-Message-Id": header("Id of the stored user message (decimal)", integer(minimum=1)),
            "Cache-Control": header("no-cache, no-transform", string(example="no-cache, no-transform")),
            "X-Accel-Buffering": header("no: proxies must not buffer the stream", string(enum=["no"])),
        },
    )


def _chats_paths() -> dict[str, Any]:
    session = id_param("session_id", SESSION_ID_PARAM)
    chat = id_param("chat_id", "Chat id")
    tag = "chats"
    bad_ids = error("Session id or chat id is not a non-negative integer")
    bad_chat = error("Chat id is not a non-negative integer")
    unknown = error("Unknown session, or no chat of that id in the session")
    unknown_standalone = error("No standalone chat of that id (a session's chat is not one)")
    deleted = response('"Chat <id> deleted successfully."', ref("Confirmation"))
    usage_params = [
        query_param("inputDraft", string(),
                    description="Text being typed; its tokens are counted into breakdown.inputDraftTokens"),
        query_param("reservedOutputTokens", integer(minimum=0, maximum=1_000_000, default=RESERVED_OUTPUT_TOKENS),
                    description="Tokens kept for the answer"),
    ]
    message_errors = {
        "400": "Session id or chat id is not a non-negative integer; body not a JSON object; text missing, blank "
        f"or over {CHAT_MESSAGE_MAX} characters",
        "503": "No language model is configured, or the job queue is unavailable (nothing is stored)",
    }

    def message_op(operation_id: str, summary: str, params: list, not_found: dict, bad_id: str) -> dict:
        return operation(
            tag,
            operation_id,
            summary,
            {
                "200": _chat_stream_response(),
                "400": error(message_errors["400"].replace("Session id or chat id", bad_id)),
                "404": not_found,
                "503": error(message_errors["503"]),
            },
            description=CHAT_STREAM_DESCRIPTION,
            parameters=params,
            request_body=json_body(ref("ChatMessageRequest")),
        )

    return {
        "/api/sessions/{session_id}/chats": {
            "post": operation(
                tag,
                "create_session_chat",
                "Start a chat about a session",
                {
                    "201": response("The new chat (name null)", ref("SessionChatMeta")),
                    "400": error(BAD_SESSION_ID),
                    "404": error(UNKNOWN_SESSION),
                },
                description="No body. Also answers `/api/sessions/{session_id}/chats/` (trailing slash).",
                parameters=[session],
            )
        },
        "/api/sessions/{session_id}/chats/{chat_id}": {
            "get": operation(
                tag,
                "get_session_chat",
                "A session chat with its messages",
                {"200": response("The chat", ref("SessionChatDetail")), "400": bad_ids, "404": unknown},
                parameters=[session, chat],
            ),
            "delete": operation(
                tag,
                "delete_session_chat",
                "Delete a session chat and its messages",
                {"200": deleted, "400": bad_ids, "404": unknown},
                parameters=[session, chat],
            ),
        },
        "/api/sessions/{session_id}/chats/{chat_id}/context-usage": {
            "get": operation(
                tag,
                "session_chat_context_usage",
                "How much of the model's context the session chat uses",
                {
                    "200": response("Context usage; transcriptTokens is the session's", ref("ContextUsage")),
                    "400": error("Session id or chat id is not a non-negative integer, or reservedOutputTokens "
                                 "not an integer in 0..1000000"),
                    "404": unknown,
                },
                parameters=[session, chat, *usage_params],
            )
        },
        "/api/sessions/{session_id}/chats/{chat_id}/messages": {
            "post": message_op(
                "send_session_chat_message",
                "Send a message and stream the reply (the session's transcript is the context)",
                [session, chat],
                unknown,
                "Session id or chat id",
            )
        },
        "/api/sessions/{session_id}/chats/{chat_id}/name": {
            "patch": operation(
                tag,
                "rename_session_chat",
                "Rename a session chat",
                {
                    "200": response("The chat", ref("SessionChatMeta")),
                    "400": error(
                        "Session id or chat id is not a non-negative integer; body not a JSON object; name missing, "
                        f"an empty string, not a string or null, or over {CHAT_NAME_MAX} characters"
                    ),
                    "404": unknown,
                },
                parameters=[session, chat],
                request_body=json_body(ref("ChatNameUpdate")),
            )
        },
        "/api/chats": {
            "get": operation(
                tag,
                "list_chats",
                "List standalone chats",
                {"200": response("Standalone chats, newest first", array(ref("StandaloneChatMeta")))},
            ),
            "post": operation(
                tag,
                "create_chat",
                "Start a standalone chat",
                {"201": response("The new chat (name and tags null)", ref("StandaloneChatMeta"))},
                description="No body.",
            ),
        },
        "/api/chats/{chat_id}": {
            "get": operation(
                tag,
                "get_chat",
                "A standalone chat with its messages",
                {
                    "200": response("The chat", ref("StandaloneChatDetail")),
                    "400": bad_chat,
                    "404": unknown_standalone,
                },
                parameters=[chat],
            ),
            "delete": operation(
                tag,
                "delete_chat",
                "Delete a standalone chat and its messages",
                {"200": deleted, "400": bad_chat, "404": unknown_standalone},
                parameters=[chat],
            ),
        },
        "/api/chats/{chat_id}/context-usage": {
            "get": operation(
                tag,
                "chat_context_usage",
                "How much of the model's context the standalone chat uses",
                {
                    "200": response("Context usage; transcriptTokens is null", ref("ContextUsage")),
                    "400": error("Chat id is not a non-negative integer, or reservedOutputTokens not an integer in "
                                 "0..1000000"),
                    "404": unknown_standalone,
                },
                parameters=[chat, *usage_params],
            )
        },
        "/api/chats/{chat_id}/messages": {
            "post": message_op(
                "send_chat_message",
                "Send a message to a standalone chat and stream the reply",
                [chat],
                unknown_standalone,
                "Chat id",
            )
        },
        "/api/chats/{chat_id}/details": {
            "patch": operation(
                tag,
                "update_chat_details",
                "Set a standalone chat's name and tags",
                {
                    "200": response("The chat", ref("StandaloneChatMeta")),
                    "400": error(
                        "Chat id is not a non-negative integer; body not a JSON object; name not a string or null "
                        f"or over {CHAT_NAME_MAX} characters; tags not a list of strings or null, more than "
                        f"{CHAT_TAGS_MAX}, or one over {CHAT_TAG_MAX} characters"
                    ),
                    "404": unknown_standalone,
                },
                parameters=[chat],
                request_body=json_body(ref("ChatDetailsUpdate")),
            )
        },
    }


TAGS = [
    {"name": "meta", "description": "Service health and information"},
    {"name": "transcribe", "description": "Upload audio, follow transcription jobs and fetch transcripts"},
    {"name": "retranslate", "description": "Re-transcribe single segments"},
    {
        "name": "sessions",
        "description": "Recorded sessions: upload with metadata, transcripts and their edits, speakers, audio and "
        "exports",
    },
    {"name": "templates", "description": "Saved prompts, including the system prompts Parley uses"},
    {"name": "usage", "description": "Model calls and their estimated cost, for the usage pages"},
    {
        "name": "llm",
        "description": "Language models: the model store and GGUF downloads, the active model, its settings and "
        "status",
    },
    {
        "name": "chats",
        "description": "Chats with the language model about a session or standalone, with replies streamed as "
        "Server-Sent Events",
    },
    {"name": "summary", "description": "Summaries of and questions about transcripts, answered by the language model"},
    {"name": "docs", "description": "This API description and its viewer"},
]
TAGS.append({"name": "system", "description": "Health, readiness, queue counts, GPU figures, transcription reset"})
TAGS.append({"name": "search", "description": "Full-text search over transcripts and chats, and rebuilding its index"})
TAGS.append({"name": "analysis", "description": "Questions asked across several sessions, answered map-reduce "
             "style by the language model, with progress streamed as Server-Sent Events"})
TAGS.append({"name": "admin", "description": "Backup, restore and reset of all data; signing in to the operator pages"})
TAGS.append({"name": "monitoring", "description": "The queue dashboard, Prometheus metrics and the deployment's processes"})


def openapi_document(*, server_url: str | None = None) -> dict:
    """Return the OpenAPI 3.0.3 document for the Parley API.

    server_url, when given (e.g. ``request.host_url``), becomes the single entry
    of ``servers``; a trailing slash is dropped so paths join cleanly.
    """
    paths: dict[str, Any] = {}
    paths.update(_chats_paths())
    from web.openapi_analysis import analysis_paths

    paths.update(analysis_paths())
    document: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Parley API",
            "version": _api_version(),
            "description": "Transcription API: upload recordings, follow jobs live and fetch speaker-labelled "
            "transcripts; sessions with their transcripts, chats and summaries answered by a language model. "
            "Errors are JSON objects following the `Error` schema. Any endpoint answers 503 (with Retry-After) "
            "while the database is locked or unreachable, and endpoints that queue work answer 503 while Redis is.",
        },
    }
    if server_url:
        document["servers"] = [{"url": server_url.rstrip("/") or "/"}]
    document["tags"] = [dict(tag) for tag in TAGS]
    document["paths"] = paths
    # A token, or none at all (loopback deployments without tokens); health, docs and sign-in are always open.
    document["security"] = [{"bearerToken": []}, {}]
    document["components"] = components()
    # The areas whose shapes are declared (web.declared) add their generated part.
    from web import api_blueprints
    from web.auth import auth_bp
    from web.declared import declared_paths

    declared, schemas = declared_paths([*api_blueprints(), auth_bp])
    for path, item in declared.items():  # an area part-way declared keeps its hand-written methods
        document["paths"].setdefault(path, {}).update(item)
    document["components"]["schemas"].update(schemas)
    return document
