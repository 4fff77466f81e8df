"""The JSON scaffold shared by Codeyard's three tornado apps: the workspace extension, the
placement admin service and the LLM gateway.

Each app answers errors in one envelope, but not the same one: the workspace API promises
`{"error": code, "message": text}`, the placement API `{"status": n, "message": text}`, and
the gateway OpenAI's `{"error": {"message", "type", "code"}}` because clients such as litellm
parse exactly that. So the envelope is a function the handler class names (`error_shape`);
the rest (one error type, body parsing, `write_error`) is written once here.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import orjson
from tornado import web

ErrorShape = Callable[["JSONError"], dict[str, Any]]


class JSONError(Exception):
    """An error with an HTTP status, a short machine-readable code and a message.

    `message` must be safe to show a user and to log: never file content, diff text or a
    secret. `extra` fields are added to the envelope where the shape allows it.
    """

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


def codeyard_shape(err: JSONError) -> dict[str, Any]:
    """`{"error": code, "message": text, **extra}`: the workspace API's envelope."""
    return {"error": err.code, "message": err.message, **err.extra}


def status_shape(err: JSONError) -> dict[str, Any]:
    """`{"status": n, "message": text}`: the placement admin API's envelope."""
    return {"status": err.status, "message": err.message}


def openai_shape(err: JSONError) -> dict[str, Any]:
    """OpenAI's `{"error": {"message", "type", "code"}}`, which OpenAI clients parse."""
    return {"error": {"message": err.message, "type": err.code, "code": err.code}}


def http_error(status: int, exc: BaseException | None, reason: str | None = None) -> JSONError:
    """The `JSONError` for whatever tornado is reporting: ours as it is, an `HTTPError`
    with its message, anything else as a bare internal error (no traceback text)."""
    if isinstance(exc, JSONError):
        return exc
    phrase = reason or (
        HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "error"
    )
    if isinstance(exc, web.HTTPError):
        message = exc.log_message or exc.reason or phrase
        if exc.log_message and exc.args:
            message = exc.log_message % exc.args
        return JSONError(status, phrase.lower().replace(" ", "_"), message)
    if status >= 500:
        return JSONError(status, "internal_error", "internal server error")
    return JSONError(status, phrase.lower().replace(" ", "_"), phrase)


def parse_json_object(raw: bytes | None, *, required: bool = True) -> dict[str, Any]:
    """Parse a request body that must be a JSON object, or raise a 400 saying what is wrong.

    An empty body is `{}` when not `required`. orjson: a 100-file patch body is ~100 KB and
    parses several times faster than with the json module.
    """
    if not raw:
        if required:
            raise JSONError(400, "bad_request", "request body must be a JSON object")
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise JSONError(
            400, "bad_request", f"request body is not valid JSON: {exc.__class__.__name__}"
        ) from None
    if not isinstance(body, dict):
        raise JSONError(400, "bad_request", "request body must be a JSON object")
    return body


class JSONHandlerMixin:
    """`write_json`, `json_body` and `write_error` for a tornado `RequestHandler`.

    Set `error_shape` to the app's envelope. Raise `JSONError` anywhere in a handler: its
    status is used as it is (not tornado's 500) and its text goes out in that envelope.
    """

    error_shape: ErrorShape = staticmethod(codeyard_shape)

    # Provided by tornado.web.RequestHandler.
    request: Any
    _reason: str
    set_status: Any
    set_header: Any
    finish: Any

    def json_body(self, *, required: bool = True) -> dict[str, Any]:
        return parse_json_object(self.request.body, required=required)

    def write_json(self, payload: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        # orjson: a 50,000-entry tree serialises ~10x faster than with the json module.
        self.finish(orjson.dumps(payload))

    def send_json_error(self, err: JSONError) -> None:
        """Answer `err` now (outside tornado's own error path)."""
        self.set_status(err.status)
        self.set_header("Content-Type", "application/json")
        self.finish(orjson.dumps(type(self).error_shape(err)))

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, JSONError):
            status_code = exc.status
        super().send_error(status_code, **kwargs)  # type: ignore[misc]

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        err = http_error(status_code, exc, self._reason)
        self.set_header("Content-Type", "application/json")
        self.finish(orjson.dumps(type(self).error_shape(err)))
