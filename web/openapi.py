"""Builds the OpenAPI 3.0.3 document of Parley's HTTP API from the endpoints declared with web.declared.

spectree generates each declared operation and its models' schemas; this module writes them in the
document's house style (the shared Error, the standard response headers, the 414 every operation can
answer, OpenAPI 3.0 nullables, forms and arrays in place) and adds the info, tags and security scheme.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import re
from typing import Any, Callable

from flask import Blueprint, Flask
from pydantic import BaseModel

from web.declared import absent_not_null, api, parameter_models
from web.openapi_schema import number, obj, ref, string

OPENAPI_VERSION = "3.0.3"
TAGS = {
    "meta": "Service health and information",
    "transcribe": "Upload audio, follow transcription jobs and fetch transcripts",
    "retranslate": "Re-transcribe single segments",
    "sessions": "Recorded sessions: upload with metadata, transcripts and their edits, speakers, audio and exports",
    "templates": "Saved prompts, including the system prompts Parley uses",
    "usage": "Model calls and their estimated cost, for the usage pages",
    "llm": "Language models: the model store and GGUF downloads, the active model, its settings and status",
    "chats": "Chats with the language model about a session or standalone, with replies streamed as Server-Sent "
             "Events",
    "summary": "Summaries of and questions about transcripts, answered by the language model",
    "docs": "This API description and its viewer",
    "system": "Health, readiness, queue counts, GPU figures, transcription reset",
    "search": "Full-text search over transcripts and chats, and rebuilding its index",
    "analysis": "Questions asked across several sessions, answered map-reduce style by the language model, with "
                "progress streamed as Server-Sent Events",
    "admin": "Backup, restore and reset of all data; signing in to the operator pages",
    "monitoring": "The queue dashboard, Prometheus metrics and the deployment's processes",
}
ERROR = obj({"detail": string("Human readable description of the problem"),
             "error": string("Error class name, e.g. BadRequestError", example="BadRequestError"),
             "message": string("Same text as detail")},
            description="Error body returned by every endpoint on failure")
TOKENS = ("An API token from `parley tokens create` (scopes read < write < admin). While no token exists Parley "
          "serves loopback clients without one. Missing token: 401; scope too low: 403; too many uploads, chat "
          "messages or analyses for one token: 429 with Retry-After (never for the loopback client of an install "
          "without tokens).")


def openapi_document(*, server_url: str | None = None) -> dict:
    """Return the OpenAPI 3.0.3 document for the Parley API.

    server_url, when given (e.g. ``request.host_url``), becomes the single entry
    of ``servers``; a trailing slash is dropped so paths join cleanly.
    """
    from web import api_blueprints  # the app's blueprints import this module (the docs area)
    from web.auth import auth_bp

    paths, schemas = declared_paths([*api_blueprints(), auth_bp])
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
    document["tags"] = [{"name": name, "description": text} for name, text in TAGS.items()]
    document["paths"] = paths
    # A token, or none at all (loopback deployments without tokens); health, docs and sign-in are always open.
    document["security"] = [{"bearerToken": []}, {}]
    document["components"] = {
        "schemas": {"Error": ERROR, **schemas},
        "securitySchemes": {"bearerToken": {"type": "http", "scheme": "bearer", "description": TOKENS}},
        "headers": {
            "X-Request-ID": {"description": "Request id, echoed in logs", "required": True, "schema": string()},
            "X-Process-Time-Ms": {"description": "Server-side processing time in milliseconds", "required": True,
                                  "schema": number()},
        },
    }
    return document


def _api_version() -> str:
    try:
        return importlib.metadata.version("parley")
    except importlib.metadata.PackageNotFoundError:
        return "0.1.0"


# --- operations in the house style ---------------------------------------------------------------------
STANDARD_HEADERS = {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"},
                    "X-Process-Time-Ms": {"$ref": "#/components/headers/X-Process-Time-Ms"}}


def _response(description: str, schema: dict[str, Any] | None = None, *, content: dict[str, Any] | None = None,
              headers: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description, "headers": {**STANDARD_HEADERS, **(headers or {})}}
    if content is None and schema is not None:
        content = {"application/json": {"schema": schema}}
    if content is not None:
        answer["content"] = content
    return answer


def _error(description: str) -> dict[str, Any]:
    return _response(description, ref("Error"))


def declared_paths(blueprints: list[Blueprint]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(paths, component schemas) of the declared endpoints of `blueprints`, in the document's house style."""
    app = Flask(__name__)
    app.url_map.strict_slashes = False
    for blueprint in blueprints:
        app.register_blueprint(blueprint)
    for rule in list(app.url_map.iter_rules()):
        if getattr(rule, "websocket", False):  # spectree leaves WebSocket routes out; documented as their upgrade GET
            app.add_url_rule(rule.rule, f"{rule.endpoint}.upgrade", app.view_functions[rule.endpoint], methods=["GET"])
    with app.app_context():
        spec = api.spec
    every_schema = {name: _openapi_30(schema) for name, schema in spec["components"]["schemas"].items()}
    paths = {path: {method: _house_style(op, app, path, method, every_schema) for method, op in item.items()}
             for path, item in spec["paths"].items()}
    # Query and form models become parameters and inline bodies; ErrorBody stands for the shared Error.
    schemas = {name: schema for name, schema in every_schema.items()
               if name != "ErrorBody" and name not in parameter_models}
    # spectree names a list response (TemplateList); the document writes arrays in place.
    arrays = {f"#/components/schemas/{name}": schema for name, schema in schemas.items()
              if schema.get("type") == "array"}
    return _inline(paths, arrays), {name: schema for name, schema in schemas.items() if schema.get("type") != "array"}


