"""Hub API for a workspace's status and container logs: owner and admins only.

Mounted in the Hub through `JupyterHub.extra_handlers` (see `handlers` below). Access is the
`access:servers` scope on that server: whoever may open the workspace may read its logs,
which gives exactly the owner, admins, and anyone the owner shared it with. Everyone else
gets 403, whether or not the workspace exists.
"""

from __future__ import annotations

import json

from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.scopes import has_scope
from tornado import web

from .spawner import PlacementSpawner

MAX_TAIL = 10_000


class WorkspaceAPIHandler(APIHandler):
    def workspace(self, user_name: str, server_name: str) -> PlacementSpawner:
        if self.current_user is None:
            raise web.HTTPError(403, "Missing or invalid credentials.")
        scope = f"access:servers!server={user_name}/{server_name}"
        if not has_scope(scope, self.parsed_scopes, db=self.db):
            raise web.HTTPError(403, f"Not allowed to see workspace {user_name}/{server_name}")
        user = self.find_user(user_name)
        if user is None or server_name not in user.orm_user.orm_spawners:
            raise web.HTTPError(404, f"No workspace {user_name}/{server_name}")
        spawner = user.spawners[server_name]
        if not isinstance(spawner, PlacementSpawner):
            raise web.HTTPError(400, "This server is not a Codeyard workspace")
        return spawner


class WorkspaceStatusHandler(WorkspaceAPIHandler):
    async def get(self, user_name: str, server_name: str) -> None:
        spawner = self.workspace(user_name, server_name)
        status = await spawner.workspace_status()
        status["pending"] = spawner.pending
        status["ready"] = spawner.ready
        self.write(json.dumps(status))


class WorkspaceLogsHandler(WorkspaceAPIHandler):
    async def get(self, user_name: str, server_name: str) -> None:
        spawner = self.workspace(user_name, server_name)
        try:
            tail = int(self.get_argument("tail", "200"))
        except ValueError:
            raise web.HTTPError(400, "tail must be an integer") from None
        tail = max(1, min(tail, MAX_TAIL))
        logs = await spawner.container_logs(tail=tail)
        self.write(json.dumps({"user": user_name, "workspace": server_name, "logs": logs}))


_WS = r"/api/codeyard/workspaces/([^/]+)/([^/]*)"

#: For `c.JupyterHub.extra_handlers`; the Hub mounts these under its prefix (`/hub`).
handlers = [
    (_WS + r"/status", WorkspaceStatusHandler),
    (_WS + r"/logs", WorkspaceLogsHandler),
]
