"""The service application: its settings (traitlets) and what handlers share.

Run by the Hub as a managed service (`python -m codeyard.placement serve`); the Hub provides
`JUPYTERHUB_SERVICE_PREFIX`, `JUPYTERHUB_SERVICE_URL`, `JUPYTERHUB_API_TOKEN` and the OAuth
client settings. See `hubconfig.configure_placement_service` for the Hub side.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler
from jupyterhub.utils import url_path_join
from tornado import httpclient, web
from traitlets import Bool, Dict, Float, Integer, Unicode, default
from traitlets.config import Application

from ..crypto import CredentialCipher
from ..database import open_db
from ..health import HealthMonitor
from ..registry import PlacementSettings, Registry

ADMIN_SCOPE = "custom:codeyard-admin"
log = logging.getLogger(__name__)


@dataclass
class ServiceContext:
    registry: Registry
    hub_auth: Any
    admin_scope: str = ADMIN_SCOPE
    probe_timeout: float = 5.0
    executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(8, thread_name_prefix="codeyard-placement")
    )
    monitor: HealthMonitor | None = None
    url: str = ""  # the service's own base URL, for links and tests

    async def restart_workspace(self, user: str, name: str) -> str:
        """Stop then start the workspace through the Hub API (needs the `servers` scope)."""
        api = self.hub_auth.api_url
        token = self.hub_auth.api_token
        if not token:
            return "not restarted: the service has no Hub API token"
        path = f"{api}/users/{quote(user, safe='')}/servers/{quote(name, safe='')}"
        client = httpclient.AsyncHTTPClient()
        headers = {"Authorization": f"token {token}"}
        try:
            await client.fetch(path, method="DELETE", headers=headers, raise_error=False)
            for _ in range(60):
                resp = await client.fetch(
                    path, method="POST", body="{}", headers=headers, raise_error=False
                )
                if resp.code in (201, 202):
                    return "restarted"
                if resp.code != 400:  # 400: still stopping
                    return f"not restarted: Hub answered {resp.code}"
                await asyncio.sleep(1)
        except OSError as e:
            return f"not restarted: {e}"
        return "not restarted: the old server did not stop in time"


class OAuthCallbackHandler(HubOAuthCallbackHandler):
    """The Hub's callback, with this app's HubOAuth instead of the global singleton."""

    @property
    def hub_auth(self):  # type: ignore[no-untyped-def,override]
        return self.settings["hub_auth"]


def make_app(ctx: ServiceContext, prefix: str = "/", **settings: Any) -> web.Application:
    from .handlers.api import api_handlers

    handlers: list[Any] = [
        (prefix + "oauth_callback", OAuthCallbackHandler),
        *api_handlers(prefix),
    ]
    from .handlers.pages import jinja_env, page_handlers

    handlers += page_handlers(prefix)
    return web.Application(
        handlers,
        codeyard_placement=ctx,
        codeyard_prefix=prefix,
        codeyard_jinja=jinja_env(os.path.join(os.path.dirname(__file__), "templates")),
        hub_auth=ctx.hub_auth,
        cookie_secret=os.urandom(32),
        xsrf_cookies=True,
        **settings,
    )


class PlacementService(Application):
    """`python -m codeyard.placement serve`: the admin API, pages and health monitor."""

    name = "codeyard-placement"

    db_url = Unicode(
        help="""SQLAlchemy URL of the registry database (its own, or the Hub's database server).

        Defaults to `$CODEYARD_PLACEMENT_DB_URL`, else a SQLite file in the working directory.
        """
    ).tag(config=True)

    @default("db_url")
    def _default_db_url(self) -> str:
        return os.environ.get("CODEYARD_PLACEMENT_DB_URL", "sqlite:///codeyard_placement.sqlite")

    admin_scope = Unicode(
        ADMIN_SCOPE,
        help="""The Hub scope an admin needs for every endpoint and page (others get 403).

        Declare it in `c.JupyterHub.custom_scopes` and grant it through `load_roles`.
        """,
    ).tag(config=True)

    default_policy = Unicode(
        "least-loaded",
        help="""Placement policy used unless a group override applies (entry point group
        `codeyard.placement_policies`: least-loaded, round-robin, region, or added ones).""",
    ).tag(config=True)

    group_policies = Dict(
        help="""Per-group policy overrides, `{group: policy}`; the first of a user's groups in
        alphabetical order that has one wins. Admin overrides in the database win over this.""",
    ).tag(config=True)

    policy_options = Dict(
        help="""Options per policy, e.g. `{"region": {"group_regions": {"berlin": "eu"},
        "fallback": "any"}}`.""",
    ).tag(config=True)

    health_interval = Float(
        30.0, help="""Seconds between health pings of every host (0 disables the monitor)."""
    ).tag(config=True)

    failure_threshold = Integer(
        3, help="""Consecutive failed pings after which an active host is marked down."""
    ).tag(config=True)

    probe_timeout = Float(5.0, help="""Seconds a ping or `test` may take per host.""").tag(
        config=True
    )

    upgrade_db = Bool(
        False, help="""Upgrade the registry schema at start (backs SQLite up first)."""
    ).tag(config=True)

    def settings(self) -> PlacementSettings:
        return PlacementSettings(
            default_policy=self.default_policy,
            group_policies=dict(self.group_policies),
            policy_options=dict(self.policy_options),
            failure_threshold=self.failure_threshold,
        )

    async def run(self) -> None:
        if self.upgrade_db:
            from ..database import upgrade

            upgrade(self.db_url)
        registry = Registry(open_db(self.db_url), CredentialCipher(), self.settings())
        hub_auth = HubOAuth(cache_max_age=60)
        ctx = ServiceContext(
            registry, hub_auth, admin_scope=self.admin_scope, probe_timeout=self.probe_timeout
        )
        prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")
        app = make_app(ctx, prefix)
        url = urlsplit(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101"))
        app.listen(url.port or 80, url.hostname or "127.0.0.1", xheaders=True)
        self.log.info("codeyard-placement on %s%s", url.geturl(), url_path_join(prefix, "api/"))
        if self.health_interval > 0:
            ctx.monitor = HealthMonitor(registry, self.health_interval, self.probe_timeout)
            ctx.monitor.start()
        # Stop at once on SIGINT/SIGTERM, even when started with SIGINT ignored (a Hub run
        # in the background inherits that, and stops its services with SIGINT first).
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        self.log.info("codeyard-placement stopping")
        if ctx.monitor is not None:
            await ctx.monitor.stop()
