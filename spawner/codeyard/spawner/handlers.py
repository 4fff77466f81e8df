"""Hub API for a workspace's status and container logs: owner and admins only.

Mounted in the Hub through `JupyterHub.extra_handlers` (see `handlers` below). Access is the
`access:servers` scope on that server: whoever may open the workspace may read its logs,
which gives exactly the owner, admins, and anyone the owner shared it with. Everyone else
gets 403, whether or not the workspace exists.
"""

from __future__ import annotations

import json
from typing import Any

from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.scopes import has_scope
from tornado import web

from .credentials import CredentialStoreUnavailable, GitCredentialStore, InvalidCredential
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


class WorkspaceCredentialHandler(APIHandler):
    """`PUT` stores the workspace's git credential `{"username", "secret"}`; `DELETE`
    forgets it. Both answer 204 with no body: the secret is never sent back.

    Allowed with the `servers` scope on that server: the owner's own session and admins,
    who may start it with options. Not those it is shared with (`access:servers` only) and
    not the workspace's own server token, so code running in a workspace cannot plant a
    credential. The workspace need not exist yet: the home page stores the credential
    before it creates the workspace, whose first start then clones with it.
    """

    def check_allowed(self, user_name: str, server_name: str) -> GitCredentialStore:
        if self.current_user is None:
            raise web.HTTPError(403, "Missing or invalid credentials.")
        scope = f"servers!server={user_name}/{server_name}"
        if not has_scope(scope, self.parsed_scopes, db=self.db):
            raise web.HTTPError(
                403, f"Not allowed to set the credential of {user_name}/{server_name}"
            )
        if self.find_user(user_name) is None:
            raise web.HTTPError(404, f"No user {user_name}")
        return GitCredentialStore.instance(config=self.config)

    async def put(self, user_name: str, server_name: str) -> None:
        store = self.check_allowed(user_name, server_name)
        # Not `get_json_body`, which logs a body it cannot parse: this one holds a secret.
        try:
            body: Any = json.loads(self.request.body or b"null")
        except ValueError:
            body = None
        if not isinstance(body, dict) or set(body) - {"username", "secret"}:
            raise web.HTTPError(400, 'The body must be {"username": ..., "secret": ...}.')
        try:
            store.put(user_name, server_name, body.get("username", ""), body.get("secret"))
        except InvalidCredential as e:
            raise web.HTTPError(400, f"Invalid credential: {e}") from None
        except CredentialStoreUnavailable as e:
            raise web.HTTPError(503, str(e)) from None
        self.log.info("git credential stored for %s/%s", user_name, server_name)
        self.set_status(204)

    async def delete(self, user_name: str, server_name: str) -> None:
        store = self.check_allowed(user_name, server_name)
        try:
            store.delete(user_name, server_name)
        except CredentialStoreUnavailable as e:
            raise web.HTTPError(503, str(e)) from None
        self.set_status(204)


_WS = r"/api/codeyard/workspaces/([^/]+)/([^/]*)"

#: For `c.JupyterHub.extra_handlers`; the Hub mounts these under its prefix (`/hub`).
handlers = [
    (_WS + r"/status", WorkspaceStatusHandler),
    (_WS + r"/logs", WorkspaceLogsHandler),
    (_WS + r"/credential", WorkspaceCredentialHandler),
]
