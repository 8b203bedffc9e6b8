"""Request and response shapes declared once, as pydantic models: they validate, serialise and document.

An endpoint declares its shapes with `@endpoint(...)`; spectree (the Flask integration) validates the request
against them before the handler runs, serialises the model the handler returns, and generates the endpoint's
part of the OpenAPI document (`declared_paths`). Its models inherit `WireModel`: snake_case in Python,
camelCase on the wire. A request that does not fit gets the house 400 (`web.errors`), naming the fields.

spectree was chosen over flask-openapi3, APIFlask and flask-smorest because it decorates plain Flask views:
the app, its blueprints, its error handlers, streams and WebSocket routes stay as they are, so areas can move
to declarations one at a time; and it speaks pydantic, which the settings already use.
"""
from __future__ import annotations

import functools
import re
from typing import Annotated, Any, Callable

from annotated_types import Ge, Le
from flask import Blueprint, Flask, request
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticUseDefault
from spectree import Response, SpecTree

from web.errors import bad_request
from web.openapi_schema import error, operation, response

__all__ = ["Confirmation", "Field", "QueryModel", "SparseWireModel", "SpecWireModel", "WireModel", "declared_paths",
           "endpoint", "query_integer"]


class WireModel(BaseModel):
    """A JSON body as the API carries it: camelCase names, strict JSON types, strings trimmed."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, serialize_by_alias=True,
                              strict=True, str_strip_whitespace=True)


class SpecWireModel(WireModel):
    """A JSON body of the transcription service's API, whose names are snake_case on the wire too."""

    model_config = ConfigDict(alias_generator=None)


def _optional_not_null(schema: dict[str, Any], model: type) -> None:
    # A SparseWireModel never sends null: an optional field is absent or has a value.
    required = set(schema.get("required", ()))
    for name, field in schema.get("properties", {}).items():
        if name not in required:
            schema["properties"][name] = _absent_not_null(field)


class SparseWireModel(WireModel):
    """A body whose unset optional fields are left out rather than sent as null."""

    model_config = ConfigDict(json_schema_extra=_optional_not_null)

    def model_dump_json(self, **options: Any) -> str:  # what spectree serialises a returned model with
        return super().model_dump_json(**{"exclude_none": True, **options})


class QueryModel(BaseModel):
    """Query parameters: their names as they are, values as the URL carries them (text)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)  # alias: a name Python can't spell, `from`


_DIGITS = re.compile(r"[0-9]{1,18}")
_SIGNED_DIGITS = re.compile(r"[+-]?[0-9]{1,18}")
LARGEST_QUERY_INTEGER = 10 ** 18 - 1  # 18 digits: always fits the database's 64-bit integers


def query_integer(*, minimum: int | None = 0, maximum: int | None = LARGEST_QUERY_INTEGER, signed: bool = False,
                  blank_is_default: bool = False) -> Any:
    """The type of an integer query parameter.

    It is 1 to 18 digits, with spaces around allowed (pydantic alone would also take "1_000" and "1.0", which
    the API never did), between `minimum` and `maximum` (None: no bound). `signed` (default False) allows a
    leading + or -; `blank_is_default` (default False) reads an empty value as absent instead of refusing it.
    """
    pattern, kind = (_SIGNED_DIGITS, "an integer") if signed else (_DIGITS, "a non-negative integer")

    def check(value: Any) -> Any:
        if isinstance(value, str) and blank_is_default and not value.strip():
            raise PydanticUseDefault()
        if isinstance(value, str) and not pattern.fullmatch(value.strip()):
            raise ValueError(f"must be {kind}, got {value!r}")
        return value

    bounds = ([] if minimum is None else [Ge(minimum)]) + ([] if maximum is None else [Le(maximum)])
    return Annotated[(int, *bounds, BeforeValidator(check))]


class Confirmation(WireModel):
    """What was done."""

    message: str = Field(description="What was done")


class ErrorBody(WireModel):
    """Stands for the document's shared `Error` schema in declarations; see _house_style."""

    error: str
    message: str


def _refuse_invalid(req, resp, req_validation_error, instance, model_adapter=None) -> None:
    """spectree's hook after request validation: a misfit becomes the house 400, naming each field."""
    if isinstance(req_validation_error, ValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg'].removeprefix('Value error, ')}"
                             for e in req_validation_error.errors(include_url=False))
        raise bad_request(f"invalid request: {problems}")


