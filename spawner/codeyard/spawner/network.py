"""The workspace network on each Docker host: a bridge where workspaces cannot reach each other.

On Docker's default bridge every container can open connections to every other one, so a
workspace could talk to another user's Jupyter server, kernels or anything they start.
Workspaces go on their own user-defined bridge instead, created with inter-container
communication off (`com.docker.network.bridge.enable_icc=false`): the engine then drops
traffic between two containers of that bridge. Workspaces still reach the host's addresses
(the Hub API and the LLM gateway on the docker0 address), because that traffic is addressed
to the host and is not forwarded between containers. The Hub's proxy reaches each
workspace through its published port, as on the default bridge.

The network is made on first use on each host, so a new host needs no preparation. Docker
does not refuse a second network of the same name when two creates race (`CheckDuplicate`
is best effort), and a name with two networks behind it makes every container create fail
as ambiguous; so creates are serialised per engine within the Hub, a 409 from a concurrent
create elsewhere counts as success, and empty duplicates left by such a race are removed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from docker.errors import APIError, NotFound

DockerCall = Callable[..., Awaitable[Any]]

#: Network modes that are Docker's own and must never be created or changed by us.
BUILTIN_NETWORKS = frozenset({"", "bridge", "default", "host", "none"})

_locks: dict[tuple[Any, ...], asyncio.Lock] = {}


def _lock_for(key: tuple[Any, ...]) -> asyncio.Lock:
    # Per event loop too: a lock may only be waited on from the loop it first waited in.
    key = (id(asyncio.get_running_loop()), *key)
    lock = _locks.get(key)
    if lock is None:
        lock = _locks[key] = asyncio.Lock()
    return lock


def _exact(networks: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    # The engine's name filter matches substrings ("codeyard" finds "codeyard-x" too).
    return sorted((n for n in networks if n.get("Name") == name), key=lambda n: n["Created"])


async def ensure_network(
    docker: DockerCall,
    host_key: tuple[Any, ...],
    name: str,
    options: dict[str, str],
    labels: dict[str, str] | None = None,
) -> str | None:
    """Make sure the bridge network `name` exists on the engine behind `docker`; return its id.

    Does nothing (returns None) for Docker's built-in modes (`bridge`, `host`, `none`, "").
    An existing network is used as it is, even if its options differ: changing a network
    means disconnecting every workspace on it, which is an admin's decision.
    """
    if name in BUILTIN_NETWORKS:
        return None
    async with _lock_for((*host_key, name)):
        found = _exact(await docker("networks", names=[name]), name)
        if not found:
            try:
                await docker(
                    "create_network",
                    name,
                    driver="bridge",
                    options=dict(options),
                    labels=dict(labels or {}),
                    check_duplicate=True,
                )
            except APIError as e:
                # 409: another Hub or an admin created it between our look and now.
                if e.status_code != 409:
                    raise
            found = _exact(await docker("networks", names=[name]), name)
        if not found:
            raise RuntimeError(f"Docker network {name!r} could not be created on this host")
        keep, *extra = found
        for dup in extra:
            await _remove_if_unused(docker, dup["Id"])
        return str(keep["Id"])


async def _remove_if_unused(docker: DockerCall, network_id: str) -> None:
    """Remove a same-named duplicate from a create race, unless something joined it."""
    try:
        info = await docker("inspect_network", network_id)
        if not info.get("Containers"):
            await docker("remove_network", network_id)
    except (NotFound, APIError):
        pass
