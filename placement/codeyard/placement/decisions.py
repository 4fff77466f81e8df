"""The decision log and the placements' views: what the pages and API show about workspaces.

Every placement decision, move and clean-up is a `Decision` row; a placement is shown with
its newest one. `DecisionLog` answers the read side over its own `sessions`; the functions
here work inside a session a caller already holds, so `registry.Registry` records a decision
in the same transaction as the placement it decided.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from .models import Decision, Placement, PlacementState, Server, ServerState
from .servers import server_row
from .shapes import NotFound, PlacementModel, iso_timestamp


def record_decision(
    db: Session,
    user: str,
    workspace: str,
    policy: str,
    server: Server | None,
    reason: str,
    candidates: int,
    took: float,
) -> None:
    """Add a `Decision` row: `server` None for a refusal, `took` in seconds."""
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


def placement_row(db: Session, user: str, workspace: str, *, create: bool = False) -> Placement:
    """The workspace's placement; with `create`, a new stopped one where none exists."""
    p = db.scalar(select(Placement).where(Placement.user == user, Placement.workspace == workspace))
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


def last_decisions(
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


def placement_view(p: Placement, last: Decision | None = None) -> PlacementModel:
    """The API shape of a placement, with its newest decision's reason and time."""
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
        updated=iso_timestamp(p.updated) or "",
        note=note,
        reason=last.reason if last else "",
        decided=iso_timestamp(last.at) if last else None,
    )


class DecisionLog:
    """Placements and decisions as the pages and the API show them, and events to record."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def get_placement(self, user: str, workspace: str = "") -> PlacementModel:
        with self.sessions() as db:
            last = last_decisions(db, user, workspace).get((user, workspace))
            return placement_view(placement_row(db, user, workspace), last)

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
            last = last_decisions(db, user)
            return [placement_view(p, last.get((p.user, p.workspace))) for p in db.scalars(q)]

    def decisions(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest `limit` decisions, newest first."""
        with self.sessions() as db:
            rows = db.scalars(select(Decision).order_by(Decision.id.desc()).limit(limit))
            return [
                {
                    "at": iso_timestamp(d.at),
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

    def record_event(
        self, user: str, workspace: str, server: int | str, policy: str, reason: str
    ) -> None:
        """Record something done to a workspace outside a placement (e.g. a clean-up)."""
        with self.sessions.begin() as db:
            record_decision(db, user, workspace, policy, server_row(db, server), reason, 0, 0.0)
