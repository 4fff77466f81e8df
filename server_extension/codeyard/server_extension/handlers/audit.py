"""`GET audit?limit=`: the newest audit records, newest first, and whether the chain holds."""

from __future__ import annotations

import asyncio

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..audit import AuditLog
from .base import CodeyardHandler


class AuditHandler(CodeyardHandler):
    auth_resource = "codeyard:audit"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        limit = self.int_argument("limit", 50, minimum=1, maximum=10_000)
        audit: AuditLog = self.settings["codeyard_audit"]
        records = await asyncio.to_thread(audit.tail, limit)
        chain_ok = await asyncio.to_thread(audit.verify)
        self.write_json({"records": records, "chain_ok": chain_ok})
