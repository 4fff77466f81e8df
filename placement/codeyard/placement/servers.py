"""Registered hosts: their CRUD, credentials, state, health records and key rotation.

`ServerRegistry` is the base of `registry.Registry`, which adds placement. The two queries
placement and the decision log need too, `server_row` and `host_loads`, are functions of a
session, so they share them without reaching into this class.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import func, select
from sqlalchemy.orm import Session, object_session, sessionmaker

from .addresses import host_addresses
from .connect import SSHTunnelError, scan_host_key
from .crypto import CredentialCipher, fingerprints, known_hosts_fingerprint
from .image_registry import ImageRegistryLogins
from .models import (
    Credential,
    CredentialKind,
    HostImage,
    HostKind,
    Placement,
    PoolContainer,
    Server,
    ServerState,
    utcnow,
)
from .policies import HostLoad
from .shapes import (
    LOADED,
    SERVER_FIELDS,
    AddressesModel,
    Conflict,
    CredentialModel,
    LoadModel,
    NotFound,
    PlacementSettings,
    RegistryError,
    ServerModel,
    iso_timestamp,
)


def server_row(db: Session, server_id: int | str) -> Server:
    """The host with this numeric id (an int or a string of digits) or name."""
    if isinstance(server_id, str) and not server_id.isdigit():
        server = db.scalar(select(Server).where(Server.name == server_id))
    else:
        server = db.get(Server, int(server_id))
    if server is None:
        raise NotFound(f"no server {server_id}")
    return server


def host_loads(db: Session) -> dict[int, tuple[int, int]]:
    """{server id: (workspaces placed or running there, MiB they reserve)}."""
    rows = db.execute(
        select(
            Placement.server_id,
            func.count(),
            func.coalesce(func.sum(Placement.mem_reserved), 0),
        )
        .where(Placement.state.in_(LOADED), Placement.server_id.is_not(None))
        .group_by(Placement.server_id)
    )
    return {sid: (n, int(mem)) for sid, n, mem in rows if sid is not None}


def _pooled(server: Server) -> tuple[int, int]:
    """(warm containers, MiB they reserve) on `server`, from its own session."""
    db = object_session(server)
    if db is None or server.id is None:
        return 0, 0
    row = db.execute(
        select(func.count(), func.coalesce(func.sum(PoolContainer.mem_reserved), 0)).where(
            PoolContainer.server_id == server.id
        )
    ).one()
    return int(row[0]), int(row[1])


#: Registry columns that hold an IP address or NULL (empty means NULL: derive it).
ADDRESS_FIELDS = ("hub_connect_ip", "publish_ip")


def _address_or_none(key: str, value: object) -> str | None:
    value = str(value or "").strip()
    if not value:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise RegistryError(f"{key} must be an IP address (or empty: derived)") from None


def _addresses(server: Server) -> AddressesModel:
    """What is in effect for `server`: the admin's addresses, else the derived ones."""
    a = host_addresses(server.endpoint, server.hub_connect_ip, server.publish_ip)
    return AddressesModel(
        hub_connect_ip=a.hub_connect_ip,
        publish_ip=a.publish_ip,
        hub_connect_ip_set=a.hub_connect_ip_set,
        publish_ip_set=a.publish_ip_set,
    )


def _validate_endpoint(endpoint: str) -> None:
    scheme = urlsplit(endpoint).scheme
    if scheme not in ("tcp", "ssh", "unix"):
        raise RegistryError(f"endpoint {endpoint!r}: use tcp://host:port, ssh://... or unix://")


def with_pinned_host_key(data: Mapping[str, Any], endpoint: str = "") -> dict[str, Any]:
    """`data` (a registration or an update) with its SSH credential's host key pinned.

    What the admin API and pages call before `add_server`/`update_server`: an admin who
    registers an ssh:// host must pin its key (`pin_host_key`). `endpoint` is the host's
    current one, for an update that changes only the credential.
    """
    if not isinstance(data, Mapping):
        return data  # the registry refuses it with its own message
    credential = data.get("credential")
    if not isinstance(credential, Mapping) or credential.get("kind") != CredentialKind.ssh:
        return dict(data)
    secret = {k: v for k, v in credential.items() if k != "kind"}
    target = str(data.get("endpoint") or endpoint)
    return {**data, "credential": {"kind": "ssh", **pin_host_key(target, secret)}}


