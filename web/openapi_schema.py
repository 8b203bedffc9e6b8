"""Small builders of OpenAPI 3.0.3 schema pieces that declarations write by hand: non-JSON bodies, headers."""
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


def _typed(type_: str, description: str | None, extra: dict[str, Any]) -> Schema:
    schema: Schema = {"type": type_}
    if description:
        schema["description"] = description
    schema.update(extra)
    return schema


def obj(properties: dict[str, Schema], *, required: list[str] | str | None = "all",
        description: str | None = None) -> Schema:
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


def header(description: str, schema: Schema | None = None) -> dict[str, Any]:
    return {"description": description, "schema": schema or string()}
