"""The warm pool's bookkeeping in the registry: which hosts keep warm containers, and room.

An admin sets `servers.pool_size` per host (the API's PATCH servers/{id}, the Servers page);
the Hub's pool manager (`codeyard.spawner.warm_pool`) keeps that many warm containers per
pooled image and size profile on each active engine host, and records each one here before
it makes it (`reserve`), so the host's capacity counts it:

- a warm container is reserved only when the host has room for it beside the workspaces
  placed there: `max_workspaces` counts it as one workspace and `mem_capacity` its profile's
  memory. The pool fills only capacity nobody uses.
- a user's start is never refused because of the pool: placement (`Registry.place`) sees
  the users' workspaces only. The start claims a warm container (`release` turns its row
  into nothing while the user's placement already counts), or starts cold; in that case the
  host may now be over its capacity, and `surplus` tells the pool manager how many warm
  containers to remove.

Swarm hosts have no pool: Swarm chooses the node of each task, so a warm container there
could not be handed to a workspace whose home is elsewhere; `pool_size` on them is refused.
"""

from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from .models import HostKind, PoolContainer, Server, ServerState
from .registry import serialize_placements
from .servers import host_loads, server_row


def pool_loads(db: Session) -> dict[int, tuple[int, int]]:
    """{server id: (warm containers, MiB they reserve)}."""
    rows = db.execute(
        select(
            PoolContainer.server_id,
            func.count(),
            func.coalesce(func.sum(PoolContainer.mem_reserved), 0),
        ).group_by(PoolContainer.server_id)
    )
    return {sid: (n, int(mem)) for sid, n, mem in rows}


def pool_hosts(sessions: sessionmaker[Session]) -> dict[str, int]:
    """{host name: pool size} of every host that should keep warm containers now: active
    engine hosts with a pool size. Drained, down and swarm hosts keep none."""
    with sessions() as db:
        rows = db.execute(
            select(Server.name, Server.pool_size).where(
                Server.pool_size > 0,
                Server.kind == HostKind.engine.value,
                Server.state == ServerState.active,
            )
        )
        return {name: int(size) for name, size in rows}


def room(db: Session, server: Server, mem: int) -> bool:
    """Whether `server` has room for one more container reserving `mem` MiB, counting the
    workspaces placed there and the warm containers it keeps."""
    users, users_mem = host_loads(db).get(server.id, (0, 0))
    pooled, pooled_mem = pool_loads(db).get(server.id, (0, 0))
    if server.max_workspaces and users + pooled + 1 > server.max_workspaces:
        return False
    return not (server.mem_capacity and users_mem + pooled_mem + mem > server.mem_capacity)


def reserve(
    sessions: sessionmaker[Session], host: str, container: str, pool: str, mem: int
) -> bool:
    """Record a warm container about to be made on `host` if it has room; whether it has."""
    with sessions.begin() as db:
        serialize_placements(db)
        server = server_row(db, host)
        if not room(db, server, mem):
            return False
        db.add(PoolContainer(server_id=server.id, container=container, pool=pool, mem_reserved=mem))
        return True


def release(sessions: sessionmaker[Session], container: str) -> bool:
    """Forget a warm container (claimed or removed); whether it was recorded."""
    with sessions.begin() as db:
        result = db.execute(delete(PoolContainer).where(PoolContainer.container == container))
        return bool(getattr(result, "rowcount", 0))


def recorded(sessions: sessionmaker[Session], host: str) -> list[str]:
    """The names of the warm containers recorded on `host`."""
    with sessions() as db:
        server = server_row(db, host)
        return list(
            db.scalars(select(PoolContainer.container).where(PoolContainer.server_id == server.id))
        )


def surplus(sessions: sessionmaker[Session], host: str) -> int:
    """How many warm containers `host` holds beyond its capacity (workspaces started cold
    while the pool was full take capacity back from it)."""
    with sessions() as db:
        server = server_row(db, host)
        users, users_mem = host_loads(db).get(server.id, (0, 0))
        pooled, pooled_mem = pool_loads(db).get(server.id, (0, 0))
        over = 0
        if server.max_workspaces:
            over = max(over, users + pooled - server.max_workspaces)
        if server.mem_capacity and pooled:
            per = max(1, pooled_mem // pooled)
            excess = users_mem + pooled_mem - server.mem_capacity
            over = max(over, -(-excess // per) if excess > 0 else 0)
        return min(over, pooled)
