"""`python -m codeyard.placement serve`: the service's configuration and start-up.

Run by the Hub as a managed service; the Hub provides `JUPYTERHUB_SERVICE_PREFIX`,
`JUPYTERHUB_SERVICE_URL`, `JUPYTERHUB_API_TOKEN` and the OAuth client settings, and passes
its `c.PlacementService` section as `--config <file>` (see
`hubconfig.configure_placement_service`). Settings are `settings.PlacementService`'s; the
command line (`--PlacementService.<name>=...`) wins over the file.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any
from urllib.parse import urlsplit

from jupyterhub.services.auth import HubOAuth
from jupyterhub.utils import url_path_join
from traitlets import Unicode
from traitlets.config import Application, catch_config_error

from ..crypto import CredentialCipher
from ..database import open_db, upgrade
from ..health import HealthMonitor
from ..image_pulls import ImagePuller
from ..registry import Registry
from ..settings import PlacementService
from .app import make_app
from .context import ServiceContext


class PlacementServiceApp(Application):
    """The admin API, pages and health monitor, configured by `PlacementService`."""

    name = "codeyard-placement"
    description = "Codeyard's placement admin service (run by JupyterHub)."
    classes = [PlacementService]
    aliases = {
        "config": "PlacementServiceApp.config_file",
        "f": "PlacementServiceApp.config_file",
    }
    # a config file the Hub wrote must not be half-applied: fail at start instead
    raise_config_file_errors = True

    config_file = Unicode(
        "",
        help="""A config file (`.py` or `.json`) setting `c.PlacementService.*`; the Hub
        writes one from its own config. The command line wins over it.""",
    ).tag(config=True)

    @catch_config_error
    def initialize(self, argv: Any = None) -> None:
        self.parse_command_line(argv)
        if self.config_file:
            path = os.path.abspath(self.config_file)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"config file {path} does not exist")
            self.load_config_file(path)

    async def run(self) -> None:
        settings = PlacementService(parent=self)
        if settings.upgrade_db:
            upgrade(settings.db_url)
        registry = Registry(
            open_db(settings.db_url), CredentialCipher(), settings.placement_settings()
        )
        hub_auth = HubOAuth(cache_max_age=60)
        ctx = ServiceContext(
            registry,
            hub_auth,
            admin_scope=settings.admin_scope,
            hub_admin_scope=settings.hub_admin_scope,
            probe_timeout=settings.probe_timeout,
        )
        prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")
        app = make_app(ctx, prefix)
        url = urlsplit(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101"))
        app.listen(url.port or 80, url.hostname or "127.0.0.1", xheaders=True)
        self.log.info("codeyard-placement on %s%s", url.geturl(), url_path_join(prefix, "api/"))
        if settings.images:
            ctx.image_puller = image_puller(registry, settings)
            ctx.image_puller.start_all()
        if settings.health_interval > 0:
            ctx.monitor = HealthMonitor(registry, settings.health_interval, settings.probe_timeout)
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
        if ctx.image_puller is not None:
            await ctx.image_puller.stop()


def image_puller(registry: Registry, settings: PlacementService) -> ImagePuller:
    """The pulls of `settings.images` from `settings.image_registry` onto hosts."""
    from codeyard.spawner.image_transfer import ImageDistribution

    distribution = ImageDistribution(
        registry=settings.image_registry, registry_ca_file=settings.image_registry_ca_file
    )
    return ImagePuller(registry, distribution, settings.images)
