"""A running workspace whose machine dies, for real: the project Hub notices within a bounded
time, shows ERROR with the reason, marks the host down, and the next start either moves the
workspace (shared storage) or fails at once saying an admin must confirm the move.

Three namespace machines of this module's own (`support.machines.start_machines`, never the
run's shared ones, because they are killed here): `lone` keeps homes on its private disk,
`roam1` and `roam2` share one folder of this box as their storage root (as NFS would). The
Hub's own engine (`local`) is drained, so placement must choose among them.

Two deaths, two ways a machine goes:

- `lone` loses its dockerd (SIGKILL) and its network link: the engine's TLS endpoint stops
  answering at all, the case that hangs a client without time limits;
- `roam1` loses only its dockerd: the endpoint refuses connections.

The bound asserted is the documented one (docs/multi-machine.md, "When a machine dies"):
`poll_interval` plus its 10% jitter plus `engine_status_timeout`, with a few seconds of slack
for a loaded box. Short values are configured here (`POLL_INTERVAL`, `ENGINE_TIMEOUT`); the
measured times are printed.

The tests run in file order and share one Hub and the three machines.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import HubLauncher
from support.browser import wait_gone, wait_ready
from support.contents_api import write_text
from support.hub import PROJECT_ADMIN_SCOPES, HubProcess
from support.hub_workspaces import registry_of, server_model
from support.machines import Machine, can_run_machines, start_machines

from codeyard.placement.models import ServerState

pytestmark = pytest.mark.slow

POLL_INTERVAL = 3  # CODEYARD_POLL_INTERVAL, the Hub's Spawner.poll_interval
ENGINE_TIMEOUT = 4.0  # PlacementSpawner.engine_status_timeout
POLL_JITTER = 0.1  # JupyterHub's default Spawner.poll_jitter
SLACK = 6.0  # a loaded 2-core box: the Hub's callbacks, the registry write, our own polling
BOUND = POLL_INTERVAL * (1 + POLL_JITTER) + ENGINE_TIMEOUT + SLACK
SITE_CONFIG = f"""
c.PlacementSpawner.engine_status_timeout = {ENGINE_TIMEOUT}
"""
# The admin test service may also use the placement service's API, as an admin does.
ADMIN_SCOPES = (
    *PROJECT_ADMIN_SCOPES,
    "custom:codeyard-admin",
    "access:services!service=codeyard-placement",
)
TIMES: dict[str, float] = {}


@pytest.fixture(scope="module")
def trio(image: str) -> Iterator[dict[str, Machine]]:
    """Three machines of this module's own, the image loaded into each."""
    if why := can_run_machines():
        pytest.skip(f"namespace machines unavailable: {why}")
    with start_machines(3) as running:
        with ThreadPoolExecutor(3) as pool:
            took = list(pool.map(lambda m: m.load_image(image), running))
        print(f"\nimage loaded into the machines in {', '.join(f'{t:.0f}s' for t in took)}")
        yield dict(zip(("lone", "roam1", "roam2"), running, strict=True))


