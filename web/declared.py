"""Request and response shapes declared once, as pydantic models: they validate, serialise and document.

An endpoint declares its shapes with `@endpoint(...)`; spectree (the Flask integration) validates the request
against them before the handler runs, serialises the model the handler returns, and generates the endpoint's
part of the OpenAPI document (web.openapi). Its models inherit `WireModel`: snake_case in Python,
camelCase on the wire. A request that does not fit gets the house 400 (`web.errors`), naming the fields.

spectree was chosen over flask-openapi3, APIFlask and flask-smorest because it decorates plain Flask views:
the app, its blueprints, its error handlers, streams and WebSocket routes stay as they are, so areas can move
to declarations one at a time; and it speaks pydantic, which the settings already use.
"""
from __future__ import annotations

import functools
import inspect
import math
import re
from dataclasses import dataclass
from typing import Annotated, Any, Callable

from annotated_types import Ge, Le
from flask import current_app, request
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, RootModel, ValidationError, model_serializer
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticUseDefault
from spectree import Response, SpecTree
from spectree.utils import get_multidict_items

from web.errors import bad_request
from web.openapi_schema import header, sse_events, string

__all__ = ["Confirmation", "Documented", "Field", "FormModel", "ID_DIGITS", "LenientBoolean", "NONBLANK",
           "OutputModel", "QueryModel", "SparseWireModel", "SpecWireModel", "StoredModel", "WireModel",
           "absent_not_null", "endpoint", "event_stream", "lenient_integer", "lenient_number", "one_of",
           "query_integer"]


class WireModel(BaseModel):
    """A JSON body as the API carries it: camelCase names, strict JSON types, strings trimmed."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, serialize_by_alias=True,
                              strict=True, str_strip_whitespace=True)


class OutputModel(WireModel):
    """A response body made of stored values: its strings are sent exactly as stored, never trimmed."""

    model_config = ConfigDict(str_strip_whitespace=False)


class SpecWireModel(WireModel):
    """A JSON body of the transcription service's API, whose names are snake_case on the wire too."""

    model_config = ConfigDict(alias_generator=None)


class StoredModel(SpecWireModel):
    """A body read back as it was stored (a job's result, a segment's words): a field that was absent stays
    absent, a null stays null. Its text is as stored: a word's leading space is part of it."""

    model_config = ConfigDict(str_strip_whitespace=False)

    # No return annotation: with one, pydantic would document the serialised body as that type.
    @model_serializer(mode="wrap")
    def _leave_out_unset(self, serialise: Any):  # also where the model is nested in another answer
        unset = {field.alias or name for name, field in type(self).model_fields.items()
                 if name not in self.model_fields_set}
        return {key: value for key, value in serialise(self).items() if key not in unset}


def _optional_not_null(schema: dict[str, Any], model: type) -> None:
    # A SparseWireModel never sends null: an optional field is absent or has a value.
    required = set(schema.get("required", ()))
    for name, field in schema.get("properties", {}).items():
        if name not in required:
            schema["properties"][name] = absent_not_null(field)


class SparseWireModel(WireModel):
    """A body whose unset optional fields are left out rather than sent as null."""

    model_config = ConfigDict(json_schema_extra=_optional_not_null)

    # No return annotation: with one, pydantic would document the serialised body as that type.
    @model_serializer(mode="wrap")
    def _leave_out_nulls(self, serialise: Any):  # also where the model is nested in another answer
        return {name: value for name, value in serialise(self).items() if value is not None}


