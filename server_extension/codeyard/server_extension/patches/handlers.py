"""The patch endpoints: `POST patch/validate`, `patch/apply`, `patch/{id}/revert`, and the
notebook-cell pair `patch/cell/validate` and `patch/cell/apply`. Both validates take an
optional `selection` and then answer `checks` as `rewrite` does.

Thin HTTP over `PatchManager` and `CellPatcher`. git and nbformat run off the event loop.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..base import CodeyardHandler
from ..events.producers import patch_event
from ..llm.proposal_checks import checks_for_cell, checks_for_file
from .cells import CellPatcher, CellPatchRequest, parse_request
from .manager import PatchManager, Timings


class PatchHandler(CodeyardHandler):
    """Shared by the patch family: one `auth_resource`, body parsing, off-loop execution."""

    auth_resource = "codeyard:patch"

    @property
    def patches(self) -> PatchManager:
        manager: PatchManager = self.settings["codeyard_patches"]
        return manager

    def diff_and_base(self) -> tuple[Any, Any]:
        body = self.json_body()
        return body.get("diff"), body.get("base")


class PatchValidateHandler(PatchHandler):
    @web.authenticated
    @authorized
    async def post(self) -> None:
        diff, base = self.diff_and_base()
        selection = self.json_body().get("selection")
        # git runs in a subprocess; keep the event loop free meanwhile.
        result: Any = await asyncio.to_thread(self.patches.validate, diff, base)
        if selection is not None:
            # Parse and selection checks of the change (llm/proposal_checks.py), for the
            # panel's confirmation before Apply.
            files = self.settings["codeyard_files"]
            result["checks"] = await asyncio.to_thread(checks_for_file, files, diff, selection)
        self.write_json(result)


class PatchApplyHandler(PatchHandler):
    @web.authenticated
    @authorized
    async def post(self) -> None:
        diff, base = self.diff_and_base()
        user = self.username
        timings = Timings()
        start = time.perf_counter()
        result = await asyncio.to_thread(self.patches.apply, diff, base, user=user, timings=timings)
        phases = timings.phases
        phases["worker"] = (time.perf_counter() - start) * 1000
        phases["request"] = self.request.request_time() * 1000
        # Phase names and durations only: lets a client see where an apply's time went.
        self.set_header("Server-Timing", ", ".join(f"{k};dur={v:.2f}" for k, v in phases.items()))
        patch_event(self.serverapp, "applied", result, user=user)
        self.write_json(result)


class PatchRevertHandler(PatchHandler):
    @web.authenticated
    @authorized
    async def post(self, patch_id: str) -> None:
        user = self.username
        result = await asyncio.to_thread(self.patches.revert, patch_id, user=user)
        patch_event(self.serverapp, "reverted", result, user=user)
        self.write_json(result)


class CellPatchHandler(CodeyardHandler):
    """Shared by the cell-patch family: one `auth_resource` and body parsing."""

    auth_resource = "codeyard:cells"

    @property
    def cells(self) -> CellPatcher:
        patcher: CellPatcher = self.settings["codeyard_cells"]
        return patcher

    def cell_request(self) -> CellPatchRequest:
        return parse_request(self.json_body())


class CellValidateHandler(CellPatchHandler):
    @web.authenticated
    @authorized
    async def post(self) -> None:
        request = self.cell_request()
        selection = self.json_body().get("selection")
        # nbformat and git run off the event loop.
        result: Any = await asyncio.to_thread(self.cells.validate, request)
        if selection is not None:
            result["checks"] = await asyncio.to_thread(
                checks_for_cell, self.cells, request, selection
            )
        self.write_json(result)


class CellApplyHandler(CellPatchHandler):
    @web.authenticated
    @authorized
    async def post(self) -> None:
        request = self.cell_request()
        user = self.username
        result = await asyncio.to_thread(self.cells.apply, request, user=user)
        patch_event(self.serverapp, "applied", result, user=user, cell_id=result["cell_id"])
        self.write_json(result)