def _inline(node: Any, arrays: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_inline(item, arrays) for item in node]
    if not isinstance(node, dict):
        return node
    if node.get("$ref") in arrays:
        return arrays[node["$ref"]]
    return {key: _inline(value, arrays) for key, value in node.items()}


def _house_style(op: dict[str, Any], app: Flask, path: str, method: str, schemas: dict[str, Any]) -> dict[str, Any]:
    """One generated operation in the document's style: shared Error responses, standard headers, the 414
    every operation can answer, forms in place."""
    view = _view(app, path, method)
    errors = getattr(view, "error_descriptions", {})
    documented = getattr(view, "documented_responses", {})
    responses = {}
    for code, answer in op["responses"].items():
        if code in documented:
            responses[code] = _response(documented[code].description, headers=documented[code].headers,
                                        content=_with_models(documented[code].content, schemas))
        elif code in errors:
            responses[code] = _error(errors[code])
        elif code == "400":
            continue  # spectree adds it to every endpoint; only those that declare a 400 can answer one
        else:
            content = answer.get("content", {}).get("application/json", {})
            responses[code] = _response(answer["description"], _openapi_30(content.get("schema")))
    path_schemas = getattr(view, "path_schemas", {})
    parameters = [{**{k: v for k, v in p.items() if v != ""}, "schema": _path_schema(path_schemas[p["name"]])
                   if p["in"] == "path" and p["name"] in path_schemas else _openapi_30(absent_not_null(p["schema"]))}
                  for p in op.get("parameters") or []] + getattr(view, "header_parameters", [])
    body = op.get("requestBody")
    if body and "multipart/form-data" in body["content"]:
        body = _form_body(body["content"]["multipart/form-data"]["schema"], view, schemas)
    built: dict[str, Any] = {"tags": op["tags"][:1], "operationId": op["operationId"], "summary": op["summary"]}
    if description := _description(view):
        built["description"] = description
    if parameters:
        built["parameters"] = parameters
    if body:
        built["requestBody"] = {**body, "required": True}
    # Any operation answers 414 to a URL over web.MAX_URL_BYTES (4096 bytes of path and query).
    built["responses"] = {**responses, "414": _error("The URL is longer than 4096 bytes")}
    return built


