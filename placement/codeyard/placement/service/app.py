"""The placement service's tornado application: the admin API, the pages, the OAuth callback."""

from __future__ import annotations

import os
from typing import Any

from jupyterhub.services.auth import HubOAuthCallbackHandler
from tornado import web

from .context import ServiceContext
from .handlers.api import api_handlers
from .handlers.pages import jinja_env, page_handlers
from .handlers.prometheus import MetricsHandler

TEMPLATES = os.path.join(os.path.dirname(__file__), "templates")


class OAuthCallbackHandler(HubOAuthCallbackHandler):
    """The Hub's callback, with this app's HubOAuth instead of the global singleton."""

    @property
    def hub_auth(self):  # type: ignore[no-untyped-def,override]
        return self.settings["hub_auth"]


def make_app(ctx: ServiceContext, prefix: str = "/", **settings: Any) -> web.Application:
    """The app serving `ctx` under `prefix` (the Hub's `JUPYTERHUB_SERVICE_PREFIX`)."""
    handlers: list[Any] = [
        (prefix + "oauth_callback", OAuthCallbackHandler),
        (prefix + "metrics", MetricsHandler),
        *api_handlers(prefix),
        *page_handlers(prefix),
    ]
    return web.Application(
        handlers,
        codeyard_placement=ctx,
        codeyard_prefix=prefix,
        codeyard_jinja=jinja_env(TEMPLATES),
        hub_auth=ctx.hub_auth,
        cookie_secret=os.urandom(32),
        xsrf_cookies=True,
        **settings,
    )
