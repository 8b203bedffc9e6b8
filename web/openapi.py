"""Builds the OpenAPI 3.0.3 document that describes Parley's HTTP API."""

from __future__ import annotations

import importlib.metadata
from typing import Any

from services.llm_config import LOCAL_BASE_URL, REMOTE_URL_PATTERN
from web.openapi_schema import (Schema, array, boolean, error, header, id_param, integer, json_body,
                                nullable, number, obj, operation, path_param, query_param, ref, response, sse_events,
                                string)

OPENAPI_VERSION = "3.0.3"
JOB_STATES = ["queued", "processing", "completed", "failed", "canceled"]
# The transcription service's own three states (web.transcribe.SPEC_STATUS maps Parley's onto them).
SPEC_JOB_STATES = ["processing", "completed", "failed"]
NONBLANK = r"\S"  # at least one non-whitespace character; the server trims the value


def _api_version() -> str:
    try:
        return importlib.metadata.version("parley")
    except importlib.metadata.PackageNotFoundError:
        return "0.1.0"


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


def _transcribe_schemas() -> dict[str, Schema]:
    return {
        "JobState": string("Parley's state of a job: queued, processing, completed, failed or canceled", enum=JOB_STATES),
        "SpecJobState": string("The job's state as the transcription service speaks it: processing (queued or "
                               "running), completed, or failed (failed or canceled); `state` carries Parley's own",
                               enum=SPEC_JOB_STATES),
    }


# --- language models, chats and summaries (web/llm.py, web/chats.py, web/summary.py) -------------------------

LLM_JOB_STATES = ["queued", "processing", "completed", "failed", "canceled"]  # models.LlmJob.status
MESSAGE_SENDERS = ["user", "ai"]
MESSAGE_STATES = ["complete", "cancelled", "failed"]  # models.Message.status
CHAT_MESSAGE_MAX = 10_000  # web.chats.MAX_MESSAGE_CHARS
CHAT_NAME_MAX = 200  # web.chats.MAX_NAME_CHARS
CHAT_TAGS_MAX, CHAT_TAG_MAX = 10, 50  # web.chats.MAX_TAGS, MAX_TAG_CHARS
RESERVED_OUTPUT_TOKENS = 512  # services.chat_context.RESERVED_OUTPUT_TOKENS
SUMMARY_FORMATS = ["paragraph", "bullet_points", "key_points"]  # web.summary.FORMATS
CHAT_ROLES = ["system", "user", "assistant"]  # web.summary.ROLES
# The frames of the chat reply stream, by the one key each carries (web.chats.stream_reply).
CHAT_STREAM_SCHEMAS = {
    "status": "ChatStreamStatus",
    "usage": "ChatStreamUsage",
    "thinkingChunk": "ChatStreamThinkingChunk",
    "chunk": "ChatStreamChunk",
    "done": "ChatStreamDone",
    "error": "ChatStreamError",
}


def llm_model_info() -> Schema:
    # Inlined where nullable (LlmStatus.details): OpenAPI 3.0 ignores siblings of $ref.
    nullable_int = nullable(integer(minimum=0))
    return obj(
        {
            "name": string("Model id: the GGUF file name in the store, or the remote server's model id"),
            "modified_at": string("Modification time, ISO 8601; empty for remote models"),
            "size": integer("File size in bytes; 0 for remote models", minimum=0),
            "digest": string("Unique key of the model"),
            "details": obj(
                {
                    "format": string("gguf, or remote for a model of a remote server"),
                    "family": string("Architecture (local) or owner (remote)"),
                    "families": nullable(array(string())),
                    "parameter_size": string(example="270M"),
                    "quantization_level": string(example="Q4_K_M"),
                }
            ),
            "defaultContextSize": nullable(integer("The model's maximum context, in tokens", minimum=1)),
            "architecture": nullable(
                obj(
                    {
                        "num_layers": nullable_int,
                        "num_attention_heads": nullable_int,
                        "num_key_value_heads": nullable_int,
                        "hidden_size": nullable_int,
                        "head_dim": nullable_int,
                        "precision": nullable(string()),
                    },
                    description="From the GGUF header; local models only",
                )
            ),
            "size_vram": integer("Estimated bytes of GPU memory the resident model holds; 0 where no layer is "
                                 "on a GPU (a CPU-only host or build); only when the model is resident", minimum=0),
        },
        required=["name", "modified_at", "size", "digest", "details", "defaultContextSize"],
        description="A language model",
    )


