"""`GET codeyard/api/files`: one file's content and sha256, the base for later patches."""

from __future__ import annotations

import asyncio

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..errors import bad_request
from .base import CodeyardHandler


class FilesHandler(CodeyardHandler):
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
