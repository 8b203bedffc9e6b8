"""Builds the OpenAPI 3.0.3 document that describes Parley's HTTP API."""

from __future__ import annotations

import importlib.metadata
from typing import Any

from web.openapi_schema import Schema, number, obj, string

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


def components() -> dict[str, Any]:
    schemas: dict[str, Schema] = {"Error": _error_schema()}
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
    # A token, or none at all (loopback deployments without tokens); health, docs and sign-in are always open.
    document["security"] = [{"bearerToken": []}, {}]
    document["components"] = components()
    # The areas whose shapes are declared (web.declared) add their generated part.
    from web import api_blueprints
    from web.auth import auth_bp
    from web.declared import declared_paths

    document["paths"], schemas = declared_paths([*api_blueprints(), auth_bp])
    document["components"]["schemas"].update(schemas)
    return document
