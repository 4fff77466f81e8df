"""`GET codeyard/api/status`: the model's name and whether the gateway answers, for the panel."""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..llm_client import CodeyardLLM
from ..status import gateway_status
from .base import CodeyardHandler


class StatusHandler(CodeyardHandler):
    auth_resource = "codeyard:status"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        llm: CodeyardLLM = self.settings["codeyard_explainer"].llm
        self.set_header("Cache-Control", "no-store")
        self.write_json(await gateway_status(llm))
