"""A real JupyterHub process on loopback ports, and a web client that uses it like a browser.

Shared by the Hub end-to-end tests and `tests/bench/bench_spawn.py`.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[2]
HUB_CONFIG = REPO / "hub_config" / "jupyterhub_config.py"
DOCKER_BRIDGE_IP = "172.17.0.1"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def model_env() -> dict[str, str]:
    """Where the Hubs of these tests send the model: never a vLLM of their own.

    The vLLM of `hub_config/vllm/with-vllm.sh` (CODEYARD_TEST_VLLM_URL/KEY_FILE) when set,
    else a closed loopback port (the gateway then answers 503). Either way CODEYARD_VLLM_URL
    is set, so neither the Hub config nor up.sh's vLLM hook starts one.
    """
    if os.environ.get("CODEYARD_TEST_VLLM_URL"):
        return {
            "CODEYARD_VLLM_URL": os.environ["CODEYARD_TEST_VLLM_URL"],
            "CODEYARD_VLLM_KEY_FILE": os.environ.get("CODEYARD_TEST_VLLM_KEY_FILE", ""),
        }
    return {"CODEYARD_VLLM_URL": os.environ.get("CODEYARD_VLLM_URL") or "http://127.0.0.1:9"}


# Also for Hubs started through up.sh with this process's environment (test_up.py). Its
# gateway port is picked on loopback: the docker bridge may not exist yet at import.
os.environ.update(model_env())
os.environ.setdefault("CODEYARD_LLM_PORT", str(free_port()))


def run_last_line(cmd: list[str], env: dict[str, str] | None = None) -> str:
    """Run a project script and return its last stdout line (the scripts' output contract)."""
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, env=env).stdout
    return out.strip().splitlines()[-1]


def ensure_images() -> str:
    """Docker up and the single-user image built (cached by hash); return the image tag."""
    run_last_line([str(REPO / "images" / "bin" / "ensure-docker.sh")])
    return run_last_line([str(REPO / "images" / "bin" / "build-images.sh")])


def ensure_proxy() -> str:
    return run_last_line([str(REPO / "hub_config" / "bin" / "install-proxy.sh")])


