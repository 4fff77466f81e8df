"""The git endpoints: `GET git/repository`, `GET git/status`, `GET git/log`, `POST git/commit`,
`POST git/commit-message`, `POST git/pull`, `POST git/push`.

Thin HTTP over `GitManager` and `CommitMessageWriter`; every git call runs in a worker
thread so the event loop stays free while git (or a hook, or the network) works.
"""

from __future__ import annotations

import asyncio
from typing import Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..audit import AuditLog
from ..base import CodeyardHandler
from ..errors import bad_request
from ..events.producers import git_event
from ..llm.client import CodeyardLLM
from ..llm.tokens import TokenCounter
from .manager import CodeyardGit, GitManager, parse_message, parse_name, parse_paths
from .message import CommitMessageWriter


class GitHandler(CodeyardHandler):
    """Shared by the git family: one `auth_resource` and the manager."""

    auth_resource = "codeyard:git"

    @property
    def git(self) -> GitManager:
        manager: GitManager = self.settings["codeyard_git"]
        return manager

    def body(self, allowed: set[str], *, required: bool = True) -> dict[str, Any]:
        body = self.json_body(required=required)
        unknown = set(body) - allowed
        if unknown:
            raise bad_request(f"unknown fields: {', '.join(sorted(unknown))}")
        return body


class GitRepositoryHandler(GitHandler):
    """`GET git/repository`: whether the workspace is in a repository (200 either way)."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.write_json(await asyncio.to_thread(self.git.repository))


class GitStatusHandler(GitHandler):
    """`GET git/status`: branch, upstream, ahead/behind and every changed path."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.write_json(await asyncio.to_thread(self.git.status))


class GitLogHandler(GitHandler):
    """`GET git/log?limit=`: the newest commits of HEAD."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        limit = self.int_argument("limit", 20, minimum=1, maximum=self.git.config.log_max)
        self.set_header("Cache-Control", "no-store")
        self.write_json(await asyncio.to_thread(self.git.log, limit))


class GitCommitHandler(GitHandler):
    """`POST git/commit` `{message, paths?}`: commit every change, or only `paths`."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        body = self.body({"message", "paths", "amend"})
        if body.get("amend"):
            raise bad_request("amend is not supported: commits are only ever added", field="amend")
        message = parse_message(body.get("message"))
        paths = parse_paths(body.get("paths"))
        user = self.username
        with git_event(self.serverapp, "commit", user=user) as event:
            result = await asyncio.to_thread(self.git.commit, message, paths, user=user)
            event.answered(result)
        self.write_json(result)


class GitCommitMessageHandler(GitHandler):
    """`POST git/commit-message` `{paths?, max_tokens?}`: the model's proposal."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        writer: CommitMessageWriter = self.settings["codeyard_git_messages"]
        request = writer.parse_request(self.json_body(required=False))
        self.write_json(await writer.propose(request))


class GitPullHandler(GitHandler):
    """`POST git/pull` `{remote?, branch?}`: fast-forward only."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        body = self.body({"remote", "branch"}, required=False)
        remote, branch = parse_name(body, "remote"), parse_name(body, "branch")
        user = self.username
        with git_event(self.serverapp, "pull", user=user) as event:
            result = await asyncio.to_thread(self.git.pull, remote, branch, user=user)
            event.answered(result)
        self.write_json(result)


class GitPushHandler(GitHandler):
    """`POST git/push` `{remote?, branch?}`: never forced; sets the upstream if none."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        body = self.body({"remote", "branch"}, required=False)
        remote, branch = parse_name(body, "remote"), parse_name(body, "branch")
        user = self.username
        with git_event(self.serverapp, "push", user=user) as event:
            result = await asyncio.to_thread(self.git.push, remote, branch, user=user)
            event.answered(result)
        self.write_json(result)


def git_routes(api: str) -> list[tuple[str, type[GitHandler]]]:
    """The git endpoints under the API prefix `api`."""
    return [
        (rf"{api}/git/repository", GitRepositoryHandler),
        (rf"{api}/git/status", GitStatusHandler),
        (rf"{api}/git/log", GitLogHandler),
        (rf"{api}/git/commit", GitCommitHandler),
        (rf"{api}/git/commit-message", GitCommitMessageHandler),
        (rf"{api}/git/pull", GitPullHandler),
        (rf"{api}/git/push", GitPushHandler),
    ]


def git_settings(
    app: Any,
    *,
    audit: AuditLog,
    patches: Any,
    llm: CodeyardLLM,
    counter: TokenCounter,
) -> dict[str, Any]:
    """The tornado settings the git handlers read, built once by the `CodeyardApp` `app`
    (the parent of `CodeyardGit`, so `c.CodeyardGit.*` configures it)."""
    config = CodeyardGit(parent=app)
    manager = GitManager(
        app.workspace_root,
        config,
        audit,
        patches=patches,
        state_dir=getattr(app, "state_dir", None),
    )
    return {
        "codeyard_git": manager,
        "codeyard_git_messages": CommitMessageWriter(manager, llm, counter, config),
    }
