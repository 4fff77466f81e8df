"""The workspace API's error type: `jsonapi.JSONError` under the name the managers raise.

The managers raise it and know nothing of HTTP; the handler base (`base.CodeyardHandler`)
answers it as `{"error": code, "message": text, **extra}` with its status, the body every
endpoint promises. The helpers below name the common cases so call sites stay short.
"""

from __future__ import annotations

from typing import Any

from codeyard.jsonapi import JSONError, codeyard_shape


class CodeyardError(JSONError):
    """An error with a status code, a short code and a message safe to show a user.

    `message` must never contain file content, diff text or secrets: it reaches logs.
    """

    def to_json(self) -> dict[str, Any]:
        """The JSON error body this error is answered with."""
        return codeyard_shape(self)


def bad_request(message: str, **extra: Any) -> CodeyardError:
    return CodeyardError(400, "bad_request", message, **extra)


def forbidden_path(message: str, **extra: Any) -> CodeyardError:
    return CodeyardError(403, "path_forbidden", message, **extra)


def not_found(message: str, **extra: Any) -> CodeyardError:
    return CodeyardError(404, "not_found", message, **extra)


def conflict(code: str, message: str, **extra: Any) -> CodeyardError:
    return CodeyardError(409, code, message, **extra)
