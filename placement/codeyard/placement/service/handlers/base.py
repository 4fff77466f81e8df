"""Base handlers: every request is a Hub user or service holding the admin scope.

Authentication is HubOAuth (a token in `Authorization`, or the OAuth cookie of a browser
that went through the Hub's login). Authorisation is one custom scope
(`PlacementService.admin_scope`, default `custom:codeyard-admin`), or the scope of the Hub's
own admin role (`hub_admin_scope`, `admin-ui`): anyone authenticated without either gets 403,
anonymous API calls get 403 and anonymous page visits go to the login.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Any

from jupyterhub.services.auth import HubOAuthenticated, UserNotAllowed
from tornado import web
from tornado.log import gen_log

from codeyard.jsonapi import JSONError, JSONHandlerMixin, status_shape

from ...policies import NoHostAvailable
from ...registry import Registry, RegistryError
from .. import metrics
from ..context import ServiceContext


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
        return {s for s in (self.ctx.admin_scope, self.ctx.hub_admin_scope) if s}

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

    def on_finish(self) -> None:
        super().on_finish()
        metrics.observe(self)

    def check_xsrf_cookie(self) -> None:
        # runs before prepare(); a token in a header is never sent by a forged cross-site form
        if self.request.headers.get("Authorization"):
            return
        return super().check_xsrf_cookie()

    async def blocking(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a registry call (SQLAlchemy, docker-py) off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.ctx.executor, lambda: fn(*args, **kwargs))


def _code(status: int) -> str:
    return HTTPStatus(status).phrase.lower().replace(" ", "_")


class APIHandler(JSONHandlerMixin, BaseHandler):
    """JSON in, JSON out; errors as `{"status": n, "message": text}` (`status_shape`)."""

    error_shape = staticmethod(status_shape)

    def get_login_url(self) -> str:
        raise web.HTTPError(403, "no Hub token or OAuth cookie")

    def log_exception(self, typ, value, tb) -> None:  # type: ignore[no-untyped-def]
        # a JSONError is an answer to a bad request, not a fault: one line, as tornado
        # logs an HTTPError, and no traceback
        if isinstance(value, JSONError):
            gen_log.warning("%d %s: %s", value.status, self._request_summary(), value.message)
            return
        if isinstance(value, RegistryError | NoHostAvailable):
            return
        super().log_exception(typ, value, tb)

    async def run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """`blocking()` with registry errors answered with their HTTP status."""
        try:
            return await self.blocking(fn, *args, **kwargs)
        except RegistryError as e:
            raise JSONError(e.status, _code(e.status), str(e)) from None
        except NoHostAvailable as e:
            raise JSONError(409, _code(409), str(e)) from None
