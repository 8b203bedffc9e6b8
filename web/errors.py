"""API errors and the JSON body every error response carries."""
from __future__ import annotations

import errno
import logging

import peewee
from flask import Flask, jsonify, request
from playhouse.pool import MaxConnectionsExceeded
from werkzeug.exceptions import HTTPException

from parley.errors import Conflict, InvalidInput, NotFound, ParleyError, Unavailable

log = logging.getLogger(__name__)

_NAMES = {400: "BadRequestError", 401: "UnauthorizedError", 403: "ForbiddenError", 404: "NotFoundError", 409: "ConflictError", 413: "PayloadTooLargeError", 414: "URITooLongError", 416: "RangeNotSatisfiableError",
          415: "UnsupportedMediaTypeError", 429: "TooManyRequestsError", 502: "BadGatewayError", 503: "ServiceUnavailableError",
          507: "InsufficientStorageError"}


class ApiError(ParleyError):
    """An error the client caused or must know about; `status` becomes the HTTP status."""

    def __init__(self, status: int, message: str, *, body: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.body = body or {}


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def not_found(message: str) -> ApiError:
    return ApiError(404, message)


DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
DB_UNAVAILABLE = "the database is busy or unavailable; try again"
#: Seconds a client should wait before retrying after a 503 caused by the database.
DB_RETRY_AFTER_S = 2

# SQLite reports some programming errors as OperationalError too: those are bugs (500), not outages.
_SQLITE_BUGS = ("no such table", "no such column", "syntax error", "has no column named")


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


def disk_full(exc: OSError, *, what: str = "store the upload") -> ApiError:
    """A 507 for a write that failed because the disk (or the user's quota) is full."""
    return ApiError(507, f"not enough disk space to {what}: {exc.strerror or exc}; "
                         "free space on the server and try again")


def database_fault(exc: Exception) -> ApiError | None:
    """The 503 (or 507) for a database that is locked, unreachable or full; None for a bug."""
    cause = exc.args[0] if exc.args and isinstance(exc.args[0], Exception) else exc
    text = str(cause)
    if getattr(cause, "sqlite_errorname", "") == "SQLITE_FULL" or getattr(cause, "pgcode", None) == "53100":
        return ApiError(507, f"not enough disk space for the database: {text.strip()}; free space and try again")
    if isinstance(exc, peewee.OperationalError) and any(bug in text for bug in _SQLITE_BUGS):
        return None
    reason = text.strip().splitlines()[0] if text.strip() else type(cause).__name__
    return ApiError(503, f"{DB_UNAVAILABLE} ({reason})")


def drain_request_body() -> None:
    """Read and drop what is left of the request body.

    An upload refused half-way (disk full) leaves the client still sending; closing the socket with
    unread bytes resets the connection and the client would never see our answer.
    """
    try:
        while request.stream.read(1 << 20):
            pass
    except Exception:  # noqa: BLE001  (the client went away: nothing to answer anyway)
        pass


def error_body(status: int, message: str) -> dict:
    # `detail` for the transcription API's clients, `error` + `message` for the sessions API's.
    return {"detail": message, "error": _NAMES.get(status, "ApiError" if status < 500 else "InternalServerError"),
            "message": message}


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        if exc.status == 507:
            drain_request_body()
        return jsonify({**error_body(exc.status, exc.message), **exc.body}), exc.status

    @app.errorhandler(ParleyError)
    def _use_case_error(exc: ParleyError):
        # A service's error reaches the client with its own message; the kind sets the status.
        for kind, status in ((InvalidInput, 400), (NotFound, 404), (Conflict, 409), (Unavailable, 503)):
            if isinstance(exc, kind):
                return _api_error(ApiError(status, str(exc)))
        return _unhandled(exc)

    @app.errorhandler(peewee.OperationalError)
    @app.errorhandler(peewee.InterfaceError)
    @app.errorhandler(MaxConnectionsExceeded)
    def _database_fault(exc: Exception):
        fault = database_fault(exc)
        if fault is None:
            return _unhandled(exc)
        log.warning("database fault answered with %s: %s", fault.status, exc)
        response = _api_error(fault)
        if fault.status == 503:
            response[0].headers["Retry-After"] = str(DB_RETRY_AFTER_S)
        return response

    @app.errorhandler(OSError)
    def _os_error(exc: OSError):
        if not is_disk_full(exc):
            return _unhandled(exc)
        log.warning("disk full: %s", exc)
        uploading = request.mimetype == "multipart/form-data"
        return _api_error(disk_full(exc, what="store the upload" if uploading else "complete the request"))

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        if exc.response is not None:  # a response already made for this error (the rate limiter's 429)
            return exc.response
        message = exc.description or exc.name
        if exc.code == 413:
            message = _too_large_message(app)
        response = jsonify(error_body(exc.code or 500, message))
        response.status_code = exc.code or 500
        for name, value in exc.get_headers():
            if name.lower() in ("allow", "content-range", "retry-after"):
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def _unhandled(exc: Exception):
        log.exception("unhandled error")
        return jsonify(error_body(500, f"internal error: {type(exc).__name__}")), 500


def _too_large_message(app) -> str:
    """Which of Werkzeug's limits a 413 hit: the whole body, one form field, or the number of parts."""
    length = request.content_length
    if length is None or length > app.config["MAX_CONTENT_LENGTH"] or request.mimetype != "multipart/form-data":
        return f"the upload is larger than the limit of {app.config['MAX_UPLOAD_MB']} MB"
    # The body fits, so the multipart parser stopped it: a text field over its in-memory limit, or
    # more parts than it accepts (files are streamed to disk and only count towards the body limit).
    return (f"a form field other than a file is larger than the limit of {request.max_form_memory_size} bytes, "
            f"or the form has more than {request.max_form_parts} parts; send long text as a file part")
