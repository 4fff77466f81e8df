"""The Hub's side of placement: the registry provider, its admin service, the local engine.

`jupyterhub_config.py` calls `configure_registry(c, settings)` when the spawner's host
provider is the registry (the default). It then:

- points `RegistryHostProvider` at the registry database, the credential keys and its
  runtime folder (each settable in the site config, which wins);
- registers the Hub's own Docker engine (a unix socket) as `local_host_name` with the
  homes folder as its storage root, once: `make up` places workspaces there with no admin
  step, and an admin's later edits to that host survive restarts;
- gives the service the images every host should hold and the registry they come from
  (`c.PlacementService.images`, `image_registry`: it pulls them onto a host when it is
  registered and when the image changes), and stores the registry login of the settings
  (CODEYARD_REGISTRY_USER/PASSWORD) once, encrypted, in the placement database, where an
  admin changes it later (`codeyard.placement.image_registry`);
- adds the placement admin service (`codeyard-placement`: API, pages, health monitor)
  with the admin scope granted to the Hub's admins, started with the Hub config's
  `c.PlacementService` section as its config file, so the site config sets the service's
  settings and the placement policy (which the provider reads from the same section).
"""

from __future__ import annotations

import os
from typing import Any

from hub_settings import CodeyardHub

from codeyard.placement.bootstrap import ensure_host
from codeyard.placement.crypto import KEY_ENV
from codeyard.placement.image_registry import seed_registry_login
from codeyard.placement.service.hubconfig import DB_ENV, SERVICE_NAME, configure_placement_service

PROVIDERS = {
    "registry": "codeyard.placement.provider.RegistryHostProvider",
    "local": "codeyard.placement.hosts.LocalHostProvider",
}


def uses_registry(c: Any) -> bool:
    """Whether the configured host provider is the registry one (class or import string)."""
    provider = c.PlacementSpawner.get("host_provider_class", "")
    name = provider if isinstance(provider, str) else getattr(provider, "__name__", "")
    return name.rsplit(".", 1)[-1] == "RegistryHostProvider"


def local_endpoint() -> str:
    """The local engine's socket: `$DOCKER_HOST` when it is a unix socket, else the standard."""
    docker_host = os.environ.get("DOCKER_HOST", "")
    return docker_host if docker_host.startswith("unix://") else "unix:///var/run/docker.sock"


def configure_registry(c: Any, settings: CodeyardHub) -> None:
    provider = c.RegistryHostProvider
    if "db_url" not in provider:
        provider.db_url = settings.placement_db_url
    if "crypt_key" not in provider:
        provider.crypt_key = settings.placement_crypt_key
    if "default_storage_root" not in provider:
        provider.default_storage_root = settings.state_path("homes")
    if "runtime_dir" not in provider:
        provider.runtime_dir = settings.placement_runtime_dir
    ensure_host(
        provider.db_url,
        {
            "name": settings.local_host_name,
            "endpoint": local_endpoint(),
            "region": "local",
            "publish_ip": "127.0.0.1",
            "storage_root": settings.state_path("homes"),
            "storage_shared": False,
        },
        provider.crypt_key,
    )
    distribution = c.ImageDistribution
    registry = distribution.get("registry", settings.registry)
    seed_registry_login(
        provider.db_url,
        provider.crypt_key,
        registry,
        distribution.get("registry_username", settings.registry_username),
        distribution.get("registry_password", settings.registry_password),
    )
    service = c.PlacementService
    if "images" not in service:
        service.images = list(dict.fromkeys(settings.images.values()))
    if "image_registry" not in service:
        service.image_registry = registry
    if "image_registry_ca_file" not in service:
        service.image_registry_ca_file = distribution.get(
            "registry_ca_file", settings.registry_ca_file
        )
    if any(s.get("name") == SERVICE_NAME for s in c.JupyterHub.get("services", [])):
        return  # the site config set the service up itself
    admins = sorted(c.Authenticator.get("admin_users", set()))
    configure_placement_service(
        c,
        port=settings.placement_port,
        admin_users=admins,
        environment={DB_ENV: provider.db_url, KEY_ENV: provider.crypt_key},
        config_file=settings.placement_service_config,
    )
