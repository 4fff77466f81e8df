"""The handler base of every Codeyard endpoint: JSON errors in one shape, no code or secrets
in logs, and query arguments read exactly as sent.

Body parsing, `write_json` and `write_error` come from the shared scaffold
(`codeyard.jsonapi.JSONHandlerMixin`) with the workspace API's envelope, `codeyard_shape`.
"""

from __future__ import annotations

from typing import Any

from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin

from codeyard.jsonapi import JSONError, JSONHandlerMixin, codeyard_shape

from .errors import bad_request


class CodeyardHandler(JSONHandlerMixin, ExtensionHandlerMixin, APIHandler):
    """Base for every Codeyard endpoint.

    Subclasses set `auth_resource` and decorate each method with `@web.authenticated`
    and `@authorized`. Managers raise `CodeyardError`; this class writes it as
    `{"error": code, "message": text}` with its status.
    """

    auth_resource = "codeyard"
    error_shape = staticmethod(codeyard_shape)

    @property
    def username(self) -> str:
        user = self.current_user
        name = getattr(user, "username", None) or getattr(user, "name", None)
        return str(name or "anonymous")

    def raw_argument(self, name: str, default: str | None = None) -> str | None:
        """A query argument exactly as sent.

        Tornado's `get_argument` turns control characters such as NUL into spaces, which
        would silently change a path; here NUL survives to be refused, and bytes that are
        not UTF-8 give a 400 instead of being guessed at.
        """
        values = self.request.query_arguments.get(name)
        if not values:
            return default
        try:
            return values[-1].decode("utf-8")
        except UnicodeDecodeError:
            raise bad_request(f"{name} is not valid UTF-8") from None

    def int_argument(self, name: str, default: int, *, minimum: int = 0, maximum: int) -> int:
        raw = self.raw_argument(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise bad_request(f"{name} must be an integer") from None
        if not minimum <= value <= maximum:
            raise bad_request(f"{name} must be between {minimum} and {maximum}")
        return value

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        # Expected errors carry only safe text; log the code, never a traceback with locals.
        if isinstance(value, JSONError):
            self.log.info(
                "codeyard %s %s -> %s %s",
                self.request.method,
                self.request.path,
                value.status,
                value.code,
            )
            return
        super().log_exception(typ, value, tb)
