"""Fixtures for the placement tests (run on their own: `.venv/bin/pytest tests/placement`).

Fixtures
--------
crypt_keys
    Two fresh Fernet keys `(new, old)`; sets `CODEYARD_PLACEMENT_CRYPT_KEY` to `old` only.
db_url
    A fresh SQLite file URL in `tmp_path` (nothing created yet).
registry
    A `Registry` on a fresh database at the newest revision, encrypting with `old`.
ca
    A throwaway `placement_pki.CA` (session scope) for certificates and TLS bundles.
engines
    Two real dockerd engines with TLS on 127.0.0.2 and 127.0.0.3 (session scope; see
    `placement_engines.py`), each `Engine(name, ip, port, endpoint, pid, ...)` with
    `.stop()`/`.start()`/`.kill()`; skipped with a reason when this machine cannot run dockerd.
sshd
    An OpenSSH server on 127.0.0.4 with key authentication only (session scope;
    `placement_sshd.SSHServer`: `.endpoint(remote_socket)`, `.client_key`, `.known_hosts`).
hub
    A real JupyterHub process (session scope; `support.hub.JsonApiHub`) that knows the placement
    service, the `custom:codeyard-admin` scope (granted to `admin1`, not to `dev1`), behind
    configurable-http-proxy when `hub_config/bin/install-proxy.sh` provides one.
hub_tokens
    `{"admin": <admin1's token>, "dev": <dev1's token>, "boss": <boss1's token>}`, created
    through the Hub API; boss1 is a Hub admin (`admin_users`), not a named placement admin.
service
    The placement service in-process (HubOAuth against `hub`) over `registry`; its
    `ServiceContext` with `.url` set to the service's base URL.
api
    `await api(method, "servers/1", token="admin"|"dev"|None, body=None) -> (status, json)`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import pytest_asyncio
from cryptography.fernet import Fernet
from placement_pki import CA
from support.hub import HUB_CONFIG, JsonApiHub

from codeyard.placement.crypto import KEY_ENV, CredentialCipher
from codeyard.placement.database import open_db
from codeyard.placement.registry import Registry


def pytest_configure(config: pytest.Config) -> None:
    # Other suites run pytest on this machine at the same time, and pytest prunes all but
    # the newest three /tmp/pytest-of-<user>/pytest-N folders: a private basetemp keeps
    # our session fixtures' state (Hub, sshd) from being deleted under them.
    if not config.option.basetemp:
        import tempfile

        config.option.basetemp = tempfile.mkdtemp(prefix="codeyard-placement-pytest-")
        config._codeyard_basetemp = config.option.basetemp  # type: ignore[attr-defined]


def pytest_unconfigure(config: pytest.Config) -> None:
    import shutil

    if path := getattr(config, "_codeyard_basetemp", None):
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def crypt_keys(monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    new, old = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    monkeypatch.setenv(KEY_ENV, old)
    return new, old


@pytest.fixture
def db_url(tmp_path) -> str:  # type: ignore[no-untyped-def]
    return f"sqlite:///{tmp_path / 'placement.sqlite'}"


@pytest.fixture
def registry(db_url: str, crypt_keys: tuple[str, str]) -> Registry:
    return Registry(open_db(db_url), CredentialCipher(os.environ[KEY_ENV]))


@pytest.fixture(scope="session")
def ca() -> CA:
    return CA()


@pytest.fixture(scope="session")
def engines(ca: CA) -> Iterator[list]:
    from placement_engines import can_run_engines, start_engines

    if why := can_run_engines():
        pytest.skip(f"extra Docker engines unavailable: {why}")
    with start_engines(ca, ["127.0.0.2", "127.0.0.3"]) as running:
        yield running


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    import shutil

    from placement_sshd import SSHServer

    if os.geteuid() != 0 or not shutil.which("ssh"):
        pytest.skip("needs root and the OpenSSH client")
    server = SSHServer("127.0.0.4", tmp_path_factory.mktemp("sshd"))
    server.start()
    yield server
    server.stop()


def _proxy_command() -> str:
    """configurable-http-proxy from the project's installer, or "" if it cannot be had."""
    import subprocess

    script = HUB_CONFIG / "bin" / "install-proxy.sh"
    if not script.exists():
        return ""
    out = subprocess.run([str(script)], capture_output=True, text=True, check=False)
    return out.stdout.strip().splitlines()[-1] if out.returncode == 0 and out.stdout.strip() else ""


# A tiny stand-in single-user server (JupyterHub's own test spawner) for the restart tests,
# two users of the dummy login, and no periodic Hub checks in the middle of a test.
PLACEMENT_HUB_CONFIG = """
c.JupyterHub.spawner_class = "jupyterhub.tests.mocking.MockSpawner"
c.JupyterHub.default_url = "/hub/home"
c.Authenticator.allowed_users = {"admin1", "dev1"}
c.Authenticator.admin_users = {"boss1"}
c.JupyterHub.check_running_interval = 3600
c.JupyterHub.last_activity_interval = 3600
"""


@pytest.fixture(scope="session")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JsonApiHub]:
    """A minimal Hub that knows the placement service (run in-process by `service`) and
    grants its admin scope to `admin1`; behind configurable-http-proxy when there is one."""
    h = JsonApiHub(
        state_dir=tmp_path_factory.mktemp("hub"),
        proxy_command=_proxy_command(),
        external_placement=True,
        placement_admins=("admin1",),
        site_config=PLACEMENT_HUB_CONFIG,
    )
    h.start()
    yield h
    h.stop()


@pytest.fixture(scope="session")
def hub_tokens(hub) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {
        "admin": hub.token_for("admin1"),
        "dev": hub.token_for("dev1"),
        "boss": hub.token_for("boss1"),  # a Hub admin (admin flag), not a named placement admin
    }


@pytest_asyncio.fixture
async def service(hub, registry: Registry):  # type: ignore[no-untyped-def]
    """The placement service in-process on the port the Hub knows, over `registry`."""
    from jupyterhub.services.auth import HubOAuth

    from codeyard.placement.service.app import make_app
    from codeyard.placement.service.context import ServiceContext

    prefix = "/services/codeyard-placement/"
    auth = HubOAuth(
        api_url=hub.api_url,
        api_token=hub.placement_token,
        oauth_client_id="service-codeyard-placement",
        base_url=prefix,
        hub_prefix="/hub/",
        cache_max_age=1,  # 0 would cache a token's model forever
    )
    ctx = ServiceContext(registry, auth)
    app = make_app(ctx, prefix)
    server = app.listen(hub.placement_port, "127.0.0.1")
    ctx.url = f"http://127.0.0.1:{hub.placement_port}{prefix}"
    yield ctx
    server.stop()
    await server.close_all_connections()
    ctx.executor.shutdown(wait=False)


@pytest.fixture
def api(service, hub_tokens):  # type: ignore[no-untyped-def]
    """`await api("GET", "servers", token="admin"|"dev"|None, body=...)` -> (status, json)."""
    import json as _json

    from tornado.httpclient import AsyncHTTPClient

    async def call(method: str, path: str, token: str | None = "admin", body=None):  # type: ignore[no-untyped-def]
        headers = {"Authorization": f"token {hub_tokens[token]}"} if token else {}
        if body is not None:
            body = _json.dumps(body)
        elif method in ("POST", "PATCH"):
            body = ""
        resp = await AsyncHTTPClient().fetch(
            service.url + "api/" + path,
            method=method,
            headers=headers,
            body=body,
            raise_error=False,
            follow_redirects=False,
            request_timeout=60,
        )
        data = _json.loads(resp.body) if resp.body else None
        return resp.code, data

    return call