class QueryModel(BaseModel):
    """Query parameters: their names as they are, values as the URL carries them (text)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)  # alias: a name Python can't spell, `from`


class FormModel(QueryModel):
    """The text fields of a posted form: their names as they are, values as the form carries them (text),
    trimmed."""

    model_config = ConfigDict(str_strip_whitespace=True)


#: The pattern that documents a blank value is refused (values are trimmed before the length checks).
NONBLANK = r"\S"
#: The schema of an id in a path whose route takes any text and answers 400 to anything but 1 to 18 digits.
ID_DIGITS = {"type": "string", "description": "Non-negative integer, as digits", "pattern": "^[0-9]+$",
             "maxLength": 18, "example": "1"}
_DIGITS = re.compile(r"[0-9]{1,18}")
_SIGNED_DIGITS = re.compile(r"[+-]?[0-9]{1,18}")
INT64_MAX = 2 ** 63 - 1  # the database stores 64-bit integers
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


def lenient_integer(*, minimum: int | None = None, maximum: int | None = INT64_MAX) -> Any:
    """The type of an integer field that also takes its digits as a string (a form's text, or JSON as both APIs
    always took it); an empty string is absent (the field's default). Documented as an integer."""
    lowest, highest = -INT64_MAX if minimum is None else minimum, INT64_MAX if maximum is None else maximum

    def read(value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise PydanticUseDefault()
        if isinstance(value, bool):
            raise ValueError(f"must be an integer, got {value!r}")
        if isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise ValueError(f"must be an integer, got {value!r}") from None
        if isinstance(value, int) and not lowest <= value <= highest:
            raise ValueError(f"must be between {lowest} and {highest}, got {value}")
        return value

    bounds = ([] if minimum is None else [Ge(minimum)]) + ([] if maximum is None else [Le(maximum)])
    return Annotated[(int, *bounds, BeforeValidator(read))]


def lenient_number(*, minimum: float | None = None, maximum: float | None = None) -> Any:
    """The type of a number field that also takes it as a string, like `lenient_integer`; it must be finite and
    within `minimum` and `maximum` (None: no bound)."""

    def read(value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise PydanticUseDefault()
        if isinstance(value, bool):
            raise ValueError(f"must be a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ValueError(f"must be a finite number, got {value!r}")
        if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
            raise ValueError(f"must be between {minimum} and {maximum}, got {value!r}")
        return number

    bounds = ([] if minimum is None else [Ge(minimum)]) + ([] if maximum is None else [Le(maximum)])
    return Annotated[(float, *bounds, BeforeValidator(read))]


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _read_boolean(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip().lower()
        if not text:
            raise PydanticUseDefault()
        if text not in _TRUE | _FALSE:
            raise ValueError(f"must be true or false, got {value!r}")
        return text in _TRUE
    return value


#: A boolean field that also takes true/false, yes/no, on/off or 1/0 as text; an empty string is absent.
LenientBoolean = Annotated[bool, BeforeValidator(_read_boolean)]


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

parameter_models: set[str] = set()


@dataclass(frozen=True)
class Documented:
    """A response whose body is not a JSON model (a file, a stream, a page, a redirect): documented as given,
    and returned by the handler as a Flask response that is passed through untouched."""

    description: str
    # OpenAPI media types, e.g. {"text/html": {"schema": {...}}}; a schema may be a model class.
    content: dict[str, Any] | None = None
    headers: dict[str, Any] | None = None


def event_stream(description: str, data: type[BaseModel], *, frames: str | None = None,
                 headers: dict[str, Any] | None = None) -> Documented:
    """A Server-Sent Events response (framed by web.sse, with its headers) whose `data:` lines each hold the JSON
    of a `data`; `frames` describes the events (by default: data lines only), `headers` the route's own."""
    frames = frames or f"`data: <{data.__name__} JSON>` lines, each followed by a blank line"
    return Documented(description, {"text/event-stream": {"schema": sse_events(data, frames)}}, headers={
        **(headers or {}), "Cache-Control": header("no-cache, no-transform", string(example="no-cache, no-transform")),
        "X-Accel-Buffering": header("no: proxies must not buffer the stream", string(enum=["no"]))})


def one_of(schema: dict[str, Any]) -> None:
    """The `json_schema_extra` of a union whose members never overlap (a stream's frames): exactly one matches,
    where pydantic would document any of them."""
    schema["oneOf"] = schema.pop("anyOf")


def endpoint(*, tag: str, responses: dict[int, tuple[Any, str] | str | Documented], json: type[WireModel] | None = None,
             query: type[QueryModel] | None = None, form: type[FormModel] | None = None,
             files: dict[str, str] | None = None, file_types: str = "audio/*, video/*, application/octet-stream",
             form_media_type: str = "multipart/form-data",
             path_parameters: dict[str, str | tuple[str, dict[str, Any] | Callable[[], dict]]] | None = None,
             header_parameters: list[dict[str, Any]] | None = None, shared_description: str | None = None,
             operation_id: str | None = None) -> Callable:
    """Declare an endpoint: its tag, request body and query models, and responses by status code.

    A response is (body model or list[model], description), a description alone for an error, whose body
    is the shared `Error`, or `Documented(...)` for a body that is not JSON. The handler names its body
    `json: Model` (its query `query: Model`, its form fields `form: Model`) to receive it validated; it
    returns a model instance (or a tuple with a status), which is serialised as declared. The docstring's
    first line is the summary, the rest the description. The operationId is `operation_id`, by default the
    view's name.

    A form (`form`, posted as `form_media_type`, default multipart) is validated from its text fields; the
    uploaded files it carries are named in `files` ({field: description}, all required, of `file_types`)
    and read by the handler, which streams them to disk. An endpoint with a form or a `Documented` response
    runs its handler outside spectree, whose response handling would read a streamed body whole.
    `path_parameters` describes the path's parameters: {name: description}, or {name: (description, schema)}
    where the route takes any text but answers 400 to what does not fit the schema (e.g. `ID_DIGITS`); the
    schema may be a function that gives it, asked each time the document is built.
    `header_parameters` documents request headers the handler reads itself (OpenAPI parameter objects);
    `shared_description` is appended to the docstring's description (text several endpoints share).
    """
    models = {f"HTTP_{code}": None if isinstance(body, Documented) else (ErrorBody, body) if isinstance(body, str)
              else body for code, body in responses.items()}
    documented = {str(code): body for code, body in responses.items() if isinstance(body, Documented)}

    def declare(view: Callable) -> Callable:
        if shared_description:
            view.__doc__ = f"{inspect.cleandoc(view.__doc__ or '')}\n\n{shared_description}"
        for model in (query, form):
            if model is not None:
                parameter_models.add(model.__name__)
        paths = path_parameters or {}
        descriptions = {name: spec if isinstance(spec, str) else spec[0] for name, spec in paths.items()}
        validated = api.validate(json=json, query=query, form=form, resp=Response(**models), tags=[tag],
                                 operation_id=operation_id or view.__name__,
                                 path_parameter_descriptions=descriptions)(view)
        wrapper = _unchecked(view, validated, query=query, json=json, form=form) if form or documented else validated
        wrapper.error_descriptions = {str(code): body for code, body in responses.items() if isinstance(body, str)}
        wrapper.documented_responses = documented
        wrapper.form_files = (files or {}, file_types, form_media_type)
        wrapper.header_parameters = header_parameters or []
        wrapper.path_schemas = {name: spec[1] for name, spec in paths.items() if isinstance(spec, tuple)}
        if json is None or wrapper is not validated:
            return wrapper

        @functools.wraps(validated)
        def with_json_object(*args: Any, **kwargs: Any):
            _require_json_object(json)
            return validated(*args, **kwargs)

        return with_json_object

    return declare


def _serialised(result: Any) -> Any:
    """A handler's model (alone or with a status) as the JSON response spectree would have made of it."""
    body, *rest = result if isinstance(result, tuple) else (result,)
    if isinstance(body, list) and all(isinstance(item, BaseModel) for item in body):
        text = f"[{','.join(item.model_dump_json() for item in body)}]"
    elif isinstance(body, BaseModel):
        text = body.model_dump_json()
    else:
        return result
    made = current_app.response_class(text, mimetype="application/json")
    return (made, *rest) if rest else made


def _require_json_object(model: type[BaseModel]) -> None:
    # spectree reads a missing, broken or non-object body as {}; the client should hear what is wrong.
    if issubclass(model, RootModel):  # a JSON array of objects
        if not isinstance(request.get_json(silent=True), list):
            raise bad_request(f"the body must be a JSON array ({model.__doc__.strip().rstrip('.')})")
    elif not isinstance(request.get_json(silent=True), dict):
        names = [field.alias or name for name, field in model.model_fields.items()]
        raise bad_request(f"the body must be a JSON object ({', '.join(names)})")


def _unchecked(view: Callable, validated: Callable, *, query: type[BaseModel] | None, json: type[BaseModel] | None,
               form: type[BaseModel] | None) -> Callable:
    """The handler run without spectree: its inputs validated here, its response returned as it is."""

    @functools.wraps(view)
    def run(*args: Any, **kwargs: Any):
        try:
            if query is not None:
                kwargs["query"] = query.model_validate(get_multidict_items(request.args, query))
            if json is not None:
                _require_json_object(json)
                kwargs["json"] = json.model_validate(request.get_json())
            if form is not None:
                kwargs["form"] = form.model_validate(get_multidict_items(request.form, form))
        except ValidationError as exc:
            _refuse_invalid(request, None, exc, None)
        return _serialised(view(*args, **kwargs))

    run.__wrapped__ = validated  # how spectree finds the declaration when it builds the document
    return run


def absent_not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter (or a sparse body's field) is absent or has a value: pydantic's `X | None = None`
    means absent here, not null."""
    options = schema.get("anyOf")
    if schema.get("default", ...) is None and isinstance(options, list) and {"type": "null"} in options:
        rest = [option for option in options if option != {"type": "null"}]
        kept = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
        return {**kept, **rest[0]} if len(rest) == 1 else {**kept, "anyOf": rest}
    return schema