def pin_host_key(endpoint: str, secret: dict[str, Any]) -> dict[str, Any]:
    """The SSH secret with the host key it will be checked against (`known_hosts`).

    Given `known_hosts`, that is pinned. Otherwise the host is scanned: without
    `host_key_fingerprint` the registration stops with the scanned key's fingerprint for the
    admin to compare with the host's own (`HostKeyUnconfirmed`, 409); with it, the scanned
    key is pinned only if it is still the key the admin confirmed.
    """
    secret = dict(secret)
    confirmed = str(secret.pop("host_key_fingerprint", "") or "").strip()
    if str(secret.get("known_hosts") or "").strip() or not endpoint.startswith("ssh://"):
        return secret
    try:
        line = scan_host_key(endpoint)
    except (SSHTunnelError, ValueError) as e:
        raise RegistryError(f"credential: could not read the host key: {e}") from None
    seen = known_hosts_fingerprint(line)
    if not confirmed:
        raise HostKeyUnconfirmed(seen, line)
    if confirmed != seen:
        raise Conflict(
            f"host key changed: the host now presents {seen}, not the confirmed {confirmed}"
        )
    return {**secret, "known_hosts": line}


class HostKeyUnconfirmed(Conflict):
    """An SSH host registered without a host key: the admin must confirm the scanned one."""

    def __init__(self, fingerprint: str, known_hosts: str) -> None:
        super().__init__(
            f"confirm the host key {fingerprint}: compare it with the host's own"
            " (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub) and register again with"
            " credential.host_key_fingerprint set to it, or give credential.known_hosts"
        )
        self.fingerprint = fingerprint
        self.known_hosts = known_hosts


