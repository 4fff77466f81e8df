"""`POST codeyard/api/rewrite`: a unified diff for one region, built by the server, not applied."""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..rewrite import Rewriter
from .base import CodeyardHandler


class RewriteHandler(CodeyardHandler):
    auth_resource = "codeyard:rewrite"

    @web.authenticated
    @authorized
    async def post(self) -> None:
        rewriter: Rewriter = self.settings["codeyard_rewriter"]
        request = rewriter.parse_request(self.get_json_body_dict())
        cells = self.settings.get("codeyard_cells")
        self.write_json(await rewriter.rewrite(request, cells))
