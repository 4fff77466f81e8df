"""Base handlers: every request is a Hub user or service holding the admin scope.

Authentication is HubOAuth (a token in `Authorization`, or the OAuth cookie of a browser
that went through the Hub's login). Authorisation is one custom scope
(`PlacementService.admin_scope`, default `custom:codeyard-admin`): anyone authenticated
without it gets 403, anonymous API calls get 403 and anonymous page visits go to the login.
"""

from __future__ import annotations

import asyncio
import json
from http import HTTPStatus
from typing import Any

from jupyterhub.services.auth import HubOAuthenticated, UserNotAllowed
from tornado import web

from ...policies import NoHostAvailable
from ...registry import Registry, RegistryError
from ..config import ServiceContext


class BaseHandler(HubOAuthenticated, web.RequestHandler):
    @property
    def ctx(self) -> ServiceContext:
        return self.settings["codeyard_placement"]

    @property
    def registry(self) -> Registry:
        return self.ctx.registry

    @property
    def hub_auth(self):  # type: ignore[no-untyped-def,override]
        return self.settings["hub_auth"]

    @property
    def hub_scopes(self) -> set[str]:  # type: ignore[override]
        return {self.ctx.admin_scope}

    async def prepare(self) -> None:
        # HubAuth.get_user(sync=True) would block the loop on a Hub round trip
        model = await self.hub_auth.get_user(self, sync=False)
        if model:
            try:
                model = self.check_hub_user(model)
            except UserNotAllowed:
                raise web.HTTPError(
                    403, f"{model.get('kind', 'user')} {model['name']} lacks {self.ctx.admin_scope}"
                ) from None
        self._hub_auth_user_cache = model

    def check_xsrf_cookie(self) -> None:
        # runs before prepare(); a token in a header is never sent by a forged cross-site form
        if self.request.headers.get("Authorization"):
            return
        return super().check_xsrf_cookie()

    async def blocking(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a registry call (SQLAlchemy, docker-py) off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.ctx.executor, lambda: fn(*args, **kwargs))


class APIHandler(BaseHandler):
    """JSON in, JSON out; errors as `{"status": ..., "message": ...}`."""

    def get_login_url(self) -> str:
        raise web.HTTPError(403, "no Hub token or OAuth cookie")

    def get_json_body(self) -> dict[str, Any]:
        if not self.request.body:
            return {}
        try:
            body = json.loads(self.request.body)
        except ValueError:
            raise web.HTTPError(400, "body is not JSON") from None
        if not isinstance(body, dict):
            raise web.HTTPError(400, "body must be a JSON object")
        return body

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        message = (
            HTTPStatus(status_code).phrase if status_code in HTTPStatus._value2member_map_ else ""
        )
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, web.HTTPError) and exc.log_message:
            message = exc.log_message % exc.args if exc.args else exc.log_message
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"status": status_code, "message": message}))

    def log_exception(self, typ, value, tb) -> None:  # type: ignore[no-untyped-def]
        if isinstance(value, RegistryError | NoHostAvailable):
            return
        super().log_exception(typ, value, tb)

    async def run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """`blocking()` with registry errors mapped to HTTP statuses."""
        try:
            return await self.blocking(fn, *args, **kwargs)
        except RegistryError as e:
            raise web.HTTPError(e.status, str(e).replace("%", "%%")) from None
        except NoHostAvailable as e:
            raise web.HTTPError(409, str(e).replace("%", "%%")) from None