class ServerRegistry:
    """The registered hosts, over one database (`sessions`)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        cipher: CredentialCipher | None = None,
        settings: PlacementSettings | None = None,
    ) -> None:
        self.sessions = sessions
        self._cipher = cipher
        self.settings = settings or PlacementSettings()

    @property
    def cipher(self) -> CredentialCipher:
        if self._cipher is None:
            self._cipher = CredentialCipher()
        return self._cipher

    @property
    def registry_logins(self) -> ImageRegistryLogins:
        """The image registries' logins, encrypted under the same keys as hosts' keys."""
        return ImageRegistryLogins(self.sessions, self.cipher)

    # ---- servers ---------------------------------------------------------------------

    def _set_credential(self, server: Server, spec: Mapping[str, Any]) -> None:
        kind = str(spec.get("kind", ""))
        if kind not in CredentialKind.__members__:
            raise RegistryError(
                f"credential kind must be one of {list(CredentialKind.__members__)}"
            )
        secret = {
            k: v
            for k, v in spec.items()
            if k not in ("kind", "host_key_fingerprint") and isinstance(v, str)
        }
        try:
            prints = fingerprints(kind, secret)
        except ValueError as e:
            raise RegistryError(f"credential: {e}") from None
        server.credentials.clear()
        server.credentials.append(
            Credential(
                kind=CredentialKind(kind),
                encrypted=self.cipher.encrypt(secret),
                fingerprints=prints,
            )
        )

    def _apply(self, server: Server, data: Mapping[str, Any]) -> None:
        for key, value in data.items():
            if key in ("credential", "state"):
                continue
            if key not in SERVER_FIELDS:
                raise RegistryError(f"unknown field {key!r}")
            if not isinstance(value, SERVER_FIELDS[key]) or (
                key != "storage_shared" and isinstance(value, bool)
            ):
                raise RegistryError(f"field {key!r} has the wrong type")
            if key == "endpoint":
                _validate_endpoint(str(value))
            if key == "kind" and value not in HostKind.__members__:
                raise RegistryError(f"kind must be one of {list(HostKind.__members__)}")
            if key in ADDRESS_FIELDS:
                value = _address_or_none(key, value)
            if key == "pool_size" and value < 0:
                raise RegistryError("pool_size must be 0 (no pool) or positive")
            setattr(server, key, value)
        if server.pool_size and server.kind == HostKind.swarm.value:
            raise RegistryError(
                "a warm pool is not supported on a swarm host (Swarm picks each task's node,"
                " so a warm container cannot be handed a home); leave pool_size at 0"
            )
        if "state" in data:
            try:
                server.state = ServerState(data["state"])
            except ValueError:
                raise RegistryError("state must be active, draining or down") from None
            if server.state != ServerState.down:
                server.drain_requested = server.state == ServerState.draining
        if data.get("credential"):
            self._set_credential(server, data["credential"])
        if server.endpoint.startswith("tcp://") and not any(
            c.kind == CredentialKind.tls for c in server.credentials
        ):
            raise RegistryError("a tcp:// endpoint needs a TLS credential (ca, cert, key)")

    def add_server(self, data: Mapping[str, Any]) -> ServerModel:
        if not data.get("name") or not data.get("endpoint"):
            raise RegistryError("name and endpoint are required")
        with self.sessions.begin() as db:
            if db.scalar(select(Server.id).where(Server.name == data["name"])):
                raise Conflict(f"a server named {data['name']!r} exists")
            server = Server(
                name="",
                endpoint="",
                kind=HostKind.engine.value,
                region="",
                labels={},
                storage_root="",
                storage_shared=False,
                max_workspaces=0,
                pool_size=0,
                cpu_capacity=0.0,
                mem_capacity=0,
                state=ServerState.active,
                consecutive_failures=0,
                drain_requested=False,
            )
            self._apply(server, data)
            db.add(server)
            db.flush()
            return self._view(server, {})

    def update_server(self, server_id: int | str, data: Mapping[str, Any]) -> ServerModel:
        with self.sessions.begin() as db:
            server = server_row(db, server_id)
            self._apply(server, data)
            db.flush()
            return self._view(server, host_loads(db))

    def register_pinned(self, data: Mapping[str, Any]) -> ServerModel:
        """`add_server` with the SSH host key pinned first (`with_pinned_host_key`)."""
        return self.add_server(with_pinned_host_key(data))

    def update_pinned(self, server_id: int | str, data: Mapping[str, Any]) -> ServerModel:
        """`update_server` with a new SSH credential's host key pinned first."""
        wants_credential = isinstance(data, Mapping) and data.get("credential")
        endpoint = self.get_server(server_id)["endpoint"] if wants_credential else ""
        return self.update_server(server_id, with_pinned_host_key(data, endpoint))

    def delete_server(self, server_id: int | str) -> None:
        with self.sessions.begin() as db:
            server = server_row(db, server_id)
            busy = db.scalar(
                select(func.count())
                .select_from(Placement)
                .where(Placement.server_id == server.id, Placement.state.in_(LOADED))
            )
            if busy:
                raise Conflict(f"{server.name} still has {busy} workspaces; drain it first")
            db.delete(server)

    def set_state(self, server_id: int | str, state: ServerState) -> ServerModel:
        """An admin's drain (`draining`), undrain (`active`) or mark `down`.

        Drain and undrain set or clear the drain intent. On a host that is down they change
        only the intent: the host stays down until the monitor reaches it, and then returns
        draining or active as the intent says.
        """
        with self.sessions.begin() as db:
            server = server_row(db, server_id)
            if state != ServerState.down:
                server.drain_requested = state == ServerState.draining
            if server.state != ServerState.down or state == ServerState.down:
                server.state = state
                if state == ServerState.active:
                    server.consecutive_failures = 0
            return self._view(server, host_loads(db))

    def get_server(self, server_id: int | str) -> ServerModel:
        with self.sessions() as db:
            return self._view(server_row(db, server_id), host_loads(db))

    def list_servers(self) -> list[ServerModel]:
        with self.sessions() as db:
            loads = host_loads(db)
            return [self._view(s, loads) for s in db.scalars(select(Server).order_by(Server.name))]

    def connection(self, server_id: int | str) -> tuple[str, str | None, dict[str, Any] | None]:
        """(endpoint, credential kind, decrypted secret): for `connect.HostClient` only."""
        with self.sessions() as db:
            server = server_row(db, server_id)
            if not server.credentials:
                return server.endpoint, None, None
            cred = server.credentials[0]
            return server.endpoint, cred.kind.value, self.cipher.decrypt(cred.encrypted)

    @staticmethod
    def _view(server: Server, loads: Mapping[int, tuple[int, int]]) -> ServerModel:
        running, mem = loads.get(server.id, (0, 0))
        pooled, pooled_mem = _pooled(server)
        cred = server.credentials[0] if server.credentials else None
        # Warm containers take capacity like workspaces (`pool.py`).
        host = HostLoad(
            id=server.id,
            name=server.name,
            max_workspaces=server.max_workspaces,
            mem_capacity=server.mem_capacity,
            running=running + pooled,
            mem_reserved=mem + pooled_mem,
        )
        return ServerModel(
            id=server.id,
            name=server.name,
            endpoint=server.endpoint,
            kind=server.kind,
            region=server.region,
            labels=dict(server.labels or {}),
            storage_root=server.storage_root,
            storage_shared=server.storage_shared,
            hub_connect_ip=server.hub_connect_ip,
            publish_ip=server.publish_ip,
            addresses=_addresses(server),
            max_workspaces=server.max_workspaces,
            pool_size=server.pool_size or 0,
            cpu_capacity=server.cpu_capacity,
            mem_capacity=server.mem_capacity,
            state=server.state.value,
            drain_requested=server.drain_requested,
            consecutive_failures=server.consecutive_failures,
            last_seen=iso_timestamp(server.last_seen),
            last_test=server.last_test,
            credential=CredentialModel(
                kind=cred.kind.value,
                fingerprints=dict(cred.fingerprints),
                created=iso_timestamp(cred.created) or "",
                rotated=iso_timestamp(cred.rotated),
            )
            if cred
            else None,
            load=LoadModel(
                running=running,
                mem_reserved=mem + pooled_mem,
                load=round(host.load, 4),
                pooled=pooled,
            ),
        )

    # ---- health ----------------------------------------------------------------------

    def record_probe(self, server_id: int, result: Mapping[str, Any], details: bool) -> str:
        """Store a probe's outcome; returns the server's state afterwards.

        `failure_threshold` consecutive failures mark an active or draining host down (down
        wins: a dead host must not look usable); one success brings a down host back, as
        draining if an admin drained it (the intent survives), else active.
        """
        with self.sessions.begin() as db:
            server = server_row(db, server_id)
            if result.get("ok"):
                server.consecutive_failures = 0
                server.last_seen = utcnow()
                if server.state == ServerState.down:
                    server.state = (
                        ServerState.draining if server.drain_requested else ServerState.active
                    )
            else:
                server.consecutive_failures += 1
                # A changed host key is no passing outage: down at once, until an admin
                # checks the host and stores its new key.
                if server.state != ServerState.down and (
                    result.get("host_key_changed")
                    or server.consecutive_failures >= self.settings.failure_threshold
                ):
                    server.state = ServerState.down
            if details or not result.get("ok"):
                server.last_test = dict(result)
            return server.state.value

    # ---- images ----------------------------------------------------------------------

    def record_image(
        self,
        server_id: int | str,
        image: str,
        path: str,
        digest: str = "",
        detail: str = "",
        seconds: float = 0.0,
        state: str = "ok",
    ) -> None:
        """Remember that `image` reached the host by `path` ("registry" or "stream"), or,
        with `state` "pulling" or "failed", that a background pull runs or failed (`detail`:
        the error the host page shows)."""
        with self.sessions.begin() as db:
            server = server_row(db, server_id)
            row = db.scalar(
                select(HostImage).where(HostImage.server_id == server.id, HostImage.image == image)
            )
            if row is None:
                row = HostImage(server_id=server.id, image=image)
                db.add(row)
            row.path, row.digest, row.detail = path, digest[:255], detail
            row.seconds, row.at, row.state = float(seconds), utcnow(), state

    def host_images(self) -> dict[str, list[dict[str, Any]]]:
        """{host name: [{image, path, digest, detail, seconds, at, state}, ...]}, newest
        first."""
        with self.sessions() as db:
            rows = db.execute(
                select(Server.name, HostImage)
                .join(HostImage, HostImage.server_id == Server.id)
                .order_by(Server.name, HostImage.at.desc())
            ).all()
            found: dict[str, list[dict[str, Any]]] = {}
            for name, row in rows:
                found.setdefault(name, []).append(
                    {
                        "image": row.image,
                        "path": row.path,
                        "digest": row.digest,
                        "detail": row.detail,
                        "seconds": round(row.seconds, 1),
                        "at": iso_timestamp(row.at),
                        "state": row.state,
                    }
                )
            return found

    # ---- keys ------------------------------------------------------------------------

    def rotate_keys(self) -> int:
        """Re-encrypt every credential (hosts' and image registries') under the first key."""
        with self.sessions.begin() as db:
            creds = list(db.scalars(select(Credential)))
            for cred in creds:
                cred.encrypted = self.cipher.rotate(cred.encrypted)
                cred.rotated = utcnow()
            hosts = len(creds)
        return hosts + self.registry_logins.rotate()
