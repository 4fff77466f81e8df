"""The registry's tables (SQLAlchemy 2.0).

Schema changes go through alembic (`codeyard/placement/alembic/versions/`): never
`create_all` on a database that already holds data. Secrets live only in
`Credential.encrypted`, `WorkspaceGitCredential.encrypted` and
`RegistryCredential.encrypted`, MultiFernet tokens (see
`crypto.py`); every other column is safe to show to an admin.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class ServerState(enum.StrEnum):
    """`active` takes new workspaces; `draining` keeps its running ones but takes none;
    `down` was marked unreachable by the health monitor (or an admin)."""

    active = "active"
    draining = "draining"
    down = "down"


class CredentialKind(enum.StrEnum):
    tls = "tls"  # CA + client cert + client key (PEM)
    ssh = "ssh"  # private key (OpenSSH/PEM)
    token = "token"  # noqa: S105  (a kind name, not a secret)


class PlacementState(enum.StrEnum):
    placed = "placed"  # host chosen, not known to run
    running = "running"
    stopped = "stopped"


class HostKind(enum.StrEnum):
    """What the endpoint is: one Docker engine (workspaces are its containers), or the
    manager of a Docker Swarm (workspaces are Swarm services; Swarm picks the node)."""

    engine = "engine"
    swarm = "swarm"


class Server(Base):
    __tablename__ = "servers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    # tcp://host:2376 (TLS), ssh://user@host[:port], unix:///path/docker.sock
    endpoint: Mapped[str] = mapped_column(String(1024))
    # A plain string column (not an Enum type) so a kind added later needs no migration of
    # the type; `servers._apply` refuses values outside `HostKind`.
    kind: Mapped[str] = mapped_column(String(16), default="engine", server_default="engine")
    region: Mapped[str] = mapped_column(String(255), default="")
    labels: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    storage_root: Mapped[str] = mapped_column(String(1024), default="")
    storage_shared: Mapped[bool] = mapped_column(Boolean, default=False)
    # Where this host's containers reach the Hub API and the gateway, and where its engine
    # publishes workspace ports for the proxy. NULL: derived from the endpoint
    # (`addresses.py`); set only where the route says otherwise (NAT, several networks).
    hub_connect_ip: Mapped[str | None] = mapped_column(String(255), nullable=True)
    publish_ip: Mapped[str | None] = mapped_column(String(255), nullable=True)
    max_workspaces: Mapped[int] = mapped_column(Integer, default=0)  # 0: unlimited
    # Warm containers kept per pooled image and size profile (`pool.py`); 0: no pool.
    pool_size: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    cpu_capacity: Mapped[float] = mapped_column(Float, default=0.0)  # cores; 0: unknown
    mem_capacity: Mapped[int] = mapped_column(Integer, default=0)  # MiB; 0: unknown
    state: Mapped[ServerState] = mapped_column(
        Enum(ServerState, native_enum=False, length=16), default=ServerState.active
    )
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    # An admin drained the host. Kept apart from `state` so it survives the host being
    # down: when it answers again it returns as draining (not active); undrain clears it.
    drain_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    last_seen: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    last_test: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    credentials: Mapped[list[Credential]] = relationship(
        back_populates="server", cascade="all, delete-orphan", order_by="Credential.id"
    )


class Credential(Base):
    __tablename__ = "credentials"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    server_id: Mapped[int] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"))
    kind: Mapped[CredentialKind] = mapped_column(Enum(CredentialKind, native_enum=False, length=16))
    # MultiFernet token of a JSON document; never decrypted outside `crypto`/`connect`.
    encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    # Public fingerprints only (sha256 of certificates / public keys / a token hash prefix).
    fingerprints: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    rotated: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    server: Mapped[Server] = relationship(back_populates="credentials")


class Placement(Base):
    """Where one workspace (a user's named server) runs or will run next."""

    __tablename__ = "placements"
    __table_args__ = (UniqueConstraint("user", "workspace"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user: Mapped[str] = mapped_column(String(255))
    workspace: Mapped[str] = mapped_column(String(255), default="")  # "" = default server
    server_id: Mapped[int | None] = mapped_column(
        ForeignKey("servers.id", ondelete="SET NULL"), nullable=True
    )
    state: Mapped[PlacementState] = mapped_column(
        Enum(PlacementState, native_enum=False, length=16), default=PlacementState.placed
    )
    mem_reserved: Mapped[int] = mapped_column(Integer, default=0)  # MiB
    # An admin's pin; applied at the next start (or at once with restart).
    pinned_server_id: Mapped[int | None] = mapped_column(
        ForeignKey("servers.id", ondelete="SET NULL"), nullable=True
    )
    restart_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # Set when re-placement off a dead, non-shared host was confirmed by an admin.
    data_loss_confirmed: Mapped[bool] = mapped_column(Boolean, default=False)
    updated: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    server: Mapped[Server | None] = relationship(foreign_keys=[server_id])
    pinned_server: Mapped[Server | None] = relationship(foreign_keys=[pinned_server_id])


class PoolContainer(Base):
    """One warm workspace container the Hub keeps on a host (`pool.py`): it counts against
    the host's capacity, with its profile's memory, until a spawn claims or removes it."""

    __tablename__ = "pool_containers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    server_id: Mapped[int] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"))
    container: Mapped[str] = mapped_column(String(255), unique=True)
    pool: Mapped[str] = mapped_column(String(512), default="")  # the profile and image
    mem_reserved: Mapped[int] = mapped_column(Integer, default=0)  # MiB
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class WorkspaceGitCredential(Base):
    """The git credential (user name and token) a user gave for one workspace's clone.

    Written and read only by the Hub (`codeyard.spawner.credentials`), encrypted under keys
    derived from the Hub's `CryptKeeper` keys, not the registry's: the placement service
    never needs it. Never copied into `user_options`, logs or the status API.
    """

    __tablename__ = "git_credentials"
    __table_args__ = (UniqueConstraint("user", "workspace"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user: Mapped[str] = mapped_column(String(255))
    workspace: Mapped[str] = mapped_column(String(255))
    encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class PolicySetting(Base):
    """The active policy: `group == ""` is the default, other rows override per group."""

    __tablename__ = "policy_settings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    group: Mapped[str] = mapped_column(String(255), unique=True, default="")
    policy: Mapped[str] = mapped_column(String(255))
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Decision(Base):
    """Every placement decision with its reason, for the admin's audit of 'why here?'."""

    __tablename__ = "decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    user: Mapped[str] = mapped_column(String(255))
    workspace: Mapped[str] = mapped_column(String(255), default="")
    policy: Mapped[str] = mapped_column(String(255))
    server_id: Mapped[int | None] = mapped_column(
        ForeignKey("servers.id", ondelete="SET NULL"), nullable=True
    )
    server_name: Mapped[str] = mapped_column(String(255), default="")
    reason: Mapped[str] = mapped_column(Text)
    candidates: Mapped[int] = mapped_column(Integer, default=0)
    duration_us: Mapped[int] = mapped_column(Integer, default=0)


class PolicyCursor(Base):
    """Round-robin's memory: the last server it chose, per scope (group or "")."""

    __tablename__ = "policy_cursors"

    scope: Mapped[str] = mapped_column(String(255), primary_key=True)
    last_server: Mapped[str] = mapped_column(String(255), default="")


class HostImage(Base):
    """An image a host holds because Codeyard put it there, and how (`path`): "registry"
    (the host pulled it; `digest` is the registry's) or "stream" (saved on the Hub's engine
    and loaded into the host's; `digest` is the image id), with why in `detail`."""

    __tablename__ = "host_images"
    __table_args__ = (UniqueConstraint("server_id", "image"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    server_id: Mapped[int] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"))
    image: Mapped[str] = mapped_column(String(512))
    digest: Mapped[str] = mapped_column(String(255), default="")
    path: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text, default="")
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # "ok" (the host holds it), "pulling" (a background pull runs) or "failed" (`detail`
    # says why), so the host page shows a pull that did not work instead of nothing.
    state: Mapped[str] = mapped_column(String(16), default="ok", server_default="ok")


class RegistryCredential(Base):
    """The login for one image registry (`host[:port]`): the user name in clear, the
    password only inside `encrypted` (a MultiFernet token, `crypto.py`). `fingerprint`
    names this stored version (a hash of the token made when it was set), so an admin can
    tell that it changed without anything derived from the password being shown."""

    __tablename__ = "registry_credentials"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # `registry` is the column; the attribute may not use that name (Declarative's own).
    address: Mapped[str] = mapped_column("registry", String(512), unique=True)
    username: Mapped[str] = mapped_column(String(255))
    encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    fingerprint: Mapped[str] = mapped_column(String(64))
    updated_by: Mapped[str] = mapped_column(String(255), default="")
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
