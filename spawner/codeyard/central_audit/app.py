"""The central audit's tornado application."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jinja2
from jupyterhub.services.auth import HubOAuthCallbackHandler
from tornado import web

from .handlers import (
    ChainsHandler,
    CheckpointsHandler,
    PageHandler,
    PublicKeyHandler,
    RecordsHandler,
    UsageAPIHandler,
    UsagePageHandler,
    VerifyLocalHandler,
)
from .store import AuditStore

TEMPLATES = os.path.join(os.path.dirname(__file__), "templates")


class OAuthCallbackHandler(HubOAuthCallbackHandler):
    """The Hub's callback, with this app's HubOAuth instead of the global singleton."""

    @property
    def hub_auth(self):  # type: ignore[no-untyped-def,override]
        return self.settings["hub_auth"]


def make_app(
    store: AuditStore, hub_auth: Any, prefix: str = "/", **settings: Any
) -> web.Application:
    """The app serving `store` under `prefix` (the Hub's `JUPYTERHUB_SERVICE_PREFIX`)."""
    handlers: list[Any] = [
        (prefix + "oauth_callback", OAuthCallbackHandler),
        (prefix + "api/records", RecordsHandler),
        (prefix + "api/chains", ChainsHandler),
        (prefix + "api/checkpoints", CheckpointsHandler),
        (prefix + "api/public-key", PublicKeyHandler),
        (prefix + "api/verify-local", VerifyLocalHandler),
        (prefix + "api/usage", UsageAPIHandler),
        (prefix + "usage", UsagePageHandler),
        (prefix + "?", PageHandler),
    ]
    return web.Application(
        handlers,
        codeyard_audit=store,
        codeyard_prefix=prefix,
        codeyard_executor=ThreadPoolExecutor(4, thread_name_prefix="codeyard-audit"),
        codeyard_jinja=jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True
        ),
        hub_auth=hub_auth,
        cookie_secret=os.urandom(32),
        xsrf_cookies=True,
        **settings,
    )