def _with_models(node: Any, schemas: dict[str, Any]) -> Any:
    """A Documented response's content, where any schema may be a model class: it becomes a reference, and the
    model's schema (with those it uses) joins the components."""
    if isinstance(node, type) and issubclass(node, BaseModel):
        generated = node.model_json_schema(ref_template="#/components/schemas/{model}", mode="serialization")
        for name, schema in {**generated.pop("$defs", {}), node.__name__: generated}.items():
            schemas.setdefault(name, _openapi_30(schema))
        return {"$ref": f"#/components/schemas/{node.__name__}"}
    if isinstance(node, dict):
        return {key: _with_models(value, schemas) for key, value in node.items()}
    if isinstance(node, list):
        return [_with_models(item, schemas) for item in node]
    return node


def _path_schema(schema: dict[str, Any] | Callable[[], dict[str, Any]]) -> dict[str, Any]:
    return schema() if callable(schema) else schema  # a callable: what it says may change (a Procfile's names)


def _description(view: Callable) -> str | None:
    # The docstring after its summary, with its line breaks: spectree joins the lines, which undoes a list.
    parts = re.split(r"\n\s*\n", inspect.cleandoc(view.__doc__ or ""), maxsplit=1)
    return parts[1].strip() if len(parts) > 1 and parts[1].strip() else None


def _form_body(reference: dict[str, Any], view: Callable, schemas: dict[str, Any]) -> dict[str, Any]:
    """A form's body in place: its text fields (optional ones absent, not null) and its files."""
    files, file_types, media_type = view.form_files
    fields = schemas[reference["$ref"].rsplit("/", 1)[1]]
    schema = _absent_not_null_fields(fields)
    schema["properties"] = {**{name: {"type": "string", "format": "binary", "description": description}
                               for name, description in files.items()}, **schema.get("properties", {})}
    required = [*files, *schema.pop("required", ())]
    if required:  # OpenAPI 3.0 refuses an empty list
        schema["required"] = required
    encoding = {name: {"contentType": file_types} for name in files}
    return {"content": {media_type: {"schema": schema, **({"encoding": encoding} if encoding else {})}}}


def _absent_not_null_fields(schema: dict[str, Any]) -> dict[str, Any]:
    required = set(schema.get("required", ()))
    properties = {name: field if name in required else _absent_not_null_30(field)
                  for name, field in schema.get("properties", {}).items()}
    return {**schema, "properties": properties}


def _absent_not_null_30(schema: dict[str, Any]) -> dict[str, Any]:
    # After _openapi_30 an optional value reads {..., nullable: true, default: null}.
    if schema.get("nullable") and schema.get("default", ...) is None:
        return {k: v for k, v in schema.items() if k not in ("nullable", "default")}
    return schema


def _view(app: Flask, path: str, method: str) -> Callable:
    for rule in app.url_map.iter_rules():
        templated = re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", r"{\1}", rule.rule)  # <path:name> -> {name}
        if templated == path and method.upper() in (rule.methods or ()):
            return app.view_functions[rule.endpoint]
    raise LookupError(f"no view for {method.upper()} {path}")


def _openapi_30(schema: Any) -> Any:
    """pydantic writes JSON Schema 2020-12; the document is OpenAPI 3.0.3: `title`s go (they repeat the
    names), an optional value becomes `nullable`, `const` an enum of one, and a `$ref` stands alone (3.0
    ignores its siblings)."""
    if isinstance(schema, list):
        return [_openapi_30(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    options = schema.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options:
        others = [option for option in options if option != {"type": "null"}]
        rest = {k: v for k, v in schema.items() if k != "anyOf"}
        kept = others[0] if len(others) == 1 else {"anyOf": others}
        kept = {"allOf": [kept]} if "$ref" in kept else kept
        if "enum" in kept:  # OpenAPI 3.0 takes an enum literally: a nullable one lists null
            kept = {**kept, "enum": [*kept["enum"], None]}
        return _openapi_30({**rest, **kept, "nullable": True})
    if "$ref" in schema and len(schema) > 1:
        return _openapi_30({**{k: v for k, v in schema.items() if k != "$ref"}, "allOf": [{"$ref": schema["$ref"]}]})
    converted = {}
    for key, value in schema.items():
        if key == "properties":
            converted[key] = {name: _openapi_30(item) for name, item in value.items()}
        elif key == "const":
            converted["enum"] = [value]
        elif key != "title" or not isinstance(value, str):
            converted[key] = _openapi_30(value)
    return converted
