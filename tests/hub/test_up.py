"""`make up` (hub_config/bin/up.sh): it brings the Hub up, says how to become admin, and
Ctrl-C stops exactly what it started."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests
from support.hub import DOCKER_BRIDGE_IP, REPO
from support.processes import free_port

from codeyard.placement.database import open_db
from codeyard.placement.registry import Registry

pytestmark = pytest.mark.slow


def alive(pid: int) -> bool:
    """Whether `pid` still runs. A zombie has stopped: it holds no port, memory or file, only
    its exit status, and reaping an orphan is init's job (this sandbox's init is slow at it)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    state = next(ln.split()[1] for ln in status.splitlines() if ln.startswith("State:"))
    return state != "Z"


def test_up_starts_the_hub_and_ctrl_c_stops_what_it_started(
    tmp_path: Path, image: str, proxy_command: str
) -> None:
    port = free_port()
    env = dict(
        os.environ,
        CODEYARD_STATE=str(tmp_path / "state"),
        CODEYARD_BIND_URL=f"http://127.0.0.1:{port}",
        CODEYARD_HUB_PORT=str(free_port(DOCKER_BRIDGE_IP)),
        CODEYARD_PROXY_API_PORT=str(free_port()),
        CODEYARD_ADMIN="root-admin",
        CODEYARD_CULL_TIMEOUT="613",
        CODEYARD_PLACEMENT_PORT=str(free_port()),
        # The embedded registry would listen on this box's own address, which tests do not
        # use; the registry path has its own tests on an address the tests make
        # (tests/placement/test_image_distribution.py).
        CODEYARD_REGISTRY="none",
    )
    out = tmp_path / "up.log"
    with open(out, "wb") as log:
        # Its own session, like a terminal: Ctrl-C goes to the whole foreground group.
        proc = subprocess.Popen(
            [str(REPO / "hub_config" / "bin" / "up.sh")],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    state = tmp_path / "state"
    try:
        deadline = time.monotonic() + 600
        while True:
            assert proc.poll() is None, out.read_text()[-3000:]
            assert time.monotonic() < deadline, out.read_text()[-3000:]
            try:
                if requests.get(f"http://127.0.0.1:{port}/hub/api/", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        text = out.read_text()
        assert f"http://127.0.0.1:{port}" in text
        assert 'sign up as "root-admin"' in text
        secrets = ("jupyterhub_cookie_secret", "crypt_key", "proxy_token", "metrics_token")
        for name in (*secrets, "placement_crypt_key"):
            assert (state / name).stat().st_mode & 0o777 == 0o600
        # the placement registry is the default, with this machine's engine in it, and its
        # admin service answers behind the Hub's proxy (sending a browser to log in first)
        registry = Registry(open_db(f"sqlite:///{state / 'placement.sqlite'}"))
        [local] = registry.list_servers()
        assert (local["name"], local["endpoint"]) == ("local", "unix:///var/run/docker.sock")
        assert local["storage_root"] == str(state / "homes") and local["state"] == "active"
        r = requests.get(
            f"http://127.0.0.1:{port}/services/codeyard-placement/",
            allow_redirects=False,
            timeout=10,
        )
        assert r.status_code == 302 and "/hub/api/oauth2/authorize" in r.headers["Location"]
        hub_pid = int((state / "jupyterhub.pid").read_text())
        proxy_pid = int((state / "proxy.pid").read_text())
        deadline = time.monotonic() + 30
        while "idle-culler" not in out.read_text():
            assert time.monotonic() < deadline, "idle culler service not started"
            time.sleep(0.5)
        culler = subprocess.run(
            ["pgrep", "-f", "jupyterhub_idle_culler.*--timeout=613"],
            capture_output=True,
            text=True,
        ).stdout.split()
        assert culler, "idle culler is not running"
        # The Hub runs in the background with SIGINT ignored and stops its services with
        # SIGINT, waiting 10 s before SIGTERM: the culler must not inherit the ignore.
        for pid in culler:
            status = Path(f"/proc/{pid}/status").read_text()
            ignored = int(
                next(ln.split()[1] for ln in status.splitlines() if ln.startswith("SigIgn:")), 16
            )
            assert not ignored & (1 << (signal.SIGINT - 1)), f"idle culler {pid} ignores SIGINT"
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(60)
    assert not alive(hub_pid) and not alive(proxy_pid)
    assert not any(alive(int(p)) for p in culler)
    # dockerd was already running, so up.sh left it alone.
    assert subprocess.run(["/usr/bin/docker", "info"], capture_output=True).returncode == 0
