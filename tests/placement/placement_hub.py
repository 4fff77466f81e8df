"""A real JupyterHub (5.x) process for the service tests, without a proxy or spawner.

The Hub knows the placement service as an external service (the test runs it in-process),
declares the `custom:codeyard-admin` scope through `configure_placement_service`, and has a
`tester` service token allowed to create users and their tokens. Only the Hub API is used,
so a no-op proxy class stands in for configurable-http-proxy unless `proxy_command` names
one (the browser test needs the Hub and the service on one origin).
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

CONFIG = '''
from jupyterhub.proxy import Proxy
from codeyard.placement.service.hubconfig import configure_placement_service


class NoopProxy(Proxy):
    """Routes are irrelevant here: tests call the Hub API and the service directly."""

    should_start = False

    async def add_route(self, routespec, target, data):
        pass

    async def delete_route(self, routespec):
        pass

    async def get_all_routes(self):
        return {{}}


if {proxy_command!r}:
    c.ConfigurableHTTPProxy.command = [{proxy_command!r}]
    c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
else:
    c.JupyterHub.proxy_class = NoopProxy
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.JupyterHub.db_url = "sqlite:///{state}/hub.sqlite"
c.JupyterHub.cookie_secret_file = "{state}/cookie_secret"
c.JupyterHub.pid_file = "{state}/hub.pid"
c.JupyterHub.authenticator_class = "dummy"
# a tiny stand-in single-user server (jupyterhub's own test spawner), for restart tests
c.JupyterHub.spawner_class = "jupyterhub.tests.mocking.MockSpawner"
c.JupyterHub.default_url = "/hub/home"
c.Authenticator.allowed_users = {{"admin1", "dev1"}}
c.JupyterHub.check_running_interval = 3600
c.JupyterHub.last_activity_interval = 3600

service = configure_placement_service(c, port={service_port}, admin_users=["admin1"])
del service["command"]
service["api_token"] = "{service_token}"
c.JupyterHub.services.append({{"name": "tester", "api_token": "{tester_token}"}})
c.JupyterHub.load_roles.append(
    {{
        "name": "tester",
        "scopes": ["admin:users", "tokens", "read:users", "servers"],
        "services": ["tester"],
    }}
)
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Hub:
    state: Path
    port: int = field(default_factory=_free_port)
    hub_port: int = field(default_factory=_free_port)
    service_port: int = field(default_factory=_free_port)
    service_token: str = field(default_factory=lambda: secrets.token_hex(16))
    tester_token: str = field(default_factory=lambda: secrets.token_hex(16))
    proxy_command: str = ""  # configurable-http-proxy; "" = no proxy (API tests only)
    proxy_api_port: int = field(default_factory=_free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def public_url(self) -> str:
        """The proxy's URL (only with `proxy_command`): Hub and service on one origin."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.hub_port}/hub/api"

    def start(self, wait: float = 60) -> None:
        cfg = self.state / "jupyterhub_config.py"
        keys = ("port", "hub_port", "service_port", "service_token", "tester_token", "state")
        keys += ("proxy_command", "proxy_api_port")
        cfg.write_text(CONFIG.format(**{k: getattr(self, k) for k in keys}))
        log = (self.state / "hub.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(cfg)],
            cwd=self.state,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("hub exited:\n" + (self.state / "hub.log").read_text()[-3000:])
            try:
                if requests.get(self.api_url, timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError("hub did not answer in time")

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        r = requests.request(
            method,
            self.api_url + path,
            headers={"Authorization": f"token {self.tester_token}"},
            timeout=10,
            **kwargs,
        )
        r.raise_for_status()
        return r.json() if r.content else None

    def token_for(self, user: str, **body: Any) -> str:
        return self.api("POST", f"/users/{user}/tokens", json=body)["token"]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
