"""Small builders of OpenAPI 3.0.3 schemas, parameters, responses and operations, shared by the document's parts."""
from __future__ import annotations

from typing import Any

Schema = dict[str, Any]


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


def sse_events(data: Schema, description: str) -> Schema:
    """One Server-Sent Event, as schemathesis (and OpenAPI 3.2) read a text/event-stream schema: its fields.
    `data` holds JSON of the `data` schema; OpenAPI 3.0 has no contentSchema keyword, so it is named in an
    extension (x-contentSchema) for readers."""
    return obj({
        "data": {"type": "string", "x-contentMediaType": "application/json", "x-contentSchema": data,
                 "description": "One line of compact JSON"},
        "event": string("The event type; absent means `message`"),
        "id": string("The event id, for Last-Event-ID"),
        "retry": integer("Reconnection delay in ms", minimum=0),
    }, required=None, description=description)


def epoch_seconds(description: str) -> Schema:
    return number(f"{description} (Unix epoch seconds)", format="double")


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
    # Any operation answers 414 to a URL over web.MAX_URL_BYTES (4096 bytes of path and query).
    op["responses"] = {**responses, "414": responses.get("414") or error("The URL is longer than 4096 bytes")}
    return op


def multipart_body(
    properties: dict[str, Schema],
    required: list[str],
    *,
    file_field: str = "file",
    file_types: str = "audio/*, video/*, application/octet-stream",
) -> dict[str, Any]:
    schema: Schema = {"type": "object", "properties": properties, "required": required}
    return {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": schema,
                "encoding": {file_field: {"contentType": file_types}},
            }
        },
    }


def json_body(schema: Schema) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def id_param(name: str, description: str) -> dict[str, Any]:
    """An integer id in the path: the server checks it is 1 to 18 digits and answers 400 otherwise."""
    return {
        **path_param(name, description),
        "schema": string("Non-negative integer, as digits", pattern="^[0-9]+$", maxLength=18, example="1"),
    }


def header(description: str, schema: Schema | None = None) -> dict[str, Any]:
    return {"description": description, "schema": schema or string()}


def audio_file() -> Schema:
    return string("Audio (or video) file", format="binary")
