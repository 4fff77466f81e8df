"""`GET codeyard/api/tree`: the workspace tree, honouring .gitignore."""

from __future__ import annotations

import asyncio

from jupyter_server.auth.decorator import authorized
from tornado import web

from .base import CodeyardHandler


class TreeHandler(CodeyardHandler):
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
