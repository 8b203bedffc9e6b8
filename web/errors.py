"""API errors and the JSON body every error response carries."""
from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

_NAMES = {400: "BadRequestError", 401: "UnauthorizedError", 403: "ForbiddenError", 404: "NotFoundError", 409: "ConflictError", 413: "PayloadTooLargeError", 416: "RangeNotSatisfiableError",
          415: "UnsupportedMediaTypeError", 429: "TooManyRequestsError", 503: "ServiceUnavailableError",
          507: "InsufficientStorageError"}


class ApiError(Exception):
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


def error_body(status: int, message: str) -> dict:
    # `detail` for the transcription API's clients, `error` + `message` for the sessions API's.
    return {"detail": message, "error": _NAMES.get(status, "ApiError" if status < 500 else "InternalServerError"),
            "message": message}


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return jsonify({**error_body(exc.status, exc.message), **exc.body}), exc.status

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        if exc.response is not None:  # a response already made for this error (the rate limiter's 429)
            return exc.response
        message = exc.description or exc.name
        if exc.code == 413:
            message = f"the upload is larger than the limit of {app.config['MAX_UPLOAD_MB']} MB"
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
