"""The registry's API shapes, errors and settings (used by the handlers, pages and tests)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypedDict

from .models import PlacementState

LOADED = (PlacementState.placed, PlacementState.running)
#: The type(s) each writable field of a server must have.
SERVER_FIELDS: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "endpoint": str,
    "kind": str,
    "region": str,
    "labels": dict,
    "storage_root": str,
    "storage_shared": bool,
    "hub_connect_ip": (str, type(None)),
    "publish_ip": (str, type(None)),
    "max_workspaces": int,
    "pool_size": int,
    "cpu_capacity": (int, float),
    "mem_capacity": int,
}


class RegistryError(Exception):
    status = 400


class NotFound(RegistryError):
    status = 404


class Conflict(RegistryError):
    status = 409


class NeedsConfirmation(Conflict):
    """Re-placing would leave the workspace's data behind on a dead host."""


# ---- API shapes (used by the handlers, the pages and the tests) -------------------------


class CredentialModel(TypedDict):
    kind: str
    fingerprints: dict[str, str]
    created: str
    rotated: str | None


class LoadModel(TypedDict):
    running: int
    mem_reserved: int  # MiB, workspaces' and pooled containers'
    load: float  # counts pooled containers like workspaces
    pooled: int  # warm containers waiting for a claim


class AddressesModel(TypedDict):
    hub_connect_ip: str
    publish_ip: str
    hub_connect_ip_set: bool
    publish_ip_set: bool


class ServerModel(TypedDict):
    id: int
    name: str
    endpoint: str
    kind: str  # "engine" or "swarm" (`models.HostKind`)
    region: str
    labels: dict[str, str]
    storage_root: str
    storage_shared: bool
    hub_connect_ip: str | None  # the admin's, or None: derived (`addresses`)
    publish_ip: str | None
    addresses: AddressesModel  # what is in effect, derived or set
    max_workspaces: int
    pool_size: int  # warm containers per pooled image and profile; 0: no pool
    cpu_capacity: float
    mem_capacity: int
    state: str
    drain_requested: bool
    consecutive_failures: int
    last_seen: str | None
    last_test: dict[str, Any] | None
    credential: CredentialModel | None
    load: LoadModel


class PlacementModel(TypedDict):
    user: str
    workspace: str
    server: str | None
    server_id: int | None
    server_state: str | None
    storage_shared: bool | None
    state: str
    pinned_server: str | None
    restart_requested: bool
    updated: str
    note: str
    reason: str  # the newest decision about this workspace (placement, move or clean-up)
    decided: str | None


@dataclass
class PlacementSettings:
    """Deployment settings (the service's and the provider's config fills these)."""

    default_policy: str = "least-loaded"
    group_policies: dict[str, str] = field(default_factory=dict)
    policy_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    failure_threshold: int = 3


@dataclass(frozen=True)
class PlacementResult:
    user: str
    workspace: str
    server_id: int
    server_name: str
    endpoint: str
    reason: str
    moved_from: str | None = None


def iso_timestamp(value: datetime | None) -> str | None:
    """A naive UTC database timestamp as ISO 8601 with `Z`, the form every API shape uses."""
    return value.isoformat() + "Z" if value is not None else None
