"""Stale containers on a host that came back: remove what was re-placed elsewhere.

While a host is down its workspaces may be placed again on other hosts (failover). When the
host answers again its engine still holds their old containers (dockerd restarts them
stopped, or still running if the engine kept them). Starting one by hand would give the
user two copies of a workspace; with shared storage, two writers on one home. So the
health monitor calls `remove_stale_containers` when a host returns: every workspace
container (labelled `codeyard.user`/`codeyard.workspace` by `PlacementSpawner`) whose
workspace is now placed on another host is removed, its home untouched (a home is a bind
mount, never a container volume), and the removal is recorded as a decision, so the
placements page says what happened.
"""

from __future__ import annotations

import logging
from typing import Any

from .connect import HostClient
from .registry import NotFound, Registry

log = logging.getLogger(__name__)
USER_LABEL = "codeyard.user"
WORKSPACE_LABEL = "codeyard.workspace"


def remove_stale_containers(
    registry: Registry, server_id: int | str, timeout: float = 10.0
) -> list[dict[str, Any]]:
    """Remove the host's containers of workspaces placed elsewhere; returns what was removed.

    Containers of workspaces the registry does not know, or places on this host, are left
    alone: they are not this function's to judge.
    """
    server = registry.get_server(server_id)
    endpoint, kind, secret = registry.connection(server["id"])
    removed: list[dict[str, Any]] = []
    with HostClient(endpoint, kind, secret, timeout=timeout) as client:
        for c in client.api.containers(all=True, filters={"label": USER_LABEL}):
            labels = c.get("Labels") or {}
            if WORKSPACE_LABEL not in labels:
                continue  # a home helper, not a workspace
            user, workspace = labels[USER_LABEL], labels[WORKSPACE_LABEL]
            try:
                placement = registry.get_placement(user, workspace)
            except NotFound:
                continue
            now_on = placement["server"]
            if now_on is None or now_on == server["name"]:
                continue
            name = (c.get("Names") or [c["Id"][:12]])[0].lstrip("/")
            client.api.remove_container(c["Id"], force=True)
            reason = (
                f"removed stale container {name} ({c.get('State', '?')}) from {server['name']}"
                f" after it came back: {user}/{workspace} now runs on {now_on}"
            )
            registry.record_event(user, workspace, server["id"], "cleanup", reason)
            log.warning("%s", reason)
            removed.append({"user": user, "workspace": workspace, "container": name})
    return removed
