"""The central audit service as a Hub service the test runs itself, so it can be stopped and
started again (the Hub config declares it with `del service["command"]`), the site config
text that declares it, and the site config of a minimal Hub whose workspaces run as local
processes (`jupyterhub-singleuser` with Codeyard, one process a test can kill).

Used by the gateway suite (the gateway's records in the central audit) and the hub suite's
audit and usage tests.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from support.processes import free_port, stop_process, wait_http

PREFIX = "/services/codeyard-audit/"


@dataclass
class AuditService:
    """One `python -m codeyard.central_audit serve` on loopback, keys and SQLite in `state`."""

    state: Path
    hub_api_url: str = ""
    port: int = field(default_factory=free_port)
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL with the prefix and a trailing slash (`.../services/codeyard-audit/`)."""
        return f"http://127.0.0.1:{self.port}{PREFIX}"

    @property
    def base(self) -> str:
        """What writers are given (`CODEYARD_AUDIT_URL`, `GatewayApp.central_audit_url`)."""
        return self.url.rstrip("/")

    @property
    def db_path(self) -> Path:
        return self.state / "audit.sqlite"

    def site_config(
        self,
        *,
        admin_users: list[str],
        writer_services: tuple[str, ...] = (),
        spawn_events_dir: str | None = None,
    ) -> str:
        """Hub config text declaring this service (run by the test, not the Hub); with
        `spawn_events_dir`, the Hub records workspace starts and stops there and sends them."""
        return f"""
from codeyard.central_audit.hubconfig import configure_audit_service
audit = configure_audit_service(
    c, port={self.port}, db_url="unused", hmac_key_file="unused", signing_key_file="unused",
    admin_users={admin_users!r}, writer_services={list(writer_services)!r},
    spawn_events_dir={spawn_events_dir!r},
)
del audit["command"]  # the test runs the service itself, to stop and start it
audit["api_token"] = {self.token!r}
"""

    def start(self) -> None:
        env = dict(
            os.environ,
            JUPYTERHUB_API_URL=self.hub_api_url,
            JUPYTERHUB_API_TOKEN=self.token,
            JUPYTERHUB_SERVICE_PREFIX=PREFIX,
            JUPYTERHUB_SERVICE_URL=f"http://127.0.0.1:{self.port}",
            JUPYTERHUB_CLIENT_ID="service-codeyard-audit",
            JUPYTERHUB_BASE_URL="/",
            JUPYTERHUB_OAUTH_CALLBACK_URL=f"{PREFIX}oauth_callback",
        )
        self.state.mkdir(parents=True, exist_ok=True)
        args = [
            f"--CentralAudit.db_url=sqlite:///{self.db_path}",
            f"--CentralAudit.hmac_key_file={self.state / 'audit_hmac.key'}",
            f"--CentralAudit.signing_key_file={self.state / 'audit_ed25519.pem'}",
            "--CentralAudit.checkpoint_interval=0",
        ]
        with (self.state / "audit-service.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "codeyard.central_audit", "serve", *args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_http(f"{self.url}api/public-key", 30, self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def get(self, endpoint: str, token: str, **params: Any) -> requests.Response:
        return requests.get(
            self.url + endpoint,
            params=params,
            headers={"Authorization": f"token {token}"},
            timeout=30,
        )


def local_process_workspaces(state: Path, port: int, environment: dict[str, str]) -> str:
    """Hub config text for workspaces that run as local processes, not containers: the
    Hub's simple spawner starts `jupyterhub-singleuser` from this interpreter's venv, with
    its home in `state/homes/<user>`, on loopback `port`, with `environment`. Anyone may
    sign in and name servers; the Hub polls every second and gives a start 90 s."""
    singleuser = Path(sys.executable).parent / "jupyterhub-singleuser"
    return f"""
c.Authenticator.allow_all = True
c.JupyterHub.allow_named_servers = True
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = {str(state / "homes" / "{username}")!r}
c.Spawner.cmd = [{str(singleuser)!r}]
c.Spawner.args = ["--allow-root"]
c.Spawner.ip = "127.0.0.1"
c.Spawner.port = {port}
c.Spawner.poll_interval = 1
c.Spawner.start_timeout = 90
c.Spawner.http_timeout = 90
c.Spawner.environment = {environment!r}
"""
