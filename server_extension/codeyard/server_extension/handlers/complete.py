"""`POST codeyard/api/complete`: one short inline completion from the gateway."""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..completion import CodeyardCompleter
from .base import CodeyardHandler


class CompleteHandler(CodeyardHandler):
    auth_resource = "codeyard:complete"

    @web.authenticated
    @authorized
    async def post(self) -> None:
        completer: CodeyardCompleter = self.settings["codeyard_completer"]
        request = completer.parse_request(self.get_json_body_dict())
        self.write_json(await completer.complete(request))