@dataclass
class HubProcess:
    """`jupyterhub -f hub_config/jupyterhub_config.py` with its own state folder.

    An admin service token (`admin_token`) is added through the site config, so tests can
    inspect and clean up without going through a user.
    """

    state_dir: Path
    image: str
    proxy_command: str
    extra_env: dict[str, str] = field(default_factory=dict)
    site_config: str = ""
    port: int = field(default_factory=free_port)
    hub_port: int = field(default_factory=lambda: free_port(DOCKER_BRIDGE_IP))
    proxy_api_port: int = field(default_factory=free_port)
    llm_port: int = field(default_factory=lambda: free_port(DOCKER_BRIDGE_IP))
    placement_port: int = field(default_factory=free_port)
    admin_token: str = field(default_factory=lambda: secrets.token_hex(16))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "hub.log"

    def write_site_config(self) -> None:
        text = f"""
c.JupyterHub.services = [{{"name": "codeyard-test", "api_token": {self.admin_token!r}}}]
c.JupyterHub.load_roles = [{{
    "name": "codeyard-test",
    "scopes": ["admin:users", "admin:servers", "admin:server_state", "tokens",
               "access:servers", "read:metrics", "list:users", "read:users"],
    "services": ["codeyard-test"],
}}]
{self.site_config}
"""
        (self.state_dir / "site_config.py").write_text(text)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            CODEYARD_STATE=str(self.state_dir),
            CODEYARD_IMAGE=self.image,
            CODEYARD_BIND_URL=self.url,
            CODEYARD_HUB_PORT=str(self.hub_port),
            CODEYARD_PROXY_API_PORT=str(self.proxy_api_port),
            CODEYARD_CULL_TIMEOUT="0",
            CODEYARD_LLM_PORT=str(self.llm_port),
            CODEYARD_PLACEMENT_PORT=str(self.placement_port),
        )
        env.update(model_env())
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 60) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.write_site_config()
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        cmd = [
            str(Path(sys.executable).parent / "jupyterhub"),
            "-f",
            str(HUB_CONFIG),
            f"--ConfigurableHTTPProxy.command={self.proxy_command}",
        ]
        self.proc = subprocess.Popen(
            cmd, cwd=self.state_dir, env=self.env(), stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Hub exited {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/hub/api/", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"Hub did not answer in {timeout}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM, like Ctrl-C: the Hub stops its proxy and keeps workspaces running."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def placements(self) -> list[dict[str, Any]]:
        """The placement registry's view, read from its database in the state folder."""
        from codeyard.placement.database import open_db
        from codeyard.placement.registry import Registry

        sessions = open_db(f"sqlite:///{self.state_dir / 'placement.sqlite'}")
        try:
            return list(Registry(sessions).list_placements())
        finally:
            sessions.kw["bind"].dispose()

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""

    def api(self, method: str, path: str, **kw: Any) -> requests.Response:
        """Hub REST API as the admin test service."""
        headers = kw.pop("headers", {})
        headers["Authorization"] = f"token {self.admin_token}"
        return requests.request(
            method, f"{self.url}/hub/api{path}", headers=headers, timeout=30, **kw
        )


class Browser:
    """A user of the Hub's web pages: cookies, _xsrf, redirects, like a browser."""

    def __init__(self, hub_url: str) -> None:
        self.hub_url = hub_url
        self.s = requests.Session()

    def xsrf(self, path: str) -> str:
        r = self.s.get(f"{self.hub_url}{path}", timeout=30)
        r.raise_for_status()
        m = re.search(r'name="_xsrf" value="([^"]+)"', r.text)
        if m:
            return m.group(1)
        return self.hub_xsrf()

    def hub_xsrf(self) -> str:
        # Single-user servers set their own _xsrf under /user/...; the Hub's is under /hub/.
        for c in self.s.cookies:
            if c.name == "_xsrf" and c.path == "/hub/":
                return str(c.value)
        return ""

    def signup(self, username: str, password: str) -> requests.Response:
        data = {
            "_xsrf": self.xsrf("/hub/signup"),
            "username": username,
            "signup_password": password,
            "signup_password_confirmation": password,
        }
        return self.s.post(f"{self.hub_url}/hub/signup", data=data, timeout=30)

    def login(self, username: str, password: str) -> requests.Response:
        data = {"_xsrf": self.xsrf("/hub/login"), "username": username, "password": password}
        return self.s.post(f"{self.hub_url}/hub/login", data=data, timeout=30)

    def api(self, method: str, path: str, **kw: Any) -> requests.Response:
        """Hub REST API with the login cookie (as the Hub's own pages call it)."""
        headers = kw.pop("headers", {})
        headers["X-XSRFToken"] = self.hub_xsrf()
        return self.s.request(
            method, f"{self.hub_url}/hub/api{path}", headers=headers, timeout=30, **kw
        )

    def spawn_form(self, user: str, server: str, fields: dict[str, str]) -> requests.Response:
        data = {"_xsrf": self.xsrf(f"/hub/spawn/{user}/{server}"), **fields}
        return self.s.post(
            f"{self.hub_url}/hub/spawn/{user}/{server}",
            data=data,
            timeout=60,
            allow_redirects=False,
        )

    def progress(self, user: str, server: str, timeout: float = 300) -> list[dict[str, Any]]:
        """Follow the spawn's event stream to its end; return every event."""
        import json

        events: list[dict[str, Any]] = []
        with self.api("GET", f"/users/{user}/servers/{server}/progress", stream=True) as r:
            r.raise_for_status()
            deadline = time.monotonic() + timeout
            for line in r.iter_lines(decode_unicode=True):
                if line and line.startswith("data:"):
                    events.append(json.loads(line[5:]))
                    if events[-1].get("ready") or events[-1].get("failed"):
                        break
                if time.monotonic() > deadline:
                    break
        return events


def start_workspace(
    hub: HubProcess, browser: Browser, user: str, workspace: str, timeout: float = 300
) -> dict[str, str]:
    """Spawn `user`'s named workspace (small profile) through the Hub API as that user and
    wait until the Hub reports it ready; return an auth header with a fresh token of theirs."""
    r = browser.api("POST", f"/users/{user}/tokens", json={"note": f"e2e {workspace}"})
    assert r.status_code == 201, r.text
    auth = {"Authorization": f"token {r.json()['token']}"}
    r = browser.api("POST", f"/users/{user}/servers/{workspace}", json={"profile": "small"})
    assert r.status_code in (201, 202), r.text
    deadline = time.monotonic() + timeout
    while not (hub.api("GET", f"/users/{user}").json()["servers"].get(workspace) or {}).get(
        "ready"
    ):
        assert time.monotonic() < deadline, f"workspace not ready\n{hub.log_tail()}"
        time.sleep(0.5)
    return auth
