"""Start the real model stack for tests: vLLM (via hub_config/vllm/serve.sh) and a JupyterHub
with the gateway services. Plain functions, used by session fixtures in two test suites
(tests/gateway and tests/server_extension), which run in separate pytest processes.

Everything listens on 127.0.0.1 only. Set CODEYARD_TEST_VLLM_URL (and
CODEYARD_TEST_VLLM_KEY_FILE) to reuse a vLLM that is already running, e.g. one started once
by `make test` for both suites; otherwise each suite starts its own.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[2]
HUB_CONFIG = REPO / "hub_config"
MODEL = "smollm2"
ADMIN_TOKEN = "codeyard-test-admin-" + "0" * 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float, proc: subprocess.Popen[Any] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def stop_process(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@dataclass
class Vllm:
    url: str
    key_file: Path
    proc: subprocess.Popen[Any] | None = None
    start_seconds: float = 0.0

    @property
    def key(self) -> str:
        return self.key_file.read_text().strip()

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


def start_vllm(workdir: Path, timeout: float = 300) -> Vllm:
    """Run setup.sh + serve.sh on a free port; return once /health answers."""
    external = os.environ.get("CODEYARD_TEST_VLLM_URL")
    if external:
        return Vllm(external, Path(os.environ["CODEYARD_TEST_VLLM_KEY_FILE"]))
    port = free_port()
    key_file = workdir / "vllm.key"
    log = (workdir / "serve.log").open("wb")
    env = {
        **os.environ,
        "CODEYARD_VLLM_PORT": str(port),
        "CODEYARD_VLLM_KEY_FILE": str(key_file),
        "CODEYARD_VLLM_LOG": str(workdir / "vllm.log"),
    }
    started = time.monotonic()
    proc = subprocess.Popen(
        [str(HUB_CONFIG / "vllm" / "serve.sh")],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", timeout, proc)
    except Exception:
        stop_process(proc)
        raise RuntimeError(
            "vLLM did not start:\n" + (workdir / "serve.log").read_text()[-3000:]
        ) from None
    return Vllm(url, key_file, proc, time.monotonic() - started)


@dataclass
class Gateway:
    name: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Hub:
    api_url: str
    proc: subprocess.Popen[Any]
    workdir: Path
    gateways: dict[str, Gateway] = field(default_factory=dict)

    def api(self, method: str, path: str, body: Any = None) -> Any:
        r = requests.request(
            method,
            f"{self.api_url}/{path.lstrip('/')}",
            headers={"Authorization": f"token {ADMIN_TOKEN}"},
            data=None if body is None else json.dumps(body),
            timeout=30,
        )
        r.raise_for_status()
        return r.json() if r.content else None

    def user_token(self, user: str, scopes: list[str] | None = None) -> str:
        """A fresh API token for `user` (created if needed) with the given scopes."""
        try:
            self.api("POST", f"users/{user}")
        except requests.HTTPError as exc:
            if exc.response is None or exc.response.status_code != 409:
                raise
        body: dict[str, Any] = {"note": "test"}
        if scopes is not None:
            body["scopes"] = scopes
        return str(self.api("POST", f"users/{user}/tokens", body)["token"])

    @property
    def admin_token(self) -> str:
        return ADMIN_TOKEN

    def stop(self) -> None:
        stop_process(self.proc)


HUB_CONFIG_TEMPLATE = """
import sys
sys.path.insert(0, {hub_config!r})
from jupyterhub.proxy import Proxy
from services_llm import configure_llm_service


class NoProxy(Proxy):
    # Tests call the gateway directly; no configurable-http-proxy needed.
    should_start = False

    async def add_route(self, routespec, target, data):
        pass

    async def delete_route(self, routespec):
        pass

    async def get_all_routes(self):
        return {{}}


c.JupyterHub.proxy_class = NoProxy
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {proxy_port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.JupyterHub.db_url = "sqlite:///{workdir}/hub.sqlite"
c.JupyterHub.cookie_secret_file = "{workdir}/cookie_secret"
c.JupyterHub.pid_file = "{workdir}/hub.pid"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.services = [{{"name": "test-admin", "api_token": {admin_token!r}}}]
c.JupyterHub.load_roles = [
    {{"name": "test-admin", "scopes": ["admin:users", "tokens", "read:metrics"],
      "services": ["test-admin"]}},
]
for name, port, args in {gateways!r}:
    configure_llm_service(
        c,
        name=name,
        port=port,
        upstream_url={upstream!r} if name != "codeyard-llm-down" else "http://127.0.0.1:{closed_port}",
        key_file={key_file!r} if name != "codeyard-llm-latekey" else "{workdir}/late.key",
        audit_log="{workdir}/" + name + "-audit.jsonl",
        python={python!r},
        extra_args=tuple(args),
        start_vllm=False,
    )
"""

# name -> extra GatewayApp arguments. Each runs as its own managed Hub service.
GATEWAYS: dict[str, list[str]] = {
    "codeyard-llm": [],
    "codeyard-llm-strict": [
        "--GatewayApp.max_concurrent_per_user=1",
        "--GatewayApp.tokens_per_minute_per_user=60",
        "--GatewayApp.max_body_bytes=2000",
        "--GatewayApp.max_tokens_cap=8",
    ],
    "codeyard-llm-down": [],
    "codeyard-llm-slow": ["--GatewayApp.upstream_timeout=0.05"],
    # Its key file appears only after start-up, as when the Hub starts it before vLLM.
    "codeyard-llm-latekey": [],
    # Token answers cached for 1 s (revocation test); idle upstream connections kept past
    # vLLM's own 5 s keep-alive, so vLLM closes them first (dead-connection test).
    "codeyard-llm-tuned": [
        "--GatewayApp.token_cache_seconds=1",
        "--GatewayApp.upstream_keepalive_seconds=30",
    ],
}


def start_hub(workdir: Path, vllm: Vllm, gateways: dict[str, list[str]] | None = None) -> Hub:
    gateways = GATEWAYS if gateways is None else gateways
    hub_port = free_port()
    ports = {name: free_port() for name in gateways}
    config = workdir / "jupyterhub_config.py"
    config.write_text(
        textwrap.dedent(
            HUB_CONFIG_TEMPLATE.format(
                hub_config=str(HUB_CONFIG),
                proxy_port=free_port(),
                hub_port=hub_port,
                workdir=workdir,
                admin_token=ADMIN_TOKEN,
                gateways=[(n, ports[n], a) for n, a in gateways.items()],
                upstream=vllm.url,
                closed_port=free_port(),
                key_file=str(vllm.key_file),
                python=sys.executable,
            )
        )
    )
    log = (workdir / "hub.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterhub", "-f", str(config)],
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    hub = Hub(f"http://127.0.0.1:{hub_port}/hub/api", proc, workdir)
    try:
        wait_http(f"{hub.api_url}/", 60, proc)
        for name, port in ports.items():
            hub.gateways[name] = Gateway(name, port)
            wait_http(f"http://127.0.0.1:{port}/health", 30, proc)
    except Exception:
        stop_process(proc)
        raise RuntimeError(
            "JupyterHub did not start:\n" + (workdir / "hub.log").read_text()[-4000:]
        ) from None
    return hub
