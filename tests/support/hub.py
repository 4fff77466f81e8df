"""The one launcher of the real JupyterHub processes the suites drive.

`HubProcess` runs either configuration the tests need:

- the project's (default): `jupyterhub -f hub_config/jupyterhub_config.py`, as `make up` runs it,
  with the settings it reads from the environment and a site config in the state folder;
- a minimal one (`project=False`), generated into the state folder: loopback only, dummy login,
  no proxy unless `proxy_command` names one, plus the LLM gateways (`gateways`) as managed
  services and the placement admin service as an external one the test runs itself
  (`external_placement`). The gateway and placement suites use it through `JsonApiHub`.

Either way the Hub has an admin service token (`admin_token`), logs to `<state>/hub.log`, runs
in its own process group, is ready once its API (and every gateway's /health) answers, and is
stopped like Ctrl-C stops `make up`.

Every environment variable the Hub is started with is set in `HubProcess.env()`, and the model's
in `model_env()`.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from support.processes import free_port, run_last_line, stop_process, wait_http

REPO = Path(__file__).resolve().parents[2]
HUB_CONFIG = REPO / "hub_config"
PROJECT_CONFIG = HUB_CONFIG / "jupyterhub_config.py"
LOOPBACK = "127.0.0.1"
DOCKER_BRIDGE_IP = "172.17.0.1"

# What the admin test service may do: inspect and clean up users, servers and tokens and read
# metrics on the project Hub; create users and tokens and start servers on a minimal one.
PROJECT_ADMIN_SCOPES = (
    "admin:users",
    "admin:servers",
    "admin:server_state",
    "tokens",
    "access:servers",
    "read:metrics",
    "list:users",
    "read:users",
)
MINIMAL_ADMIN_SCOPES = ("admin:users", "tokens", "read:users", "servers", "read:metrics")

# The minimal config's stand-in for configurable-http-proxy.
NO_PROXY_CLASS = '''
from jupyterhub.proxy import Proxy


class NoProxy(Proxy):
    """Keeps no routes: the tests call the Hub API and the services directly."""

    should_start = False

    async def add_route(self, routespec, target, data):
        pass

    async def delete_route(self, routespec):
        pass

    async def get_all_routes(self):
        return {}


c.JupyterHub.proxy_class = NoProxy
'''


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


def ensure_images() -> str:
    """Docker up and the single-user image built (cached by hash); return the image tag."""
    run_last_line([str(REPO / "images" / "bin" / "ensure-docker.sh")])
    return run_last_line([str(REPO / "images" / "bin" / "build-images.sh")])


def ensure_proxy() -> str:
    """Path of configurable-http-proxy, installed by the project's script if needed."""
    return run_last_line([str(HUB_CONFIG / "bin" / "install-proxy.sh")])


def _token() -> str:
    return secrets.token_hex(16)


@dataclass
class Gateway:
    """An LLM gateway service of a minimal Hub, on loopback."""

    name: str
    port: int = field(default_factory=free_port)
    upstream_url: str = ""
    key_file: str = ""
    args: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


