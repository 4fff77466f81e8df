"""Hub API for a workspace's status, container logs and git credential.

Mounted in the Hub through `JupyterHub.extra_handlers` (see `handlers` below). Status and
logs need the `access:servers` scope on that server: whoever may open the workspace may read
its logs, which gives exactly the owner, admins, and anyone the owner shared it with.
Everyone else gets 403, whether or not the workspace exists. The stored git credential is
set by the owner (`WorkspaceCredentialHandler`) and read back only by the workspace's own
server (`WorkspaceGitCredentialFillHandler`).
"""

from __future__ import annotations

import json
from typing import Any

from jupyterhub import orm
from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.scopes import has_scope
from tornado import web

from .credentials import (
    CredentialStoreUnavailable,
    GitCredentialStore,
    InvalidCredential,
    credential_host_allowed,
)
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


class WorkspaceGitCredentialFillHandler(APIHandler):
    """`GET .../git-credential?protocol=&host=`: the stored credential, for the workspace's
    own git credential helper (`codeyard.server_extension.git.credential_helper`), asked at
    each pull or push so the secret is never kept in the workspace.

    Only that workspace's own server token gets it: the token must belong to the workspace's
    owner and be the token the Hub gave this very server (not a session cookie, not another
    of the owner's servers, not an admin, not a user it is shared with). Everyone else gets
    403. It is handed only for the host of the workspace's repository URL (`host`, as git
    names it to a helper), over `https` or `http`, so a remote added in the workspace that
    points elsewhere never receives it. Each answer is logged without the secret.
    """

    def server_token_of(self, user_name: str, server_name: str) -> orm.APIToken:
        """The request's token when it is that server's own; 403 otherwise."""
        token: orm.APIToken | None = self.get_token() if self.get_auth_token() else None
        if token is None or token.user is None or token.user.name != user_name:
            raise web.HTTPError(403, "Only the workspace's own server may read its credential.")
        user = self.find_user(user_name)
        orm_spawner = user.orm_user.orm_spawners.get(server_name) if user else None
        if user is None or orm_spawner is None or orm_spawner.server is None:
            raise web.HTTPError(403, "Only the workspace's own server may read its credential.")
        spawner = user.spawners[server_name]
        if spawner.api_token:
            mine = bool(token.match(spawner.api_token))
        else:
            # After a Hub restart the Hub holds only the token's hash; JupyterHub names the
            # token it makes for a server after that server's URL, and nobody else's token
            # can carry the owner's name.
            mine = token.note == f"Server at {orm_spawner.server.base_url}"
        if not mine:
            raise web.HTTPError(403, "Only the workspace's own server may read its credential.")
        return token

    async def get(self, user_name: str, server_name: str) -> None:
        self.set_header("Cache-Control", "no-store")
        token = self.server_token_of(user_name, server_name)
        protocol = self.get_argument("protocol", "")
        host = self.get_argument("host", "")
        user = self.find_user(user_name)
        orm_spawner = user.orm_user.orm_spawners.get(server_name) if user else None
        options = (orm_spawner.user_options if orm_spawner else None) or {}
        repo_url = str(options.get("repo_url", "") or "")
        store = GitCredentialStore.instance(config=self.config)
        try:
            credential = store.get(user_name, server_name)
        except CredentialStoreUnavailable as e:
            raise web.HTTPError(503, str(e)) from None
        if credential is None:
            self.log.info(
                "git credential of %s/%s asked by its server (token %s): none stored",
                user_name,
                server_name,
                token.api_id,
            )
            raise web.HTTPError(404, "No git credential is stored for this workspace.")
        if not credential_host_allowed(repo_url, protocol, host):
            self.log.warning(
                "git credential of %s/%s refused to its server for %r://%r (not the"
                " repository's host)",
                user_name,
                server_name,
                protocol[:16],
                host[:200],
            )
            raise web.HTTPError(
                403,
                # The helper tells this refusal from a refused token by these words.
                "The credential stored for this workspace is only for its repository's host"
                " (over https or http).",
            )
        self.log.info(
            "git credential of %s/%s handed to its server (token %s) for %r://%r",
            user_name,
            server_name,
            token.api_id,
            protocol,
            host,
        )
        self.write(json.dumps({"username": credential.username, "password": credential.password}))


_WS = r"/api/codeyard/workspaces/([^/]+)/([^/]*)"

#: For `c.JupyterHub.extra_handlers`; the Hub mounts these under its prefix (`/hub`).
handlers = [
    (_WS + r"/status", WorkspaceStatusHandler),
    (_WS + r"/logs", WorkspaceLogsHandler),
    (_WS + r"/credential", WorkspaceCredentialHandler),
    (_WS + r"/git-credential", WorkspaceGitCredentialFillHandler),
]
