"""The workspace endpoints: `GET tree`, `GET files` and `GET audit`.

Thin layers that read a request, call a manager (`TreeLister`, `FileReader`, `AuditLog`)
and write JSON. The patch and model endpoints sit beside their own managers, in
`patches/handlers.py` and `llm/handlers.py`.
"""

from __future__ import annotations

import asyncio

from jupyter_server.auth.decorator import authorized
from tornado import web

from .audit import AuditLog
from .base import CodeyardHandler
from .errors import CodeyardError, bad_request
from .state import StateFolder


class TreeHandler(CodeyardHandler):
    """`GET codeyard/api/tree`: the workspace tree, honouring .gitignore."""

    auth_resource = "codeyard:tree"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        maximum = int(self.settings["codeyard_tree_max"])
        depth = self.int_argument("depth", 1, minimum=1, maximum=64)
        limit = self.int_argument("limit", min(1000, maximum), minimum=1, maximum=maximum)
        path = self.raw_argument("path", "") or ""
        lister = self.settings["codeyard_tree"]
        # A deep walk can take a while; keep the event loop free for other requests.
        result = await asyncio.to_thread(lister.list, path, depth=depth, limit=limit)
        self.write_json(result)


class FilesHandler(CodeyardHandler):
    """`GET codeyard/api/files`: one file's content and sha256, the base for later patches."""

    auth_resource = "codeyard:files"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        path = self.raw_argument("path")
        if path is None:
            raise bad_request("the path query argument is required")
        encoding = self.raw_argument("encoding")
        reader = self.settings["codeyard_files"]
        self.write_json(await asyncio.to_thread(reader.read, path, encoding=encoding))


class AuditHandler(CodeyardHandler):
    """`GET audit?limit=`: the newest audit records, newest first, and whether the chain holds."""

    auth_resource = "codeyard:audit"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        limit = self.int_argument("limit", 50, minimum=1, maximum=10_000)
        audit: AuditLog = self.settings["codeyard_audit"]
        state: StateFolder = self.settings["codeyard_state"]
        self.write_json(await asyncio.to_thread(self._read, audit, state, limit))

    @staticmethod
    def _read(audit: AuditLog, state: StateFolder, limit: int) -> dict[str, object]:
        """Records and chain check, after a deleted state folder is rebuilt and recorded.

        Reading needs no writable folder: if it is unwritable, what can be read is
        answered, and only a log that cannot be read either answers that error (507).
        """
        problem: CodeyardError | None = None
        try:
            state.ensure()
        except CodeyardError as exc:
            problem = exc
        try:
            return {"records": audit.tail(limit), "chain_ok": audit.verify()}
        except OSError as exc:
            clear = problem or state.translate(exc)
            if clear is None:
                raise
            raise clear from exc
