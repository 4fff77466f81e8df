"""`POST patch/cell/validate` and `patch/cell/apply`: thin HTTP over CellPatcher."""

from __future__ import annotations

import asyncio

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..notebook_cells import CellPatcher, CellPatchRequest, parse_request
from .base import CodeyardHandler


class CellPatchHandler(CodeyardHandler):
    """Shared by the cell-patch family: one `auth_resource` and body parsing."""

    auth_resource = "codeyard:cells"

    @property
    def cells(self) -> CellPatcher:
        patcher: CellPatcher = self.settings["codeyard_cells"]
        return patcher

    def cell_request(self) -> CellPatchRequest:
        return parse_request(self.get_json_body_dict())


class CellValidateHandler(CellPatchHandler):
    @web.authenticated
    @authorized
    async def post(self) -> None:
        request = self.cell_request()
        # nbformat and git run off the event loop.
        self.write_json(await asyncio.to_thread(self.cells.validate, request))


class CellApplyHandler(CellPatchHandler):
    @web.authenticated
    @authorized
    async def post(self) -> None:
        request = self.cell_request()
        user = self.username
        self.write_json(await asyncio.to_thread(self.cells.apply, request, user=user))
