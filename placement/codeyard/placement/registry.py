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
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from .crypto import CredentialCipher
from .decisions import DecisionLog, last_decisions, placement_row, placement_view, record_decision
from .models import Placement, PlacementState, PolicyCursor, PolicySetting, Server, ServerState
from .policies import (
    HostLoad,
    NoHostAvailable,
    PlacementPolicy,
    PlacementRequest,
    PolicyState,
    available_policies,
    load_policy,
)
from .servers import ServerRegistry, host_loads, server_row
from .shapes import (
    LOADED,
    Conflict,
    CredentialModel,
    LoadModel,
    NeedsConfirmation,
    NotFound,
    PlacementModel,
    PlacementResult,
    PlacementSettings,
    RegistryError,
    ServerModel,
)

__all__ = [
    "Conflict",
    "CredentialModel",
    "LoadModel",
    "NeedsConfirmation",
    "NotFound",
    "PlacementModel",
    "PlacementResult",
    "PlacementSettings",
    "Registry",
    "RegistryError",
    "ServerModel",
]


class Registry(ServerRegistry):
    """Hosts (`ServerRegistry`), placement itself, and the decision log (`decision_log`)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        cipher: CredentialCipher | None = None,
        settings: PlacementSettings | None = None,
    ) -> None:
        super().__init__(sessions, cipher, settings)
        self.decision_log = DecisionLog(sessions)
        self._policies: dict[tuple[str, str], PlacementPolicy] = {}
        self._place_lock = threading.Lock()

    # ---- what the pages and the API show -----------------------------------------------

    def get_placement(self, user: str, workspace: str = "") -> PlacementModel:
        return self.decision_log.get_placement(user, workspace)

    def list_placements(
        self, user: str | None = None, server: str | None = None, state: str | None = None
    ) -> list[PlacementModel]:
        return self.decision_log.list_placements(user, server, state)

    def decisions(self, limit: int = 100) -> list[dict[str, Any]]:
        return self.decision_log.decisions(limit)

    def record_event(
        self, user: str, workspace: str, server: int | str, policy: str, reason: str
    ) -> None:
        """Record something done to a workspace outside a placement (e.g. a clean-up)."""
        self.decision_log.record_event(user, workspace, server, policy, reason)

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
        loads = host_loads(db)
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
        known_host: str = "",
    ) -> PlacementResult:
        """Decide where `user/workspace` starts now, record the decision, and return it.

        `known_host` is the host the spawner's own state names. It counts only when the
        registry has no placement yet (a workspace made before the registry was in use):
        the workspace is then adopted there, as if placed, so its home is not left behind.
        Raises NoHostAvailable (naming why) or NeedsConfirmation.
        """
        groups = tuple(groups)
        try:
            with self._place_lock:  # one decision at a time: each sees the previous one's load
                return self._place(
                    user, workspace, groups, mem_request, confirm_data_loss, known_host
                )
        except (NoHostAvailable, NeedsConfirmation) as e:
            # the failed decision is recorded too, in its own transaction
            with self.sessions.begin() as db:
                policy, n, took = getattr(e, "decision", ("", 0, 0.0))
                record_decision(db, user, workspace, policy, None, str(e), n, took)
            raise

    def _place(
        self,
        user: str,
        workspace: str,
        groups: tuple[str, ...],
        mem_request: int,
        confirm_data_loss: bool,
        known_host: str = "",
    ) -> PlacementResult:
        with self.sessions.begin() as db:
            serialize_placements(db)
            p = placement_row(db, user, workspace, create=True)
            old = p.server
            if old is None and known_host:
                old = db.scalar(select(Server).where(Server.name == known_host))
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
            record_decision(db, user, workspace, policy_name, target, reason, n, took)
            return PlacementResult(
                user, workspace, target.id, target.name, target.endpoint, reason, moved
            )

    def mark(self, user: str, workspace: str, state: PlacementState) -> None:
        with self.sessions.begin() as db:
            placement_row(db, user, workspace).state = state

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
            server = server_row(db, server_id)
            if server.state == ServerState.down:
                raise Conflict(f"{server.name} is down")
            p = placement_row(db, user, workspace, create=True)
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
            last = last_decisions(db, user, workspace).get((user, workspace))
            return placement_view(p, last)

    def confirm_replacement(self, user: str, workspace: str) -> None:
        with self.sessions.begin() as db:
            placement_row(db, user, workspace).data_loss_confirmed = True


# Any 64-bit key works; this one spells "codeyard" so it is recognisable in pg_locks.
PLACEMENT_LOCK_KEY = int.from_bytes(b"codeyard", "big") & 0x7FFF_FFFF_FFFF_FFFF


def serialize_placements(db: Session) -> None:
    """Hold the database-wide placement lock until `db`'s transaction ends.

    The registry's own lock orders decisions inside one process. On PostgreSQL, several
    processes (two Hubs, a Hub and the admin CLI) may place into one registry: without a
    shared lock each reads the same load and a host fills past its capacity. A transaction
    advisory lock makes them take turns and is released by commit or rollback, never
    leaked. SQLite has one writer per file and no such lock; there the Hub is the only
    process that places.
    """
    if db.get_bind().dialect.name == "postgresql":
        db.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PLACEMENT_LOCK_KEY})
