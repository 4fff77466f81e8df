"""`GET <prefix>metrics`: the service's Prometheus metrics, for placement admins and for
tokens with the Hub's `read:metrics` scope (a Prometheus scrape job's)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from tornado import web

from ..metrics import placements_text
from .base import BaseHandler


class MetricsHandler(BaseHandler):
    @property
    def hub_scopes(self) -> set[str]:  # type: ignore[override]
        return {self.ctx.admin_scope, "read:metrics"}

    def get_login_url(self) -> str:
        raise web.HTTPError(403, "no Hub token with read:metrics or the admin scope")

    @web.authenticated
    async def get(self) -> None:
        placements = await self.blocking(self.registry.list_placements)
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.write(generate_latest(REGISTRY))
        self.finish(placements_text(placements))
