"""One exception type that carries an HTTP status and a machine-readable code.

The managers raise it and know nothing of HTTP; the handler base turns it into the
JSON error body `{"error": code, "message": text}` that every endpoint promises.
"""

from __future__ import annotations

from typing import Any


class CodeyardError(Exception):
    """An error with a status code, a short code and a message safe to show a user.

    `message` must never contain file content, diff text or secrets: it reaches logs.
    """

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra

    def to_json(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.extra}


def bad_request(message: str, **extra: Any) -> CodeyardError:
    return CodeyardError(400, "bad_request", message, **extra)


def forbidden_path(message: str, **extra: Any) -> CodeyardError:
    return CodeyardError(403, "path_forbidden", message, **extra)


def not_found(message: str, **extra: Any) -> CodeyardError:
    return CodeyardError(404, "not_found", message, **extra)


def conflict(code: str, message: str, **extra: Any) -> CodeyardError:
    return CodeyardError(409, code, message, **extra)