def _llm_schemas() -> dict[str, Schema]:
    bytes_ = integer(minimum=0)
    return {
        "LlmModelInfo": llm_model_info(),
        "LlmModelList": obj({"models": array(ref("LlmModelInfo"))}),
        "LlmJobState": string("State of a language-model job", enum=LLM_JOB_STATES),
        "LlmSetModelRequest": obj(
            {
                "modelName": string(
                    "Model to use: a file name in the store (checked when the engine is local) or a remote "
                    "server's model id; trimmed",
                    minLength=1,
                    pattern=NONBLANK,
                ),
                "baseUrl": nullable(
                    string(
                        "Key absent: unchanged. null, empty or " + LOCAL_BASE_URL + ": the local engine. "
                        "Otherwise the http(s) URL of an OpenAI-compatible server"
                    )
                ),
                "contextSize": nullable(
                    integer("Context size in tokens; null or absent: the model's own", minimum=1, maximum=1_048_576)
                ),
                "temperature": nullable(number("null or absent: unchanged", minimum=0, maximum=2)),
                "topP": nullable(number("null or absent: unchanged", minimum=0, maximum=1)),
                "repeatPenalty": nullable(number("null or absent: unchanged", minimum=0.5, maximum=2)),
                "numGpuLayers": nullable(
                    integer("Layers offloaded to the GPU; null: all that fit (auto); absent: unchanged",
                            minimum=0, maximum=100_000)
                ),
                "thinkingBudget": nullable(
                    integer("-1 unrestricted, 0 off, >0 a token limit; null: unset; absent: unchanged", minimum=-1)
                ),
            },
            required=["modelName"],
        ),
        "LlmApiTokenRequest": obj(
            {"token": nullable(string("Bearer token for the remote server, visible ASCII without spaces; null, "
                                      "empty or absent clears it", pattern="^\\s*[\\x21-\\x7e]*\\s*$"))},
            required=None,
        ),
        "LlmApiTokenSaved": obj(
            {
                "message": string(example="Remote LLM API token saved."),
                "hasRemoteApiToken": boolean(),
            }
        ),
        "LlmDeleteModelRequest": obj(
            {
                "modelName": string(
                    "File name of a model in the store (letters, digits, _ . -); trimmed",
                    minLength=1,
                    pattern=r"^\s*[\w.\-]+\s*$",
                )
            }
        ),
        "LlmStatus": obj(
            {
                "status": string(
                    "available when an LLM worker is running or the engine is remote", enum=["available", "unavailable"]
                ),
                "activeModel": string("The configured model; empty when none is"),
                "modelChecked": string("The model whose details are returned: modelName, else activeModel"),
                "loaded": boolean(
                    "The model is there to use: in the store (local engine) or configured (remote). A worker "
                    "loads it on the next request if it is not resident; see residentModels"
                ),
                "details": nullable(llm_model_info()),
                "configuredContextSize": nullable(integer("null: the model's own", minimum=1)),
                "configuredTemperature": number(),
                "configuredTopP": number(),
                "configuredRepeatPenalty": number(),
                "configuredNumGpuLayers": nullable(integer("null: auto", minimum=0)),
                "configuredThinkingBudget": integer("-1 unrestricted (also when unset), 0 off, >0 a limit",
                                                    minimum=-1),
                "activeBaseUrl": string("The engine in use; " + LOCAL_BASE_URL + " for the local one"),
                "defaultBaseUrl": string("The local engine's base URL; never empty", example=LOCAL_BASE_URL),
                "isRemoteBaseUrl": boolean(),
                "hasRemoteApiToken": boolean("Whether a token is stored; the token itself is never returned"),
                "residentModels": array(string(), "Models held in memory by the running LLM workers, sorted"),
                "loadState": nullable(
                    string("State of the latest model load (POST /api/llm/set-model); null if there was none",
                           enum=[*LLM_JOB_STATES, None])
                ),
                "loadError": nullable(string("Why the latest load failed")),
                "activeModelIsInstruct": nullable(boolean(
                    "Whether the active local model is an instruct model (a chat template, or an Instruct/Chat/-it "
                    "fine-tune); false for a base model such as the offline test model; null for none or remote")),
                "notice": nullable(string("A plain warning for the user, e.g. that the active model is a base "
                                          "model that continues text instead of answering; null when all is well")),
            },
            description="Status of the language model. residentModels, loadState, loadError, activeModelIsInstruct "
            "and notice are Parley extensions to the sessions client's LlmStatus",
        ),
        "VramEstimate": obj(
            {
                "model": string("Model file name"),
                "context_size": integer("Context the estimate is for: context_size, else the model's, else 4096",
                                        minimum=1),
                "num_gpu_layers": nullable(integer("As given; null means all layers", minimum=0)),
                "vram_per_token_bytes": bytes_,
                "estimated_vram_bytes": bytes_,
                "estimated_ram_bytes": bytes_,
                "breakdown": obj(
                    {
                        "weights_bytes": bytes_,
                        "weights_vram_bytes": bytes_,
                        "weights_ram_bytes": bytes_,
                        "kv_cache_bytes": bytes_,
                        "overhead_bytes": bytes_,
                    }
                ),
            },
            description="Memory a model would need with the given settings",
        ),
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


def _summary_schemas() -> dict[str, Schema]:
    model_name = string(
        "Model to use: absent, null, an alias (PARLEY_LLM_ALIASES: gpt-3.5-turbo, gpt-4, gpt-4o, default) or the "
        "active model's name mean the active model; otherwise a model in the store"
    )
    transcript = {
        "transcript": array(
            obj(
                {"text": string(), "speaker": nullable(string("Prefixed as `speaker: ` when non-empty"))},
                required=["text"],
            ),
            "Segments (e.g. those of a transcription result); used when full_text is empty",
        ),
        "full_text": nullable(string("The transcript as one text; wins over transcript when not blank")),
    }
    return {
        "SummaryRequest": obj(
            {
                **transcript,
                "format": nullable(string("Style of the summary; null (or empty) means paragraph",
                                          enum=[*SUMMARY_FORMATS, None], default="paragraph")),
                "max_length": nullable(integer("Most words in the summary", minimum=10, maximum=5000, default=500)),
                "model_name": nullable(model_name),
            },
            required=None,
            description="full_text or a non-empty transcript is needed",
        ),
        "SummaryAccepted": obj(
            {
                "job_id": job_id_schema(),
                "status": ref("SpecJobState"),
                "state": ref("LlmJobState"),
                "message": string(example="Summary queued"),
            },
            description="Follow it with GET /api/summary/status/{job_id}",
        ),
        "SummaryStatus": obj(
            {
                "job_id": job_id_schema(),
                "status": ref("SpecJobState"),
                "state": ref("LlmJobState"),
                "message": string("Progress message, or the error once failed"),
                "progress": number("Percent complete, one decimal", minimum=0, maximum=100),
            }
        ),
        "SummaryResult": obj(
            {
                "summary": string(),
                "topics": array(string(), "Main topics, at most 6"),
                "length": integer("Words in the summary", minimum=0),
                "model_used": string(),
            }
        ),
        "ChatModel": obj({"id": string("Value for model_name"), "name": string(), "description": string()}),
        "ChatModelList": obj({"models": array(ref("ChatModel"), "The aliases, then the local store's models "
                                                                "(or the remote server's active model)")}),
        "ChatCompletionRequest": obj(
            {
                "messages": {
                    **array(
                        obj(
                            {
                                "role": string(enum=CHAT_ROLES),
                                "content": string(maxLength=CHAT_MESSAGE_MAX),
                            }
                        ),
                        "The conversation; the last message must be the user's",
                    ),
                    "minItems": 1,
                },
                **transcript,
                "temperature": nullable(number(minimum=0, maximum=2, default=0.7)),
                "max_tokens": nullable(integer(minimum=1, maximum=4096, default=500)),
                "model_name": nullable(model_name),
            },
            required=["messages"],
            description="transcript or full_text, when given, is the context the model answers about",
        ),
        "ChatCompletion": obj(
            {
                "message": obj({"role": string(enum=["assistant"]), "content": string()}),
                "model_used": string(),
                "usage": obj({"prompt": integer(minimum=0), "completion": integer(minimum=0),
                              "total": integer(minimum=0)}),
                "is_truncated": boolean("The transcript was shortened (head and tail kept) to fit the context"),
            }
        ),
        "ChatPending": obj(
            {
                "job_id": job_id_schema(),
                "status": ref("SpecJobState"),
                "state": ref("LlmJobState"),
                "message": string(example="still running; fetch /api/chat/result/<job_id>"),
            },
            description="The answer is not ready (or the job was canceled); fetch GET /api/chat/result/{job_id}",
        ),
    }


def components() -> dict[str, Any]:
    schemas: dict[str, Schema] = {"Error": _error_schema()}
    schemas.update(_transcribe_schemas())
    schemas.update(_llm_schemas())
    schemas.update(_chats_schemas())
    schemas.update(_summary_schemas())
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


def _llm_paths() -> dict[str, Any]:
    queue_down = "Job queue unavailable"
    return {
        "/api/llm/available-models": {
            "get": operation(
                "llm",
                "list_llm_models",
                "Models of the local store, or of a remote OpenAI-compatible server",
                {
                    "200": response("The models", ref("LlmModelList")),
                    "400": error("baseUrl is neither the local engine nor an http(s) URL"),
                    "502": error("The remote server did not answer with a model list"),
                },
                description="Without baseUrl, or with the local engine's URL (" + LOCAL_BASE_URL + "), the GGUF "
                "models of the store; otherwise the model list (GET <baseUrl>/v1/models) of that server, asked with "
                "the stored API token.",
                parameters=[
                    query_param(
                        "baseUrl",
                        string(pattern="^$|^local://llama\\.cpp$|" + REMOTE_URL_PATTERN),
                        description="Engine to list: " + LOCAL_BASE_URL + " (or empty, or absent) for the local "
                        "store, else an http(s) URL with a host",
                    )
                ],
            )
        },
        "/api/llm/set-model": {
            "post": operation(
                "llm",
                "set_llm_model",
                "Choose the active model and its settings, and queue its load",
                {
                    "200": response(
                        '"Active model set to <name> (context: <size or default>). Load initiated. Check status."',
                        ref("Confirmation"),
                    ),
                    "400": error(
                        "Body not a JSON object; modelName missing or blank; a value of the wrong type or out of "
                        "range; baseUrl not an http(s) URL; with the local engine, a model not in the store"
                    ),
                    "503": error(queue_down + "; the settings are saved but the load is not queued"),
                },
                description="Answers at once; an LLM worker loads the model in the background. Follow it with "
                "GET /api/llm/status (loadState, residentModels).",
                request_body=json_body(ref("LlmSetModelRequest")),
            )
        },
        "/api/llm/unload": {
            "post": operation(
                "llm",
                "unload_llm_model",
                "Unload the model from the LLM workers",
                {
                    "200": response(
                        '"<n> model instance(s) unloaded successfully." or "No models were loaded."',
                        ref("Confirmation"),
                    ),
                    "503": error(queue_down),
                },
                description="No body. The active model stays configured (loaded stays true); a worker loads it "
                "again on the next request.",
            )
        },
        "/api/llm/api-token": {
            "post": operation(
                "llm",
                "set_llm_api_token",
                "Store or clear the remote server's API token",
                {
                    "200": response("Saved or cleared", ref("LlmApiTokenSaved")),
                    "400": error("Body not a JSON object, or token neither a string nor null, or not visible ASCII "
                                 "without spaces (it is sent in an Authorization header)"),
                },
                request_body=json_body(ref("LlmApiTokenRequest")),
            )
        },
        "/api/llm/status": {
            "get": operation(
                "llm",
                "llm_status",
                "The active model, its settings and whether it is loaded",
                {"200": response("Status", ref("LlmStatus"))},
                description="Answers even when Redis is away (then no worker counts as running).",
                parameters=[
                    query_param("modelName", string(), description="Model to describe instead of the active one")
                ],
            )
        },
        "/api/llm/models/{name}/estimate-vram": {
            "get": operation(
                "llm",
                "estimate_llm_vram",
                "Estimate the memory a model of the store needs",
                {
                    "200": response("The estimate", ref("VramEstimate")),
                    "400": error("context_size is not a positive integer, or num_gpu_layers not a non-negative one"),
                    "404": error("The model is not in the store"),
                },
                parameters=[
                    path_param("name", "File name of a model in the store (URL-encoded)"),
                    query_param("context_size", integer(minimum=1),
                                description="Context in tokens; default the model's own (4096 when unknown)"),
                    query_param("num_gpu_layers", integer(minimum=0),
                                description="Layers on the GPU; default all"),
                    query_param("baseUrl", string(), description="Accepted and ignored"),
                ],
            )
        },
        "/api/llm/delete-model": {
            "post": operation(
                "llm",
                "delete_llm_model",
                "Delete a model from the store",
                {
                    "200": response('"Model <name> deleted."', ref("Confirmation")),
                    "400": error("Body not a JSON object, or modelName not a file name (letters, digits, _ . -)"),
                    "404": error("The model is not in the store"),
                    "409": error("It is the active model of the local engine"),
                },
                request_body=json_body(ref("LlmDeleteModelRequest")),
            )
        },
    }


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


def _summary_paths() -> dict[str, Any]:
    summary_job = path_param("job_id", "job_id returned by POST /api/summary/")
    chat_job = path_param("job_id", "job_id of a 202 answer of POST /api/chat/")
    unknown_summary = error("Unknown summary job")
    queue_down = "Job queue unavailable"
    bad_model = "model_name names no model here, or no model is configured"
    chat_done = response("The answer", ref("ChatCompletion"))
    chat_pending = response("Not answered yet (or canceled)", ref("ChatPending"))
    return {
        "/api/summary/": {
            "post": operation(
                "summary",
                "create_summary",
                "Queue a summary of a transcript",
                {
                    "200": response("Summary queued", ref("SummaryAccepted")),
                    "400": error(
                        "Body not a JSON object; nothing to summarise; a malformed transcript; an unknown format; "
                        "max_length not an integer in 10..5000; " + bad_model
                    ),
                    "503": error(queue_down),
                },
                description="An LLM worker writes the summary (part by part when the transcript does not fit the "
                "context) and lists its topics. Follow it with GET /api/summary/status/{job_id}, then fetch "
                "GET /api/summary/{job_id}.",
                request_body=json_body(ref("SummaryRequest")),
            )
        },
        "/api/summary/status/{job_id}": {
            "get": operation(
                "summary",
                "summary_status",
                "Progress of a summary",
                {"200": response("The job", ref("SummaryStatus")), "404": unknown_summary},
                parameters=[summary_job],
            )
        },
        "/api/summary/{job_id}": {
            "get": operation(
                "summary",
                "summary_result",
                "A completed summary",
                {
                    "200": response("The summary", ref("SummaryResult")),
                    "404": unknown_summary,
                    "409": error("The summary is not completed (queued, processing, failed or canceled)"),
                },
                parameters=[summary_job],
            )
        },
        "/api/chat/models": {
            "get": operation(
                "summary",
                "chat_models",
                "Models POST /api/chat/ and POST /api/summary/ accept as model_name",
                {"200": response("The models", ref("ChatModelList"))},
            )
        },
        "/api/chat/": {
            "post": operation(
                "summary",
                "chat_completion",
                "Ask the model about a transcript",
                {
                    "200": chat_done,
                    "202": chat_pending,
                    "400": error(
                        "Body not a JSON object; messages empty or malformed, a content over "
                        f"{CHAT_MESSAGE_MAX} characters, or the last message not the user's; temperature not in "
                        "0..2; max_tokens not in 1..4096; a malformed transcript; " + bad_model
                    ),
                    "503": error(queue_down + ", or the model could not answer"),
                },
                description="Waits for the answer up to PARLEY_CHAT_WAIT_S seconds (120 by default); after that "
                "answers 202 with the job id to poll at GET /api/chat/result/{job_id}. A transcript too long for "
                "the context is cut to its head and tail (is_truncated).",
                request_body=json_body(ref("ChatCompletionRequest")),
            )
        },
        "/api/chat/result/{job_id}": {
            "get": operation(
                "summary",
                "chat_completion_result",
                "The answer of a chat request that took too long",
                {
                    "200": chat_done,
                    "202": chat_pending,
                    "404": error("Unknown chat job"),
                    "503": error("The model could not answer"),
                },
                parameters=[chat_job],
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
    for part in (_llm_paths(),
                 _chats_paths(), _summary_paths()):
        paths.update(part)
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
