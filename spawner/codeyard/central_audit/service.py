"""`python -m codeyard.central_audit serve`: the service's settings and start-up.

Run by the Hub as a managed service (`hubconfig.configure_audit_service`); the Hub provides
`JUPYTERHUB_SERVICE_PREFIX`, `JUPYTERHUB_SERVICE_URL`, `JUPYTERHUB_API_TOKEN` and the OAuth
client settings. Every setting below comes on the command line as `--CentralAudit.<name>=`.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any
from urllib.parse import urlsplit

from jupyterhub.services.auth import HubOAuth
from tornado.ioloop import PeriodicCallback
from traitlets import Float, Unicode
from traitlets.config import Application, catch_config_error

from .app import make_app
from .chain import load_secret, load_signing_key
from .database import open_db
from .store import AuditStore


class CentralAudit(Application):
    """The central audit service: API, pages, periodic checkpoints and pruning."""

    name = "codeyard-audit"
    description = "Codeyard's central audit service (run by JupyterHub)."

    db_url = Unicode(
        "sqlite:///codeyard_audit.sqlite",
        help="""SQLAlchemy URL of the audit tables. They may share the Hub's own database
        (PostgreSQL at scale): they are prefixed `codeyard_audit_` and keep their alembic
        revision in `codeyard_audit_alembic_version`.""",
    ).tag(config=True)

    hmac_key_file = Unicode(
        "codeyard_audit_hmac.key",
        help="""File with the secret the chains are keyed with (made once, mode 0600). Only
        the Hub's machine reads it: workspaces never see it, so they cannot re-link a chain.""",
    ).tag(config=True)

    signing_key_file = Unicode(
        "codeyard_audit_ed25519.pem",
        help="""Ed25519 private key (PEM) that signs checkpoints, made once with mode 0600.
        Its public key is served at `api/public-key`; anyone with it can check an export.""",
    ).tag(config=True)

    retention_days = Float(
        365.0,
        help="""Days a record is kept after the service received it; older records are
        pruned (with their checkpoints) every `prune_interval`. 0 keeps everything.""",
    ).tag(config=True)

    checkpoint_interval = Float(
        300.0,
        help="""Seconds between signed checkpoints of every chain head that moved.
        0 disables the periodic ones (`POST api/checkpoints` and exports still make them).""",
    ).tag(config=True)

    prune_interval = Float(
        3600.0, help="""Seconds between runs of the retention prune (0: never)."""
    ).tag(config=True)

    @catch_config_error
    def initialize(self, argv: Any = None) -> None:
        self.parse_command_line(argv)

    def build_store(self) -> AuditStore:
        return AuditStore(
            open_db(self.db_url),
            load_secret(self.hmac_key_file),
            load_signing_key(self.signing_key_file),
        )

    async def run(self) -> None:
        store = self.build_store()
        hub_auth = HubOAuth(cache_max_age=60)
        prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")
        app = make_app(store, hub_auth, prefix)
        url = urlsplit(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10102"))
        app.listen(url.port or 80, url.hostname or "127.0.0.1", xheaders=True)
        self.log.info("codeyard-audit on %s%sapi/", url.geturl(), prefix)
        loop = asyncio.get_running_loop()
        timers = []
        if self.checkpoint_interval > 0:
            timers.append(
                PeriodicCallback(
                    lambda: loop.run_in_executor(None, store.checkpoint),
                    self.checkpoint_interval * 1000,
                )
            )
        if self.prune_interval > 0 and self.retention_days > 0:
            days = self.retention_days
            await loop.run_in_executor(None, store.prune, days)
            timers.append(
                PeriodicCallback(
                    lambda: loop.run_in_executor(None, store.prune, days),
                    self.prune_interval * 1000,
                )
            )
        for timer in timers:
            timer.start()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        for timer in timers:
            timer.stop()
        self.log.info("codeyard-audit stopping")