@dataclass
class HubProcess:
    """A JupyterHub subprocess with its own state folder and free ports.

    `start()` writes the config, starts the Hub and waits until it answers; `stop()` stops it
    (workspaces keep running) and `start()` again restarts it on the same ports and state.
    """

    state_dir: Path
    image: str = ""  # project config: the single-user image tag
    proxy_command: str = ""  # configurable-http-proxy; "" = none (minimal config only)
    extra_env: dict[str, str] = field(default_factory=dict)
    site_config: str = ""  # config text added after the test's own settings
    project: bool = True  # False: the minimal generated config
    admin_scopes: tuple[str, ...] = PROJECT_ADMIN_SCOPES
    gateways: dict[str, Gateway] = field(default_factory=dict)  # minimal config only
    external_placement: bool = False  # minimal config: declare the placement admin service
    placement_admins: tuple[str, ...] = ()  # ... and grant its admin scope to these users
    port: int = field(default_factory=free_port)
    hub_port: int = 0  # 0: a free port on `hub_ip`
    proxy_api_port: int = field(default_factory=free_port)
    llm_port: int = 0  # 0: a free port on `hub_ip`
    audit_port: int = 0  # 0: a free port on `hub_ip` (the project config's central audit)
    placement_port: int = field(default_factory=free_port)
    admin_token: str = field(default_factory=_token)
    placement_token: str = field(default_factory=_token)
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        if self.project and (self.gateways or self.external_placement):
            raise ValueError("the project config runs its own gateway and placement service")
        self.hub_port = self.hub_port or free_port(self.hub_ip)
        self.llm_port = self.llm_port or free_port(self.hub_ip)
        self.audit_port = self.audit_port or free_port(self.hub_ip)

    @property
    def hub_ip(self) -> str:
        """The project Hub's API and gateway listen on the docker bridge, where workspace
        containers reach them; a minimal Hub only serves the test, on loopback."""
        return DOCKER_BRIDGE_IP if self.project else LOOPBACK

    @property
    def url(self) -> str:
        """The public URL (the proxy's)."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def api_url(self) -> str:
        """The Hub's own API URL, as its services call it."""
        return f"http://{self.hub_ip}:{self.hub_port}/hub/api"

    @property
    def api_base(self) -> str:
        """Where the tests call the Hub API: the project Hub through its proxy, as a browser
        does; a minimal Hub directly (its proxy, if any, serves only the browser tests)."""
        return f"{self.url}/hub/api" if self.project else self.api_url

    @property
    def log_path(self) -> Path:
        return self.state_dir / "hub.log"

    def env(self) -> dict[str, str]:
        """The whole environment of the Hub process. The project config reads its settings
        from these CODEYARD_* variables; the minimal config is complete in its file."""
        env = dict(os.environ)
        if self.project:
            env.update(
                CODEYARD_STATE=str(self.state_dir),
                CODEYARD_IMAGE=self.image,
                CODEYARD_BIND_URL=self.url,
                CODEYARD_HUB_PORT=str(self.hub_port),
                CODEYARD_PROXY_API_PORT=str(self.proxy_api_port),
                CODEYARD_CULL_TIMEOUT="0",
                CODEYARD_LLM_PORT=str(self.llm_port),
                CODEYARD_AUDIT_PORT=str(self.audit_port),
                CODEYARD_PLACEMENT_PORT=str(self.placement_port),
            )
            env.update(model_env())
        env.update(self.extra_env)
        return env

    def admin_config(self) -> str:
        """Config text adding the admin test service and its role to what is there."""
        service = {"name": "codeyard-test", "api_token": self.admin_token}
        role = {
            "name": "codeyard-test",
            "scopes": list(self.admin_scopes),
            "services": ["codeyard-test"],
        }
        return (
            "c.JupyterHub.services = [\n"
            '    *(c.JupyterHub.services if "services" in c.JupyterHub else []),\n'
            f"    {service!r},\n"
            "]\n"
            "c.JupyterHub.load_roles = [\n"
            '    *(c.JupyterHub.load_roles if "load_roles" in c.JupyterHub else []),\n'
            f"    {role!r},\n"
            "]\n"
        )

    def minimal_config(self) -> str:
        """The generated config of a minimal Hub (`project=False`)."""
        state = self.state_dir
        if self.proxy_command:
            lines = [f'c.ConfigurableHTTPProxy.api_url = "http://{LOOPBACK}:{self.proxy_api_port}"']
        else:
            lines = [NO_PROXY_CLASS]
        lines += [
            f"c.JupyterHub.ip = {LOOPBACK!r}",
            f"c.JupyterHub.port = {self.port}",
            f"c.JupyterHub.hub_ip = {self.hub_ip!r}",
            f"c.JupyterHub.hub_port = {self.hub_port}",
            f"c.JupyterHub.db_url = {f'sqlite:///{state}/hub.sqlite'!r}",
            f"c.JupyterHub.cookie_secret_file = {f'{state}/cookie_secret'!r}",
            f"c.JupyterHub.pid_file = {f'{state}/hub.pid'!r}",
            'c.JupyterHub.authenticator_class = "dummy"',
            self.admin_config(),
        ]
        if self.gateways:
            lines.append("from codeyard.gateway.hubconfig import configure_llm_service")
        for g in self.gateways.values():
            audit_log = str(state / f"{g.name}-audit.jsonl")
            lines.append(
                f"configure_llm_service(c, name={g.name!r}, port={g.port},"
                f" upstream_url={g.upstream_url!r}, key_file={g.key_file!r},"
                f" audit_log={audit_log!r}, python={sys.executable!r},"
                f" extra_args={g.args!r})"
            )
        if self.external_placement:
            lines += [
                "from codeyard.placement.service.hubconfig import configure_placement_service",
                f"placement = configure_placement_service(c, port={self.placement_port},"
                f" admin_users={list(self.placement_admins)!r})",
                "# the test runs the service itself, in-process",
                'del placement["command"]',
                f'placement["api_token"] = {self.placement_token!r}',
            ]
        lines.append(self.site_config)
        return "\n".join(lines) + "\n"

    def write_config(self) -> Path:
        """Write the config into the state folder; return the file `jupyterhub -f` runs."""
        if self.project:
            # The project config loads <state>/site_config.py before its own settings.
            (self.state_dir / "site_config.py").write_text(
                f"{self.admin_config()}\n{self.site_config}\n"
            )
            return PROJECT_CONFIG
        config = self.state_dir / "jupyterhub_config.py"
        config.write_text(self.minimal_config())
        return config

    def start(self, timeout: float = 60) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        cmd = [str(Path(sys.executable).parent / "jupyterhub"), "-f", str(self.write_config())]
        if self.proxy_command:
            cmd.append(f"--ConfigurableHTTPProxy.command={self.proxy_command}")
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                cwd=self.state_dir,
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready(timeout)
            for gateway in self.gateways.values():
                wait_http(f"{gateway.url}/health", 30, self.proc)
        except Exception as exc:
            self.stop()
            raise RuntimeError(f"JupyterHub did not start ({exc}):\n{self.log_tail()}") from None

    def _wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the Hub exited {self.proc.returncode}")
            try:
                if requests.get(f"{self.api_base}/", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"the Hub did not answer in {timeout}s")

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM to the Hub's process group, as Ctrl-C does to `make up`: the Hub stops its
        proxy and services and keeps workspaces running."""
        if self.proc is not None:
            stop_process(self.proc, timeout)

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""

    def placements(self) -> list[dict[str, Any]]:
        """The placement registry's view, read from its database in the state folder."""
        from codeyard.placement.database import open_db
        from codeyard.placement.registry import Registry

        sessions = open_db(f"sqlite:///{self.state_dir / 'placement.sqlite'}")
        try:
            return list(Registry(sessions).list_placements())
        finally:
            sessions.kw["bind"].dispose()

    def request(self, method: str, path: str, body: Any = None, **kw: Any) -> requests.Response:
        """Hub REST API as the admin test service; `body` is sent as JSON."""
        headers = kw.pop("headers", {})
        headers["Authorization"] = f"token {self.admin_token}"
        if body is not None:
            kw["json"] = body
        url = f"{self.api_base}/{path.lstrip('/')}"
        return requests.request(method, url, headers=headers, timeout=30, **kw)

    def api(self, method: str, path: str, **kw: Any) -> requests.Response:
        """Hub REST API as the admin test service, the answer as it came."""
        return self.request(method, path, **kw)

    def api_json(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        """Hub REST API as the admin test service: the decoded answer; HTTP errors raise."""
        r = self.request(method, path, body, **kw)
        r.raise_for_status()
        return r.json() if r.content else None

    def user_token(self, user: str, scopes: list[str] | None = None) -> str:
        """A fresh API token for `user` (created if needed) with the given scopes."""
        r = self.request("POST", f"users/{user}")
        if r.status_code != 409:
            r.raise_for_status()
        body: dict[str, Any] = {"note": "test"}
        if scopes is not None:
            body["scopes"] = scopes
        return str(self.api_json("POST", f"users/{user}/tokens", body)["token"])

    def token_for(self, user: str, **body: Any) -> str:
        """A fresh API token for the existing `user`; `body` as the Hub's token API takes it."""
        return str(self.api_json("POST", f"users/{user}/tokens", body)["token"])


@dataclass
class JsonApiHub(HubProcess):
    """A minimal Hub as the gateway and placement suites use it: `api()` answers the decoded
    JSON and raises on HTTP errors, and a few attributes also go by those suites' names."""

    project: bool = False
    admin_scopes: tuple[str, ...] = MINIMAL_ADMIN_SCOPES

    def api(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:  # type: ignore[override]
        return self.api_json(method, path, body, **kw)

    @property
    def workdir(self) -> Path:
        return self.state_dir

    @property
    def public_url(self) -> str:
        """The proxy's URL (only with `proxy_command`): Hub and services on one origin."""
        return self.url

    @property
    def service_token(self) -> str:
        """The placement admin service's Hub API token."""
        return self.placement_token

    def placement_service_env(self, prefix: str, port: int) -> dict[str, str]:
        """The JUPYTERHUB_* variables this Hub gives its placement service when it manages it,
        for a test that runs the service as the Hub would: served at `prefix` on `port`."""
        return {
            "JUPYTERHUB_API_URL": self.api_url,
            "JUPYTERHUB_API_TOKEN": self.service_token,
            "JUPYTERHUB_CLIENT_ID": "service-codeyard-placement",
            "JUPYTERHUB_SERVICE_NAME": "codeyard-placement",
            "JUPYTERHUB_SERVICE_PREFIX": prefix,
            "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}",
            "JUPYTERHUB_BASE_URL": "/",
            "JUPYTERHUB_OAUTH_CALLBACK_URL": prefix + "oauth_callback",
        }
