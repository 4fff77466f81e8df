"""What every handler of the placement service shares: `ServiceContext`.

A module of its own so that the handlers import it without importing the application that
imports them (`app.make_app`).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from tornado import httpclient

from ..health import HealthMonitor
from ..image_pulls import ImagePuller
from ..registry import Registry
from ..settings import ADMIN_SCOPE, HUB_ADMIN_SCOPE


@dataclass
class ServiceContext:
    registry: Registry
    hub_auth: Any
    admin_scope: str = ADMIN_SCOPE
    hub_admin_scope: str = HUB_ADMIN_SCOPE
    probe_timeout: float = 5.0
    executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(8, thread_name_prefix="codeyard-placement")
    )
    monitor: HealthMonitor | None = None
    #: Background image pulls onto hosts (`image_pulls.ImagePuller`); None: none configured.
    image_puller: ImagePuller | None = None
    url: str = ""  # the service's own base URL, for links and tests

    async def restart_workspace(self, user: str, name: str) -> str:
        """Stop then start the workspace through the Hub API (needs the `servers` scope)."""
        api = self.hub_auth.api_url
        token = self.hub_auth.api_token
        if not token:
            return "not restarted: the service has no Hub API token"
        path = f"{api}/users/{quote(user, safe='')}/servers/{quote(name, safe='')}"
        client = httpclient.AsyncHTTPClient()
        headers = {"Authorization": f"token {token}"}
        try:
            await client.fetch(path, method="DELETE", headers=headers, raise_error=False)
            for _ in range(60):
                resp = await client.fetch(
                    path, method="POST", body="{}", headers=headers, raise_error=False
                )
                if resp.code in (201, 202):
                    return "restarted"
                if resp.code != 400:  # 400: still stopping
                    return f"not restarted: Hub answered {resp.code}"
                await asyncio.sleep(1)
        except OSError as e:
            return f"not restarted: {e}"
        return "not restarted: the old server did not stop in time"
