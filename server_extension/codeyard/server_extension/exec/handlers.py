"""The exec endpoints: `POST exec`, `GET exec/<run_id>`, `DELETE exec/<run_id>`.

Thin HTTP over `ExecManager`: a POST answers 202 as soon as the process has started (its
output then arrives as `exec` events on `codeyard/api/events`); GET reads the run's state
and kept output, `?since=<seq>` only the chunks after an event the client already has.
"""

from __future__ import annotations

from typing import Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..audit import AuditLog
from ..base import CodeyardHandler
from ..errors import bad_request
from .runs import CodeyardExec, ExecManager, parse_command

#: Characters of output tail `GET exec/<run_id>` adds as `tail` (what "Explain this
#: failure" sends to the model, after redaction there).
TAIL_CHARS = 4000


class ExecHandlerBase(CodeyardHandler):
    """Shared by the exec family: one `auth_resource` and the manager."""

    auth_resource = "codeyard:exec"

    @property
    def runs(self) -> ExecManager:
        manager: ExecManager = self.settings["codeyard_exec"]
        return manager


class ExecHandler(ExecHandlerBase):
    """`POST exec` `{command, cwd?, timeout?}` -> 202 `{run_id, ...}`."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        body = self.json_body()
        unknown = set(body) - {"command", "cwd", "timeout"}
        if unknown:
            raise bad_request(f"unknown fields: {', '.join(sorted(unknown))}")
        runs = self.runs
        command = parse_command(body.get("command"), runs.config.shell)
        cwd = runs.resolve_cwd(body.get("cwd"))
        timeout = runs.parse_timeout(body.get("timeout"))
        run = await runs.start(command, cwd, timeout, user=self.username)
        self.set_header("Cache-Control", "no-store")
        self.write_json(run.to_json(), status=202)


class ExecRunHandler(ExecHandlerBase):
    """`GET exec/<run_id>?since=`: state, exit code, duration and kept output;
    `DELETE exec/<run_id>`: cancel it."""

    @web.authenticated
    @authorized
    async def get(self, run_id: str) -> None:
        run = self.runs.get(run_id)
        since = self.int_argument("since", 0, minimum=0, maximum=2**53)
        self.set_header("Cache-Control", "no-store")
        self.write_json(run.to_json(since, tail_chars=TAIL_CHARS))

    @web.authenticated
    @authorized
    async def delete(self, run_id: str) -> None:
        run = self.runs.cancel(run_id)
        self.write_json({"run_id": run.id, "state": run.state, "cancelling": True}, status=202)


def exec_routes(api: str) -> list[tuple[str, type[ExecHandlerBase]]]:
    """The exec endpoints under the API prefix `api`."""
    return [
        (rf"{api}/exec", ExecHandler),
        (rf"{api}/exec/(?P<run_id>[0-9a-f]{{32}})", ExecRunHandler),
    ]


def exec_settings(app: Any, *, audit: AuditLog, paths: Any, state: Any) -> dict[str, Any]:
    """The tornado settings the exec handlers read, built once by the `CodeyardApp` `app`
    (the parent of `CodeyardExec`, so `c.CodeyardExec.*` configures it)."""
    serverapp = getattr(app, "serverapp", None)
    manager = ExecManager(
        paths,
        CodeyardExec(parent=app),
        audit,
        event_logger=getattr(serverapp, "event_logger", None),
        state=state,
        log=app.log,
    )
    return {"codeyard_exec": manager}