api = SpecTree("flask", mode="strict", openapi_version="3.0.3", annotations=True,
               naming_strategy=lambda model: model.__name__,
               nested_naming_strategy=lambda parent, child: child,
               validation_error_status=400, validation_error_model=ErrorBody, before=_refuse_invalid)

_query_models: set[str] = set()


def endpoint(*, tag: str, responses: dict[int, tuple[Any, str] | str], json: type[WireModel] | None = None,
             query: type[QueryModel] | None = None, path_parameters: dict[str, str] | None = None,
             operation_id: str | None = None) -> Callable:
    """Declare an endpoint: its tag, request body and query models, and responses by status code.

    A response is (body model or list[model], description), or a description alone for an error, whose body
    is the shared `Error`. The handler names its body `json: Model` (its query, `query: Model`) to receive it
    validated; it returns a model instance (or a tuple with a status), which is serialised as declared. The
    docstring's first line is the summary, the rest the description. The operationId is `operation_id`,
    by default the view's name.
    """
    models = {f"HTTP_{code}": (ErrorBody, body) if isinstance(body, str) else body for code, body in responses.items()}

    def declare(view: Callable) -> Callable:
        if query is not None:
            _query_models.add(query.__name__)
        validated = api.validate(json=json, query=query, resp=Response(**models), tags=[tag],
                                 operation_id=operation_id or view.__name__,
                                 path_parameter_descriptions=path_parameters)(view)
        validated.error_descriptions = {str(code): body for code, body in responses.items() if isinstance(body, str)}
        if json is None:
            return validated

        @functools.wraps(validated)
        def with_json_object(*args: Any, **kwargs: Any):
            # spectree reads a missing, broken or non-object body as {}; the client should hear what is wrong.
            if not isinstance(request.get_json(silent=True), dict):
                names = [field.alias or name for name, field in json.model_fields.items()]
                raise bad_request(f"the body must be a JSON object ({', '.join(names)})")
            return validated(*args, **kwargs)

        return with_json_object

    return declare


def declared_paths(blueprints: list[Blueprint]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(paths, component schemas) of the declared endpoints of `blueprints`, in the house style of the
    hand-written parts of the document (which still describe a blueprint's other endpoints)."""
    app = Flask(__name__)
    app.url_map.strict_slashes = False
    for blueprint in blueprints:
        app.register_blueprint(blueprint)
    with app.app_context():
        spec = api.spec
        paths = {path: {method: _house_style(op, app, path, method) for method, op in item.items()}
                 for path, item in spec["paths"].items()}
    # Query models become parameters; ErrorBody stands for the shared Error.
    schemas = {name: _openapi_30(schema) for name, schema in spec["components"]["schemas"].items()
               if name != "ErrorBody" and name not in _query_models}
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


def _house_style(op: dict[str, Any], app: Flask, path: str, method: str) -> dict[str, Any]:
    """One generated operation as the hand-written parts write theirs: shared Error responses, standard
    headers, the 414 every operation can answer."""
    view = _view(app, path, method)
    errors = getattr(view, "error_descriptions", {})
    responses = {}
    for code, answer in op["responses"].items():
        if code in errors:
            responses[code] = error(errors[code])
        elif code == "400":
            continue  # spectree adds it to every endpoint; only those that declare a 400 can answer one
        else:
            content = answer.get("content", {}).get("application/json", {})
            responses[code] = response(answer["description"], _openapi_30(content.get("schema")))
    parameters = [{**{k: v for k, v in p.items() if v != ""}, "schema": _openapi_30(_absent_not_null(p["schema"]))}
                  for p in op.get("parameters") or []]
    built = operation(op["tags"][0], op["operationId"], op["summary"], responses,
                      description=op.get("description") or None, parameters=parameters or None,
                      request_body=op.get("requestBody"))
    if "requestBody" in built:
        built["requestBody"]["required"] = True
    return built


def _absent_not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter (or a sparse body's field) is absent or has a value: pydantic's `X | None = None`
    means absent here, not null."""
    options = schema.get("anyOf")
    if schema.get("default", ...) is None and isinstance(options, list) and {"type": "null"} in options:
        rest = [option for option in options if option != {"type": "null"}]
        kept = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
        return {**kept, **rest[0]} if len(rest) == 1 else {**kept, "anyOf": rest}
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
