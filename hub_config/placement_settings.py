"""Where workspaces run: the host provider, the placement registry's database, its admin
service's port, the Hub's own engine's name and the keys for host credentials
(docs/hub.md "Docker hosts").

Part of `CodeyardHub` (hub_settings.py); placement_setup.py turns these into config.
"""

from __future__ import annotations

import os
from typing import Any

from core_settings import CoreSettings, env
from hub_secrets import ensure_secret
from traitlets import Integer, Unicode, default, validate

from codeyard.placement.crypto import keys_from_env
from codeyard.placement.database import db_url_from_env


class PlacementSettings(CoreSettings):
    """The host registry's settings; configured as `c.CodeyardHub.*`."""

    host_provider = Unicode(
        help="""Where workspaces run: "registry" (the placement registry of Docker hosts,
        with its admin service; the local engine is registered in it at every start) or
        "local" (only the local engine, no registry or admin service). A site config that
        sets `c.PlacementSpawner.host_provider_class` wins over both.
        Env: CODEYARD_HOST_PROVIDER. Default: registry.""",
    ).tag(config=True)

    @default("host_provider")
    def _default_host_provider(self) -> str:
        return env("CODEYARD_HOST_PROVIDER", "registry")

    @validate("host_provider")
    def _check_host_provider(self, proposal: dict[str, Any]) -> str:
        if proposal["value"] not in ("registry", "local"):
            raise ValueError(f"host_provider must be registry or local, not {proposal['value']!r}")
        return proposal["value"]

    placement_db_url = Unicode(
        help="""SQLAlchemy URL of the placement registry (hosts, credentials, placements).

        Env: CODEYARD_PLACEMENT_DB_URL. Default: SQLite `placement.sqlite` in the state
        folder.""",
    ).tag(config=True)

    @default("placement_db_url")
    def _default_placement_db_url(self) -> str:
        url = db_url_from_env("")
        return url or f"sqlite:///{os.path.join(self.state_dir, 'placement.sqlite')}"

    placement_port = Integer(
        help="""Loopback port of the placement admin service (`codeyard-placement`); the
        Hub's proxy serves it under /services/codeyard-placement/.
        Env: CODEYARD_PLACEMENT_PORT. Default 10101.""",
    ).tag(config=True)

    @default("placement_port")
    def _default_placement_port(self) -> int:
        return int(env("CODEYARD_PLACEMENT_PORT", "10101"))

    local_host_name = Unicode(
        help="""Registry name of the Hub's own Docker engine, registered at every start
        (once; an existing host of that name is left as the admin set it). Workspaces save
        it in their state, so keep it. Default: local.""",
    ).tag(config=True)

    @default("local_host_name")
    def _default_local_host_name(self) -> str:
        return "local"

    @property
    def placement_crypt_key(self) -> str:
        """Keys for host credentials: CODEYARD_PLACEMENT_CRYPT_KEY (`;`-separated, the first
        encrypts), else `<state>/placement_crypt_key`, made once with mode 0600."""
        return keys_from_env() or ensure_secret(self.state_path("placement_crypt_key"))

    @property
    def placement_runtime_dir(self) -> str:
        """Where the Hub writes registered hosts' decrypted TLS files and SSH tunnel sockets:
        `$XDG_RUNTIME_DIR/codeyard-placement` (a per-user tmpfs) when that is set, else
        `<state>/placement-tls`."""
        runtime = os.environ.get("XDG_RUNTIME_DIR")
        if runtime:
            return os.path.join(runtime, "codeyard-placement")
        return self.state_path("placement-tls")

    @property
    def placement_service_config(self) -> str:
        """The config file the Hub writes for its placement service (`c.PlacementService`)."""
        return self.state_path("placement_service.json")
