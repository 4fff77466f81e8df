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

A claimed warm container (`codeyard.spawner.warm_pool`) keeps the pool's labels, since
labels cannot change on a running container: it is found by `codeyard.pool` with no row in
the pool's table any more, and its workspace by the claim the spawner recorded
(`record_claim`: policy `warm-claim`, the container's name in the reason).
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select

from .connect import HostClient
from .models import Decision
from .pool import recorded
from .registry import NotFound, Registry

log = logging.getLogger(__name__)
USER_LABEL = "codeyard.user"
WORKSPACE_LABEL = "codeyard.workspace"
#: The label of warm containers, which a claimed one keeps.
POOL_LABEL = "codeyard.pool"
#: The decision a claim records, naming the container its workspace now runs in.
CLAIM_POLICY = "warm-claim"


def claim_reason(container: str) -> str:
    """The reason text of a claim's record: how `claimed_by` finds it again."""
    return f"claimed warm container {container}"


def record_claim(
    registry: Registry, user: str, workspace: str, server: str, container: str
) -> None:
    """Record that `user/workspace` runs in the warm container `container` on `server`."""
    registry.record_event(user, workspace, server, CLAIM_POLICY, claim_reason(container))


def claimed_by(registry: Registry, container: str) -> tuple[str, str] | None:
    """(user, workspace) that last claimed the warm container `container`, if any did."""
    with registry.sessions() as db:
        row = db.execute(
            select(Decision.user, Decision.workspace)
            .where(Decision.policy == CLAIM_POLICY, Decision.reason == claim_reason(container))
            .order_by(Decision.id.desc())
            .limit(1)
        ).first()
    return (row[0], row[1]) if row else None


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
        found: list[tuple[dict[str, Any], str, str]] = []
        for c in client.api.containers(all=True, filters={"label": USER_LABEL}):
            labels = c.get("Labels") or {}
            if WORKSPACE_LABEL not in labels:
                continue  # a home helper, not a workspace
            found.append((c, labels[USER_LABEL], labels[WORKSPACE_LABEL]))
        pooled = set(recorded(registry.sessions, server["name"]))
        for c in client.api.containers(all=True, filters={"label": POOL_LABEL}):
            if (c.get("Names") or [""])[0].lstrip("/") in pooled:
                continue  # still waiting in the pool: the pool manager's
            owner = claimed_by(registry, (c.get("Names") or [""])[0].lstrip("/"))
            if owner is not None:
                found.append((c, *owner))
        for c, user, workspace in found:
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
