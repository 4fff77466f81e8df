"""The handler base of every Codeyard endpoint: JSON errors in one shape, no code or secrets
in logs, query arguments read exactly as sent, and every request counted (`metrics`) once it
is answered. Model calls (`explain`, `rewrite`) also leave a hash-free audit record, so usage
per user can be counted from the audit stream like applies and reverts.

Body parsing, `write_json` and `write_error` come from the shared scaffold
(`codeyard.jsonapi.JSONHandlerMixin`) with the workspace API's envelope, `codeyard_shape`.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin

from codeyard.jsonapi import JSONError, JSONHandlerMixin, codeyard_shape

from . import metrics
from .errors import bad_request

log = logging.getLogger(__name__)

#: `auth_resource` of the endpoints that call the model -> their audit action. Their record
#: holds the path asked about, the HTTP status and the outcome: never the selection, the
#: prompt or the answer.
MODEL_CALL_ACTIONS = {"codeyard:explain": "llm.explain", "codeyard:rewrite": "llm.rewrite"}


class CodeyardHandler(JSONHandlerMixin, ExtensionHandlerMixin, APIHandler):
    """Base for every Codeyard endpoint.

    Subclasses set `auth_resource` and decorate each method with `@web.authenticated`
    and `@authorized`. Managers raise `CodeyardError`; this class writes it as
    `{"error": code, "message": text}` with its status.
    """

    auth_resource = "codeyard"
    error_shape = staticmethod(codeyard_shape)
    #: The API error code of the answer, when it is an error (for `metrics`).
    _codeyard_error_code: str | None = None

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

    def on_finish(self) -> None:
        super().on_finish()
        try:
            metrics.observe(self, self._codeyard_error_code)
        except Exception:  # counting must never break an answer already sent
            log.exception("codeyard metrics failed for %s", self.request.path)
        action = MODEL_CALL_ACTIONS.get(self.auth_resource)
        if action is not None and self.request.method == "POST":
            self._record_model_call(action)

    def _record_model_call(self, action: str) -> None:
        """One audit record per explain or rewrite the server answered (or refused)."""
        audit = self.settings.get("codeyard_audit")
        if audit is None or self.get_status() in (401, 403):
            return
        try:
            body = json.loads(self.request.body or b"null")
        except ValueError:
            body = None
        path = body.get("path") if isinstance(body, dict) else None
        status = self.get_status()
        state = self.settings.get("codeyard_state")
        try:
            if state is not None:
                state.ensure()  # a lost state folder is recorded as such before this record
            audit.append(
                user=self.username,
                action=action,
                paths=[path] if isinstance(path, str) else [],
                status=status,
                outcome="ok" if status < 400 else "error",
                durable=False,
            )
        except (OSError, JSONError) as exc:
            log.error("codeyard could not record %s: %s", action, exc)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, JSONError):
            self._codeyard_error_code = value.code
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
