"""The registry's operations: the layer between the HTTP handlers (or the spawner) and the DB.

Handlers stay thin and call this; tests call it without HTTP. Methods are synchronous
(SQLAlchemy sessions, docker-py); async callers run them in an executor.

Placement rules, in the order `place()` applies them:
1. an admin's pin wins (refused only when the pinned host is down);
2. a workspace stays on its host while the host is active;
3. off a draining host it moves only when storage is shared (its data stays reachable);
4. off a down host it moves when storage is shared; otherwise only after an admin confirms,
   because its data stays on the dead host;
5. everything else is the policy's choice (per-group override, else the default policy).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict
from urllib.parse import urlsplit

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from .crypto import CredentialCipher, fingerprints
from .models import (
    Credential,
    CredentialKind,
    Decision,
    Placement,
    PlacementState,
    PolicyCursor,
    PolicySetting,
    Server,
    ServerState,
    utcnow,
)
from .policies import (
    HostLoad,
    NoHostAvailable,
    PlacementPolicy,
    PlacementRequest,
    PolicyState,
    load_policy,
)

LOADED = (PlacementState.placed, PlacementState.running)
SERVER_FIELDS = {
    "name": str,
    "endpoint": str,
    "region": str,
    "labels": dict,
    "storage_root": str,
    "storage_shared": bool,
    "max_workspaces": int,
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
    mem_reserved: int
    load: float


class ServerModel(TypedDict):
    id: int
    name: str
    endpoint: str
    region: str
    labels: dict[str, str]
    storage_root: str
    storage_shared: bool
    max_workspaces: int
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


def _iso(value: Any) -> str | None:
    return value.isoformat() + "Z" if value is not None else None


def _validate_endpoint(endpoint: str) -> None:
    scheme = urlsplit(endpoint).scheme
    if scheme not in ("tcp", "ssh", "unix"):
        raise RegistryError(f"endpoint {endpoint!r}: use tcp://host:port, ssh://... or unix://")


class Registry:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        cipher: CredentialCipher | None = None,
        settings: PlacementSettings | None = None,
    ) -> None:
        self.sessions = sessions
        self._cipher = cipher
        self.settings = settings or PlacementSettings()
        self._policies: dict[tuple[str, str], PlacementPolicy] = {}
        self._place_lock = threading.Lock()

    @property
    def cipher(self) -> CredentialCipher:
        if self._cipher is None:
            self._cipher = CredentialCipher()
        return self._cipher

    # ---- servers ---------------------------------------------------------------------

    def _server(self, db: Session, server_id: int | str) -> Server:
        if isinstance(server_id, str) and not server_id.isdigit():
            server = db.scalar(select(Server).where(Server.name == server_id))
        else:
            server = db.get(Server, int(server_id))
        if server is None:
            raise NotFound(f"no server {server_id}")
        return server

    def _loads(self, db: Session) -> dict[int, tuple[int, int]]:
        rows = db.execute(
            select(
                Placement.server_id,
                func.count(),
                func.coalesce(func.sum(Placement.mem_reserved), 0),
            )
            .where(Placement.state.in_(LOADED), Placement.server_id.is_not(None))
            .group_by(Placement.server_id)
        )
        return {sid: (n, int(mem)) for sid, n, mem in rows}

    def _set_credential(self, server: Server, spec: Mapping[str, Any]) -> None:
        kind = str(spec.get("kind", ""))
        if kind not in CredentialKind.__members__:
            raise RegistryError(
                f"credential kind must be one of {list(CredentialKind.__members__)}"
            )
        secret = {k: v for k, v in spec.items() if k != "kind" and isinstance(v, str)}
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
                _validate_endpoint(value)
            setattr(server, key, value)
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
                region="",
                labels={},
                storage_root="",
                storage_shared=False,
                max_workspaces=0,
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
            server = self._server(db, server_id)
            self._apply(server, data)
            db.flush()
            return self._view(server, self._loads(db))

    def delete_server(self, server_id: int | str) -> None:
        with self.sessions.begin() as db:
            server = self._server(db, server_id)
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
            server = self._server(db, server_id)
            if state != ServerState.down:
                server.drain_requested = state == ServerState.draining
            if server.state != ServerState.down or state == ServerState.down:
                server.state = state
                if state == ServerState.active:
                    server.consecutive_failures = 0
            return self._view(server, self._loads(db))

    def get_server(self, server_id: int | str) -> ServerModel:
        with self.sessions() as db:
            return self._view(self._server(db, server_id), self._loads(db))

    def list_servers(self) -> list[ServerModel]:
        with self.sessions() as db:
            loads = self._loads(db)
            return [self._view(s, loads) for s in db.scalars(select(Server).order_by(Server.name))]

    def connection(self, server_id: int | str) -> tuple[str, str | None, dict[str, Any] | None]:
        """(endpoint, credential kind, decrypted secret): for `connect.HostClient` only."""
        with self.sessions() as db:
            server = self._server(db, server_id)
            if not server.credentials:
                return server.endpoint, None, None
            cred = server.credentials[0]
            return server.endpoint, cred.kind.value, self.cipher.decrypt(cred.encrypted)

    @staticmethod
    def _view(server: Server, loads: Mapping[int, tuple[int, int]]) -> ServerModel:
        running, mem = loads.get(server.id, (0, 0))
        cred = server.credentials[0] if server.credentials else None
        host = HostLoad(
            id=server.id,
            name=server.name,
            max_workspaces=server.max_workspaces,
            mem_capacity=server.mem_capacity,
            running=running,
            mem_reserved=mem,
        )
        return ServerModel(
            id=server.id,
            name=server.name,
            endpoint=server.endpoint,
            region=server.region,
            labels=dict(server.labels or {}),
            storage_root=server.storage_root,
            storage_shared=server.storage_shared,
            max_workspaces=server.max_workspaces,
            cpu_capacity=server.cpu_capacity,
            mem_capacity=server.mem_capacity,
            state=server.state.value,
            drain_requested=server.drain_requested,
            consecutive_failures=server.consecutive_failures,
            last_seen=_iso(server.last_seen),
            last_test=server.last_test,
            credential=CredentialModel(
                kind=cred.kind.value,
                fingerprints=dict(cred.fingerprints),
                created=_iso(cred.created) or "",
                rotated=_iso(cred.rotated),
            )
            if cred
            else None,
            load=LoadModel(running=running, mem_reserved=mem, load=round(host.load, 4)),
        )

    # ---- health ----------------------------------------------------------------------

    def record_probe(self, server_id: int, result: Mapping[str, Any], details: bool) -> str:
        """Store a probe's outcome; returns the server's state afterwards.

        `failure_threshold` consecutive failures mark an active or draining host down (down
        wins: a dead host must not look usable); one success brings a down host back, as
        draining if an admin drained it (the intent survives), else active.
        """
        with self.sessions.begin() as db:
            server = self._server(db, server_id)
            if result.get("ok"):
                server.consecutive_failures = 0
                server.last_seen = utcnow()
                if server.state == ServerState.down:
                    server.state = (
                        ServerState.draining if server.drain_requested else ServerState.active
                    )
            else:
                server.consecutive_failures += 1
                if (
                    server.state != ServerState.down
                    and server.consecutive_failures >= self.settings.failure_threshold
                ):
                    server.state = ServerState.down
            if details or not result.get("ok"):
                server.last_test = dict(result)
            return server.state.value

    # ---- keys ------------------------------------------------------------------------

    def rotate_keys(self) -> int:
        """Re-encrypt every credential under the first configured key."""
        with self.sessions.begin() as db:
            creds = list(db.scalars(select(Credential)))
            for cred in creds:
                cred.encrypted = self.cipher.rotate(cred.encrypted)
                cred.rotated = utcnow()
            return len(creds)

    # ---- placement -------------------------------------------------------------------

    def set_policy(
        self, policy: str, group: str = "", options: Mapping[str, Any] | None = None
    ) -> None:
        try:
            load_policy(policy, **dict(options or {}))  # refuse bad settings now, not at a spawn
        except KeyError as e:
            raise RegistryError(str(e.args[0])) from None
        except TypeError as e:
            raise RegistryError(f"options for {policy}: {e}") from None
        with self.sessions.begin() as db:
            row = db.scalar(select(PolicySetting).where(PolicySetting.group == group))
            if row is None:
                row = PolicySetting(group=group, policy=policy, options=dict(options or {}))
                db.add(row)
            row.policy, row.options = policy, dict(options or {})
        self._policies.clear()

    def policies(self) -> dict[str, Any]:
        """The active settings: DB rows (admin overrides) over the deployment's config."""
        from .policies import available_policies

        with self.sessions() as db:
            rows = {
                r.group: {"policy": r.policy, "options": r.options}
                for r in db.scalars(select(PolicySetting))
            }
        default = rows.pop("", None) or {
            "policy": self.settings.default_policy,
            "options": self.settings.policy_options.get(self.settings.default_policy, {}),
        }
        groups = {
            g: {"policy": p, "options": {}, "source": "config"}
            for g, p in self.settings.group_policies.items()
        }
        groups.update({g: {**v, "source": "admin"} for g, v in rows.items()})
        return {"available": sorted(available_policies()), "default": default, "groups": groups}

    def clear_policy(self, group: str) -> None:
        with self.sessions.begin() as db:
            row = db.scalar(select(PolicySetting).where(PolicySetting.group == group))
            if row is None:
                raise NotFound(f"no admin policy override for group {group!r}")
            db.delete(row)
        self._policies.clear()

    def _policy_for(self, db: Session, groups: Iterable[str]) -> tuple[str, PlacementPolicy]:
        """(scope, policy): the first of the user's groups (alphabetically) with an override,
        else the default. Admin rows in the DB win over deployment settings."""
        rows = {r.group: r for r in db.scalars(select(PolicySetting))}
        scope, name, options = "", self.settings.default_policy, {}
        for group in sorted(groups):
            if group in rows or group in self.settings.group_policies:
                scope = group
                break
        if scope in rows:
            name, options = rows[scope].policy, rows[scope].options
        elif scope:
            name = self.settings.group_policies[scope]
        key = (scope, name)
        if key not in self._policies:
            merged = {**self.settings.policy_options.get(name, {}), **(options or {})}
            self._policies[key] = load_policy(name, **merged)
        return scope, self._policies[key]

    def snapshot(self, db: Session, exclude: Placement | None = None) -> list[HostLoad]:
        loads = self._loads(db)
        if exclude is not None and exclude.server_id in loads and exclude.state in LOADED:
            n, mem = loads[exclude.server_id]
            loads[exclude.server_id] = (n - 1, mem - exclude.mem_reserved)
        # plain rows, not ORM objects: this runs on every spawn over every host
        rows = db.execute(
            select(
                Server.id,
                Server.name,
                Server.state,
                Server.region,
                Server.labels,
                Server.max_workspaces,
                Server.mem_capacity,
            )
        )
        return [
            HostLoad(
                id=sid,
                name=name,
                state=state.value,
                region=region,
                labels=labels or {},
                max_workspaces=max_ws,
                mem_capacity=mem_cap,
                running=loads.get(sid, (0, 0))[0],
                mem_reserved=loads.get(sid, (0, 0))[1],
            )
            for sid, name, state, region, labels, max_ws, mem_cap in rows
        ]

    def place(
        self,
        user: str,
        workspace: str = "",
        groups: Iterable[str] = (),
        mem_request: int = 0,
        confirm_data_loss: bool = False,
    ) -> PlacementResult:
        """Decide where `user/workspace` starts now, record the decision, and return it.

        Raises NoHostAvailable (naming why) or NeedsConfirmation.
        """
        groups = tuple(groups)
        try:
            with self._place_lock:  # one decision at a time: each sees the previous one's load
                return self._place(user, workspace, groups, mem_request, confirm_data_loss)
        except (NoHostAvailable, NeedsConfirmation) as e:
            # the failed decision is recorded too, in its own transaction
            with self.sessions.begin() as db:
                policy, n, took = getattr(e, "decision", ("", 0, 0.0))
                self._record(db, user, workspace, policy, None, str(e), n, took)
            raise

    def _place(
        self,
        user: str,
        workspace: str,
        groups: tuple[str, ...],
        mem_request: int,
        confirm_data_loss: bool,
    ) -> PlacementResult:
        with self.sessions.begin() as db:
            p = self._placement(db, user, workspace, create=True)
            old = p.server
            target: Server | None = None
            reason, policy_name, n, took = "", "", 0, 0.0

            if p.pinned_server is not None:
                target = p.pinned_server
                if target.state == ServerState.down:
                    raise NoHostAvailable(
                        f"cannot place {user}/{workspace}: its pinned host {target.name} is down"
                    )
                reason, policy_name = f"pinned to {target.name} by an admin", "pin"
            elif old is not None and old.state == ServerState.active:
                target, reason, policy_name = old, f"stays on {old.name}", "sticky"
            elif old is not None and not old.storage_shared and old.state == ServerState.draining:
                target, policy_name = old, "sticky"
                reason = f"stays on draining {old.name}: its storage is not shared"
            elif (
                old is not None
                and old.state == ServerState.down
                and not old.storage_shared
                and not (confirm_data_loss or p.data_loss_confirmed)
            ):
                raise NeedsConfirmation(
                    f"{user}/{workspace} was on {old.name}, which is down, and its storage is "
                    f"not shared: the workspace's data stays on {old.name}. An admin must "
                    "confirm re-placement."
                )

            if target is None:
                scope, policy = self._policy_for(db, groups)
                policy_name = policy.name
                hosts = self.snapshot(db, exclude=p)
                n = len(hosts)
                cursor = db.get(PolicyCursor, scope) or PolicyCursor(scope=scope, last_server="")
                state = PolicyState(cursor=cursor.last_server)
                request = PlacementRequest(user, workspace, groups, mem_request)
                t0 = time.perf_counter()
                try:
                    choice = policy.choose(hosts, request, state)
                except NoHostAvailable as e:
                    e.decision = (policy_name, n, time.perf_counter() - t0)  # type: ignore[attr-defined]
                    raise
                took = time.perf_counter() - t0
                if state.cursor != cursor.last_server:
                    cursor.last_server = state.cursor
                    db.merge(cursor)
                target = db.get(Server, choice.host.id)
                assert target is not None
                reason = choice.reason
                if old is not None and old.id != target.id:
                    why = "down" if old.state == ServerState.down else old.state.value
                    reason += f"; moved from {old.name} ({why})"

            moved = old.name if old is not None and old.id != target.id else None
            p.server_id = target.id
            p.pinned_server_id = None
            p.restart_requested = False
            p.data_loss_confirmed = False
            p.mem_reserved = mem_request
            p.state = PlacementState.placed
            self._record(db, user, workspace, policy_name, target, reason, n, took)
            return PlacementResult(
                user, workspace, target.id, target.name, target.endpoint, reason, moved
            )

    @staticmethod
    def _record(
        db: Session,
        user: str,
        workspace: str,
        policy: str,
        server: Server | None,
        reason: str,
        candidates: int,
        took: float,
    ) -> None:
        db.add(
            Decision(
                user=user,
                workspace=workspace,
                policy=policy,
                server_id=server.id if server else None,
                server_name=server.name if server else "",
                reason=reason,
                candidates=candidates,
                duration_us=int(took * 1e6),
            )
        )

    def _placement(
        self, db: Session, user: str, workspace: str, *, create: bool = False
    ) -> Placement:
        """The workspace's placement; with `create`, a new stopped one where none exists."""
        p = db.scalar(
            select(Placement).where(Placement.user == user, Placement.workspace == workspace)
        )
        if p is None:
            if not create:
                raise NotFound(f"no placement for {user}/{workspace}")
            p = Placement(
                user=user,
                workspace=workspace,
                state=PlacementState.stopped,
                mem_reserved=0,
                restart_requested=False,
                data_loss_confirmed=False,
            )
            db.add(p)
        return p

    def mark(self, user: str, workspace: str, state: PlacementState) -> None:
        with self.sessions.begin() as db:
            self._placement(db, user, workspace).state = state

    def pin(
        self,
        user: str,
        workspace: str,
        server_id: int | str,
        restart: bool = False,
        confirm_data_loss: bool = False,
    ) -> PlacementModel:
        """Pin a workspace to a host: applied at its next start (now, if `restart`)."""
        with self.sessions.begin() as db:
            server = self._server(db, server_id)
            if server.state == ServerState.down:
                raise Conflict(f"{server.name} is down")
            p = self._placement(db, user, workspace, create=True)
            old = p.server
            if (
                old is not None
                and old.id != server.id
                and not old.storage_shared
                and not confirm_data_loss
            ):
                raise NeedsConfirmation(
                    f"{user}/{workspace} lives on {old.name}, whose storage is not shared: "
                    f"its data stays on {old.name}. Confirm to move it anyway."
                )
            p.pinned_server_id = server.id
            p.restart_requested = restart
            p.data_loss_confirmed = confirm_data_loss
            db.flush()
            db.refresh(p)
            last = self._last_decisions(db, user, workspace).get((user, workspace))
            return self._placement_view(p, last)

    def confirm_replacement(self, user: str, workspace: str) -> None:
        with self.sessions.begin() as db:
            self._placement(db, user, workspace).data_loss_confirmed = True

    def forget(self, user: str, workspace: str) -> None:
        with self.sessions.begin() as db:
            db.delete(self._placement(db, user, workspace))

    def get_placement(self, user: str, workspace: str = "") -> PlacementModel:
        with self.sessions() as db:
            last = self._last_decisions(db, user, workspace).get((user, workspace))
            return self._placement_view(self._placement(db, user, workspace), last)

    def list_placements(
        self, user: str | None = None, server: str | None = None, state: str | None = None
    ) -> list[PlacementModel]:
        with self.sessions() as db:
            q = select(Placement).order_by(Placement.user, Placement.workspace)
            if user:
                q = q.where(Placement.user == user)
            if state:
                q = q.where(Placement.state == PlacementState(state))
            if server:
                q = q.join(Placement.server).where(Server.name == server)
            last = self._last_decisions(db, user)
            return [self._placement_view(p, last.get((p.user, p.workspace))) for p in db.scalars(q)]

    def decisions(self, limit: int = 100) -> list[dict[str, Any]]:
        with self.sessions() as db:
            rows = db.scalars(select(Decision).order_by(Decision.id.desc()).limit(limit))
            return [
                {
                    "at": _iso(d.at),
                    "user": d.user,
                    "workspace": d.workspace,
                    "policy": d.policy,
                    "server": d.server_name or None,
                    "reason": d.reason,
                    "candidates": d.candidates,
                    "duration_us": d.duration_us,
                }
                for d in rows
            ]

    @staticmethod
    def _last_decisions(
        db: Session, user: str | None = None, workspace: str | None = None
    ) -> dict[tuple[str, str], Decision]:
        """The newest decision per (user, workspace), optionally for one user/workspace."""
        newest = select(func.max(Decision.id)).group_by(Decision.user, Decision.workspace)
        if user is not None:
            newest = newest.where(Decision.user == user)
        if workspace is not None:
            newest = newest.where(Decision.workspace == workspace)
        rows = db.scalars(select(Decision).where(Decision.id.in_(newest.scalar_subquery())))
        return {(d.user, d.workspace): d for d in rows}

    def record_event(
        self, user: str, workspace: str, server: int | str, policy: str, reason: str
    ) -> None:
        """Record something done to a workspace outside a placement (e.g. a clean-up)."""
        with self.sessions.begin() as db:
            self._record(db, user, workspace, policy, self._server(db, server), reason, 0, 0.0)

    @staticmethod
    def _placement_view(p: Placement, last: Decision | None = None) -> PlacementModel:
        s = p.server
        note = ""
        if s is not None and s.state == ServerState.down:
            note = (
                "host is down; the next start moves it (home survives: shared storage)"
                if s.storage_shared
                else f"host is down; its data stays on {s.name} until an admin confirms a move"
            )
        return PlacementModel(
            user=p.user,
            workspace=p.workspace,
            server=s.name if s else None,
            server_id=s.id if s else None,
            server_state=s.state.value if s else None,
            storage_shared=s.storage_shared if s else None,
            state=p.state.value,
            pinned_server=p.pinned_server.name if p.pinned_server else None,
            restart_requested=p.restart_requested,
            updated=_iso(p.updated) or "",
            note=note,
            reason=last.reason if last else "",
            decided=_iso(last.at) if last else None,
        )
