"""Placeholder routes for jupyter-ai's deferred server extensions, and loading them into the
running server on first use (see the package docstring for when that is)."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import time
from typing import Any

from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.httputil import HTTPServerRequest
from tornado.routing import PathMatches, Rule

from . import DEFERRED_EXTENSIONS, EXTENSION_NAME, PRESENCE_PROBES

SETTINGS_KEY = EXTENSION_NAME


class OnDemandLoader:
    """Loads the deferred extensions into one ServerApp, once.

    Loading has two halves. Importing the packages is the slow part (seconds of litellm and
    langchain); on the HTTP path it runs in a worker thread, so the server keeps answering.
    Linking and loading them through `serverapp.extension_manager` is fast and runs on the
    event loop, exactly as at server start; their start hooks (the MCP server) then run as
    a task. The persona-manager path needs the extensions before it returns, so it does both
    halves synchronously.
    """

    def __init__(self, serverapp: Any, pending: list[str]) -> None:
        self.serverapp = serverapp
        self.log = serverapp.log
        self.pending = pending
        self.loaded = not pending
        self.failed: list[str] = []
        self.load_seconds: float | None = None
        self._imports: asyncio.Future[None] | None = None
        self._started: asyncio.Future[None] | None = None

    @classmethod
    def install(cls, serverapp: Any) -> OnDemandLoader:
        """Create the loader for `serverapp` and add the placeholder routes of every deferred
        extension that is installed but not enabled (the others need nothing)."""
        enabled = serverapp.jpserver_extensions
        pending = [
            name
            for name in sorted(DEFERRED_EXTENSIONS)
            if not enabled.get(name, False) and importlib.util.find_spec(name) is not None
        ]
        loader = cls(serverapp, pending)
        web_app = serverapp.web_app
        web_app.settings[SETTINGS_KEY] = loader
        if not pending:
            return loader
        base_url = web_app.settings.get("base_url", "/")
        rules: list[Rule] = []
        for pattern, name in PRESENCE_PROBES.items():
            if name in pending:
                rules.append(
                    Rule(
                        UntilLoaded(url_path_join(base_url, pattern), loader),
                        PresenceProbeHandler,
                        {"loader": loader, "extension": name},
                    )
                )
        for name in pending:
            for pattern in DEFERRED_EXTENSIONS[name]:
                rules.append(
                    Rule(
                        UntilLoaded(url_path_join(base_url, pattern), loader),
                        DeferredRouteHandler,
                        {"loader": loader},
                    )
                )
        if rules:
            web_app.add_handlers(".*$", rules)
        serverapp.log.info(
            "%s | %s load on first use (%d placeholder routes)",
            EXTENSION_NAME,
            ", ".join(pending),
            len(rules),
        )
        return loader

    async def load(self) -> None:
        """Load the deferred extensions (once) and wait until their start hooks have run."""
        if not self.loaded:
            if self._imports is None:
                self._imports = asyncio.ensure_future(self._import_in_thread())
            await asyncio.shield(self._imports)
            self.load_now()
        if self._started is not None:
            await asyncio.shield(self._started)

    def load_now(self) -> None:
        """Link and load the deferred extensions now, importing them on this thread if no
        worker has yet; their start hooks are scheduled on the running event loop."""
        if self.loaded:
            return
        started = time.monotonic()
        manager = self.serverapp.extension_manager
        for name in self.pending:
            manager.add_extension(name, enabled=True)
        for name in self.pending:
            manager.link_extension(name)
        for name in self.pending:
            manager.load_extension(name)
        # The manager logs (or, with reraise_server_extension_failures, raises) a failure and
        # goes on; an extension that did not link is not there.
        self.failed = [n for n in self.pending if not manager.linked_extensions.get(n)]
        self.loaded = True
        self.load_seconds = time.monotonic() - started
        self._started = asyncio.ensure_future(self._start_all())
        self.log.info(
            "%s | loaded %s in %.2f s%s",
            EXTENSION_NAME,
            ", ".join(self.pending),
            self.load_seconds,
            f"; failed: {', '.join(self.failed)}" if self.failed else "",
        )

    async def _import_in_thread(self) -> None:
        loop = asyncio.get_running_loop()
        for name in self.pending:
            try:
                await loop.run_in_executor(None, importlib.import_module, name)
            except Exception:
                # Linking imports it again and reports the failure with the others.
                self.log.exception("%s | importing %s failed", EXTENSION_NAME, name)

    async def _start_all(self) -> None:
        manager = self.serverapp.extension_manager
        for name in self.pending:
            if name not in self.failed:
                await manager.start_extension(name)


class UntilLoaded(PathMatches):
    """A path pattern that stops matching once the loader has run, so the real handlers
    (added to the application after this one) serve the path from then on."""

    def __init__(self, pattern: str, loader: OnDemandLoader) -> None:
        super().__init__(pattern)
        self.loader = loader

    def match(self, request: HTTPServerRequest) -> dict[str, Any] | None:
        if self.loader.loaded:
            return None
        return super().match(request)


class DeferredRouteHandler(APIHandler):
    """A route of a deferred extension: load it, then send the client to the same URL, which
    the real handler answers. A 307 keeps the method and the body (fetch and requests follow
    it for same-origin requests)."""

    loader: OnDemandLoader

    def initialize(self, loader: OnDemandLoader) -> None:
        self.loader = loader

    async def _load_and_redirect(self, *args: str) -> None:
        await self.loader.load()
        if self.loader.failed:
            raise web.HTTPError(
                503, f"jupyter-ai failed to load: {', '.join(self.loader.failed)} (server log)"
            )
        self.redirect(self.request.uri or "/", status=307)

    @web.authenticated
    async def get(self, *args: str) -> None:
        await self._load_and_redirect()

    @web.authenticated
    async def post(self, *args: str) -> None:
        await self._load_and_redirect()

    @web.authenticated
    async def put(self, *args: str) -> None:
        await self._load_and_redirect()

    @web.authenticated
    async def patch(self, *args: str) -> None:
        await self._load_and_redirect()

    @web.authenticated
    async def delete(self, *args: str) -> None:
        await self._load_and_redirect()


class PresenceProbeHandler(APIHandler):
    """JupyterLab's page-load check that a server extension is installed: it is, and it
    loads on first use, so say so without loading it."""

    def initialize(self, loader: OnDemandLoader, extension: str) -> None:
        self.loader = loader
        self.extension = extension

    @web.authenticated
    def get(self, *args: str) -> None:
        self.finish(
            json.dumps(
                {"data": f"{self.extension} is installed and loads on first use", "loaded": False}
            )
        )