@pytest.fixture(scope="module")
def shared_storage() -> Iterator[Path]:
    """A folder of this box both roam machines see at the same path (their NFS)."""
    path = Path(tempfile.mkdtemp(prefix="cy-death-shared-", dir="/var/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def death_hub(hubs: HubLauncher, trio: dict[str, Machine]) -> Iterator[HubProcess]:
    with hubs.running(
        "hubstate-death",
        extra_env={"CODEYARD_HUB_IP": "0.0.0.0", "CODEYARD_POLL_INTERVAL": str(POLL_INTERVAL)},
        site_config=SITE_CONFIG,
        admin_scopes=ADMIN_SCOPES,
    ) as hub:
        yield hub


@pytest.fixture(scope="module")
def token(death_hub: HubProcess, users) -> dict[str, str]:
    return {"Authorization": f"token {death_hub.user_token(users.alice)}"}


def status_of(hub: HubProcess, user: str, ws: str) -> dict[str, Any]:
    r = hub.api("GET", f"/codeyard/workspaces/{user}/{ws}/status")
    assert r.status_code == 200, r.text
    return r.json()


def spawn(hub: HubProcess, user: str, ws: str) -> requests.Response:
    return hub.api("POST", f"/users/{user}/servers/{ws}", json={"profile": "small"})


def spawn_ready(hub: HubProcess, user: str, ws: str) -> float:
    started = time.monotonic()
    r = spawn(hub, user, ws)
    assert r.status_code in (201, 202), r.text
    wait_ready(hub, user, ws, timeout=300, poll=0.3)
    return time.monotonic() - started


def put_file(hub: HubProcess, token: dict[str, str], user: str, ws: str, text: str) -> None:
    write_text(f"{hub.url}/user/{user}/{ws}", "notes.txt", text, token)


def kill_dockerd(m: Machine) -> None:
    """SIGKILL the machine's dockerd and reap it (this process started it)."""
    os.kill(m.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if os.waitpid(m.pid, os.WNOHANG)[0]:
                return
        except ChildProcessError:
            return
        time.sleep(0.05)


def wait_hub_notices(hub: HubProcess, user: str, ws: str, since: float) -> float:
    """Seconds from `since` until the Hub no longer counts `user/ws` as running. Only the
    Hub's model is read meanwhile: the status API checks the engine itself and would make
    the loss known sooner than the Hub's own poll."""
    while server_model(hub, user, ws) is not None:
        assert time.monotonic() < since + 120, f"the Hub never noticed\n{hub.log_tail()}"
        time.sleep(0.25)
    return time.monotonic() - since


def test_register_the_machines_and_drain_local(
    death_hub: HubProcess, trio: dict[str, Machine], shared_storage: Path
) -> None:
    registry = registry_of(death_hub)
    for role, m in trio.items():
        shared = role != "lone"
        server = registry.add_server(
            m.registration(
                region="far",
                storage_root=str(shared_storage) if shared else m.storage_root,
                storage_shared=shared,
            )
        )
        assert server["storage_shared"] is shared
    assert registry.set_state("local", ServerState.draining)["state"] == "draining"


def test_machine_without_shared_storage_dies(
    death_hub: HubProcess, trio: dict[str, Machine], users, token: dict[str, str]
) -> None:
    lone, user, ws = trio["lone"], users.alice, "lone"
    registry = registry_of(death_hub)
    registry.pin(user, ws, lone.name)  # the first start only: a pin is used up by placing
    TIMES["spawn lone"] = spawn_ready(death_hub, user, ws)
    status = status_of(death_hub, user, ws)
    assert (status["state"], status["host"]) == ("RUNNING", lone.name), status
    put_file(death_hub, token, user, ws, "left on lone")

    # The machine goes away entirely: no engine, no link. Its endpoint answers nothing.
    killed = time.monotonic()
    kill_dockerd(lone)
    subprocess.run(["ip", "link", "set", lone.veth, "down"], check=True)

    took = wait_hub_notices(death_hub, user, ws, killed)
    TIMES["noticed lone (no answer)"] = took
    print(f"\nthe Hub noticed {lone.name} gone (link down) in {took:.1f}s (bound {BOUND:.1f}s)")
    assert took <= BOUND, f"{took:.1f}s > {BOUND:.1f}s\n{death_hub.log_tail()}"

    t0 = time.monotonic()
    status = status_of(death_hub, user, ws)
    TIMES["status lone"] = time.monotonic() - t0
    assert status["state"] == "ERROR", status
    assert status["reason"].startswith(f"machine {lone.name} unreachable since "), status
    assert TIMES["status lone"] < 3, "the status API waited on the dead machine"
    assert registry.get_server(lone.name)["state"] == "down"

    # The next start fails at once: its files are on the dead machine.
    t0 = time.monotonic()
    r = spawn(death_hub, user, ws)
    message = r.text
    if r.status_code in (201, 202):  # the Hub answered before the start failed
        while True:
            status = status_of(death_hub, user, ws)
            if not status["pending"] and status["state"] == "ERROR":
                message = status["reason"]
                break
            assert time.monotonic() < t0 + 30, status
            time.sleep(0.3)
    TIMES["refused lone"] = time.monotonic() - t0
    print(f"start refused in {TIMES['refused lone']:.1f}s: {message}")
    assert TIMES["refused lone"] < 8, "the start waited on the dead machine"
    assert "An admin must confirm" in message and "confirm the move" in message, message
    assert f"data stays on {lone.name}" in message, message
    assert server_model(death_hub, user, ws) is None
    status = status_of(death_hub, user, ws)
    assert status["state"] == "ERROR" and "confirm the move" in status["reason"], status

    # An admin confirms on the placement service; the workspace starts elsewhere, empty.
    r = requests.post(
        f"{death_hub.url}/services/codeyard-placement/api/workspaces/{user}/{ws}/confirm-move",
        headers={"Authorization": f"token {death_hub.admin_token}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    TIMES["respawn lone elsewhere"] = spawn_ready(death_hub, user, ws)
    status = status_of(death_hub, user, ws)
    assert status["state"] == "RUNNING" and status["host"] != lone.name, status
    assert status["host"] in (trio["roam1"].name, trio["roam2"].name), status
    r = requests.get(
        f"{death_hub.url}/user/{user}/{ws}/api/contents/notes.txt", headers=token, timeout=30
    )
    assert r.status_code == 404, r.text  # its files stayed on the dead machine
    r = death_hub.api("DELETE", f"/users/{user}/servers/{ws}")
    assert r.status_code in (202, 204), r.text
    wait_gone(death_hub, user, ws, poll=0.3)


def test_machine_with_shared_storage_dies_and_the_workspace_moves(
    death_hub: HubProcess, trio: dict[str, Machine], users, token: dict[str, str]
) -> None:
    first, second, user, ws = trio["roam1"], trio["roam2"], users.alice, "roam"
    registry = registry_of(death_hub)
    registry.pin(user, ws, first.name)
    TIMES["spawn roam"] = spawn_ready(death_hub, user, ws)
    status = status_of(death_hub, user, ws)
    assert (status["state"], status["host"]) == ("RUNNING", first.name), status
    put_file(death_hub, token, user, ws, "on shared storage")

    # Only the engine dies: its endpoint refuses connections.
    killed = time.monotonic()
    kill_dockerd(first)
    took = wait_hub_notices(death_hub, user, ws, killed)
    TIMES["noticed roam1 (refused)"] = took
    print(
        f"\nthe Hub noticed {first.name} gone (engine killed) in {took:.1f}s (bound {BOUND:.1f}s)"
    )
    assert took <= BOUND, f"{took:.1f}s > {BOUND:.1f}s\n{death_hub.log_tail()}"
    status = status_of(death_hub, user, ws)
    assert status["state"] == "ERROR", status
    assert status["reason"].startswith(f"machine {first.name} unreachable since "), status
    assert registry.get_server(first.name)["state"] == "down"

    # The next start moves it to the other machine of the shared storage, files intact.
    TIMES["respawn roam elsewhere"] = spawn_ready(death_hub, user, ws)
    status = status_of(death_hub, user, ws)
    assert (status["state"], status["host"]) == ("RUNNING", second.name), status
    r = requests.get(
        f"{death_hub.url}/user/{user}/{ws}/api/contents/notes.txt", headers=token, timeout=30
    )
    assert r.status_code == 200 and r.json()["content"] == "on shared storage", r.text
    view = registry.get_placement(user, ws)
    assert f"moved from {first.name} (down)" in view["reason"], view
    print("\ntimes: " + ", ".join(f"{k} {v:.1f}s" for k, v in TIMES.items()))
