"""What a workspace is told about the Hub, per host: the Hub API, the gateway, mounted files.

A container dials the Hub API (JUPYTERHUB_API_URL, the activity URL) and the Hub's services
(the LLM gateway's CODEYARD_LLM_URL, the central audit's CODEYARD_AUDIT_URL) from inside its
own host's network. The address that works depends on the
host: on the Hub's machine the docker bridge 172.17.0.1 leads to the Hub, on any other
machine it leads to that machine's own bridge. So the URLs are built per host from its
`hub_connect_ip` (`codeyard.placement.addresses`), never from one Hub-wide value.

Files the Hub bind-mounts from its own disk (`PlacementSpawner.extra_volumes`, e.g. the
tokenizer) exist only on hosts that share that disk; elsewhere the mount is left out, and so
is every variable that would point into it.

Behind the host's egress proxy (`egress.py`) the Hub API and the services are reached at
the proxy's reverse ports instead, and the proxy variables point at its forward port.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from jupyterhub.utils import fmt_ip_url

from codeyard.placement.addresses import effective_hub_connect_ip
from codeyard.placement.hosts import DockerHost

from .egress import EgressPlan


def hub_address(hub_ip: str, host: DockerHost) -> str:
    """The address `host`'s containers dial for the Hub (raises `HubUnreachable`)."""
    return effective_hub_connect_ip(hub_ip, host.name, host.addresses, host.on_hub_machine)


def hub_connect_url(address: str, hub_port: int) -> str:
    """`Spawner.hub_connect_url`: JupyterHub builds JUPYTERHUB_API_URL and the activity URL
    from it."""
    return f"http://{fmt_ip_url(address)}:{hub_port}"


def service_url(template: str, address: str) -> str:
    """A Hub service's URL (`template` with `{hub}`) from a host whose containers reach the
    Hub at `address`."""
    return template.replace("{hub}", fmt_ip_url(address))


def unmounted_paths(extra_volumes: Mapping[str, Any]) -> list[str]:
    """Container paths of the Hub's extra mounts, for a host that does not get them."""
    paths = []
    for spec in extra_volumes.values():
        bind = spec.get("bind") if isinstance(spec, Mapping) else spec
        if bind:
            paths.append(os.path.normpath(str(bind)))
    return paths


def points_into(value: str, paths: list[str]) -> bool:
    """Whether `value` names one of `paths` or something inside one."""
    if not value.startswith("/"):
        return False
    value = os.path.normpath(value)
    return any(value == p or value.startswith(p.rstrip("/") + "/") for p in paths)


def host_environment(
    env: dict[str, str],
    host: DockerHost,
    address: str,
    service_urls: Mapping[str, str],
    configured: Mapping[str, Any],
    extra_volumes: Mapping[str, Any],
    egress: EgressPlan | None = None,
) -> dict[str, str]:
    """`env` (the spawner's environment) for a container on `host`, which reaches the Hub at
    `address`: each Hub service's URL for that host (`service_urls`) unless the config
    (`configured`, the spawner's `environment`) names one, and no variables pointing into
    mounts the host does not get.

    With the host's egress proxy (`egress`, `egress.py`) the container's only way out is
    that proxy: the services' URLs are its reverse ports, and HTTP_PROXY, HTTPS_PROXY and
    NO_PROXY send everything else through its allow-list."""
    env = dict(env)
    for name, template in service_urls.items():
        if name not in configured:
            env[name] = service_url(template, address)
    if egress is not None:
        for name in egress.services:
            env[name] = egress.service_url(name)
        env.update({k: v for k, v in egress.environment().items() if k not in configured})
    if not host.storage_is_local:
        missing = unmounted_paths(extra_volumes)
        for key in [k for k, v in env.items() if isinstance(v, str) and points_into(v, missing)]:
            del env[key]
    return env
