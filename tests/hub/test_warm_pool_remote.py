"""The warm pool on another machine, for real (docs/warm-pool.md, docs/multi-machine.md).

On the Hub's own machine a claim renames the home in the Hub's process
(tests/hub/test_warm_pool.py). On any other machine the Hub cannot touch the homes: the
per-host home helper container (no capabilities, no network, the home's uid) moves the home
into the claimed container's slot and back out with `docker exec` over that machine's
engine API. These tests drive that path end to end on a namespace machine
(`support.machines`: its own network stack, its own engine, its own disk for homes), with
one project Hub whose own engine is drained, so the machine is the only place to go:

- an admin sets the machine's pool size through the placement service's API and the pool
  fills there: the warm container, its slot and the home helper are on the machine's
  engine and storage, none on the Hub's;
- a spawn claims that container (no cold start), the workspace works through the proxy,
  and a file written through the Contents API lands in the user's home inside the slot, on
  the machine's disk only;
- a stop moves the home back out and removes the slot; the next start claims the next warm
  container with the same home; another user's claim after that sees nothing of the first
  user's; a pool size of 0 removes the last warm container and its slot through the helper.

The image is copied onto the machine before the Hub starts (`Machine.load_image`: nothing
when the run's shared machine has it already); how it gets there is
tests/hub/test_remote_machine.py's subject. The tests run in file order and share one Hub,
one machine and a pool of one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import requests
from conftest import HubLauncher, Users
from support.contents_api import write_text
from support.hub import PROJECT_ADMIN_SCOPES, HubProcess
from support.hub_workspaces import registry_of, spawn_with_progress
from support.machines import Machine

from codeyard.placement import pool
from codeyard.placement.models import ServerState
from codeyard.spawner.warm_pool import (
    HELPER_KIND,
    POOL_DIR,
    POOL_LABEL,
    SLOT_LABEL,
    STORAGE_LABEL,
    helper_name,
)

# Copying the image onto a machine of our own is about a minute on a loaded 2-core box.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

WS = "w"
#: What only alice's home holds.
MARKER = f"alice-remote-only-{secrets.token_hex(8)}"
# The admin test service may also use the placement service's API, as an admin does.
ADMIN_SCOPES = (
    *PROJECT_ADMIN_SCOPES,
    "custom:codeyard-admin",
    "access:services!service=codeyard-placement",
)
#: What the tests learn on the way and the later ones check: warm container names, slots.
SEEN: dict[str, str] = {}


def _remove_left_on_machine(machine: Machine, users: Users) -> None:
    """What this module's Hub left on a machine that may outlive it (the run's shared one):
    its users' containers and homes, and the warm containers, home helper and slots of the
    machine's storage root (one Hub at a time uses that root)."""
    slots = []
    with machine.client() as c:
        labels = [f"{STORAGE_LABEL}={machine.storage_root}"]
        labels += [f"codeyard.user={name}" for name in users.all()]
        for label in labels:
            for found in c.api.containers(all=True, filters={"label": label}):
                if SLOT_LABEL in found["Labels"]:
                    slots.append(found["Labels"][SLOT_LABEL])
                with contextlib.suppress(docker.errors.NotFound):
                    c.api.remove_container(found["Id"], force=True)
    paths = [f"{machine.storage_root}/{name}" for name in users.all()]
    paths += [f"{machine.storage_root}/{POOL_DIR}/{slot}" for slot in slots]
    on_machine(machine, "rm", "-rf", "--one-file-system", "--", *paths)


@pytest.fixture(scope="module")
def remote_hub(hubs: HubLauncher, users: Users, machine: Machine) -> Iterator[HubProcess]:
    """The Hub on every interface (the machine's containers reach its API at the test
    bridge's gateway), its users made, the machine registered and the Hub's own engine
    drained."""
    try:
        with hubs.running(
            "hubstate-warm-remote",
            extra_env={"CODEYARD_HUB_IP": "0.0.0.0"},
            admin_scopes=ADMIN_SCOPES,
        ) as hub:
            r = hub.api("POST", "/users", json={"usernames": users.all()})
            assert r.status_code == 201, r.text
            registry = registry_of(hub)
            registry.add_server(machine.registration(region="far", storage_shared=False))
            assert registry.set_state("local", ServerState.draining)["state"] == "draining"
            yield hub
    finally:
        _remove_left_on_machine(machine, users)


def on_machine(machine: Machine, *cmd: str) -> subprocess.CompletedProcess[str]:
    """Run `cmd` in the machine's own mount namespace (where its storage root is mounted)."""
    return subprocess.run(
        ["nsenter", "-t", str(machine.pid), "-m", *cmd], capture_output=True, text=True
    )


def exists_on_machine(machine: Machine, path: str) -> bool:
    return on_machine(machine, "test", "-e", path).returncode == 0


def set_pool_size(hub: HubProcess, machine: Machine, size: int) -> None:
    """An admin's pool size for the machine, through the placement service's API."""
    r = requests.patch(
        f"{hub.url}/services/codeyard-placement/api/servers/{machine.name}",
        json={"pool_size": size},
        headers={"Authorization": f"token {hub.admin_token}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert r.json()["pool_size"] == size, r.json()


def warm_on_machine(hub: HubProcess, machine: Machine) -> list[dict[str, Any]]:
    """The machine's warm containers not yet claimed: running, and still recorded in the
    registry (a claim deletes the row; the container keeps its labels)."""
    recorded = set(pool.recorded(registry_of(hub).sessions, machine.name))
    with machine.client() as c:
        found = c.api.containers(filters={"label": f"{STORAGE_LABEL}={machine.storage_root}"})
    return [c for c in found if POOL_LABEL in c["Labels"] and c["Names"][0].lstrip("/") in recorded]


def wait_warm(hub: HubProcess, machine: Machine, n: int, timeout: float = 300) -> None:
    """Until the registry counts `n` warm containers on the machine and `n` of them wait
    for a claim there."""
    deadline = time.monotonic() + timeout
    while True:
        load = registry_of(hub).get_server(machine.name)["load"]
        with machine.client() as c:
            waiting = [
                w
                for w in warm_on_machine(hub, machine)
                if b"waiting for a claim" in c.api.logs(w["Id"])
            ]
        if load["pooled"] == n and len(waiting) >= n:
            # The Hub probes each launcher before handing it out; give it that moment.
            time.sleep(1.0)
            return
        assert time.monotonic() < deadline, (
            f"pool never reached {n} on {machine.name}: registry {load},"
            f" waiting {len(waiting)}\n{hub.log_tail()}"
        )
        time.sleep(0.5)


def inspect_on_machine(machine: Machine, name: str) -> dict[str, Any]:
    with machine.client() as c:
        info: dict[str, Any] = c.api.inspect_container(name)
    return info


def gone_from_machine(machine: Machine, name: str) -> bool:
    with machine.client() as c:
        try:
            c.api.inspect_container(name)
        except docker.errors.NotFound:
            return True
    return False


def container_of(hub: HubProcess, user: str, ws: str) -> str:
    """The container name in the server's state (admin:server_state)."""
    state = hub.api("GET", f"/users/{user}").json()["servers"][ws]["state"]
    return str(state["object_name"])


def stop(hub: HubProcess, user: str, ws: str) -> None:
    r = hub.api("DELETE", f"/users/{user}/servers/{ws}")
    assert r.status_code in (202, 204), r.text
    deadline = time.monotonic() + 120
    while ws in hub.api("GET", f"/users/{user}").json()["servers"]:
        assert time.monotonic() < deadline, hub.log_tail()
        time.sleep(0.3)


def headers_for(hub: HubProcess, user: str) -> dict[str, str]:
    return {"Authorization": f"token {hub.token_for(user, note='remote pool test')}"}


def base(hub: HubProcess, user: str, ws: str) -> str:
    return f"{hub.url}/user/{user}/{ws}"


def exec_on_machine(machine: Machine, container: str, script: str) -> tuple[int, str]:
    """Run `script` in `container` on the machine as the workspace uid; its exit code and
    output."""
    with machine.client() as c:
        ex = c.api.exec_create(container, ["sh", "-c", script], user="1000:1000")
        out = c.api.exec_start(ex["Id"]).decode("utf-8", "replace")
        return int(c.api.exec_inspect(ex["Id"])["ExitCode"]), out


def claim(hub: HubProcess, machine: Machine, user: str) -> tuple[str, str]:
    """Start `user`'s workspace, which must claim the machine's one warm container; that
    container's name and slot."""
    wait_warm(hub, machine, 1)
    (warm,) = warm_on_machine(hub, machine)
    name = warm["Names"][0].lstrip("/")
    messages = spawn_with_progress(hub, user, WS)
    assert "Claiming a warm workspace" in messages, messages
    assert "Creating container" not in messages, messages
    assert not any("No warm workspace" in m for m in messages), f"{messages}\n{hub.log_tail()}"
    assert container_of(hub, user, WS) == name
    return name, warm["Labels"][SLOT_LABEL]


# ---- the tests, in order ------------------------------------------------------------------


def test_the_pool_fills_on_the_machine(
    remote_hub: HubProcess, machine: Machine, docker_client: docker.APIClient
) -> None:
    assert warm_on_machine(remote_hub, machine) == []
    set_pool_size(remote_hub, machine, 1)
    wait_warm(remote_hub, machine, 1)
    (warm,) = warm_on_machine(remote_hub, machine)
    name, slot = warm["Names"][0].lstrip("/"), warm["Labels"][SLOT_LABEL]
    info = inspect_on_machine(machine, name)
    # Published on the machine's address, its slot bound from the machine's storage root.
    bindings = info["HostConfig"]["PortBindings"]
    assert {b["HostIp"] for port in bindings.values() for b in port} == {machine.ip}, bindings
    slot_folder = f"{machine.storage_root}/{POOL_DIR}/{slot}"
    mounts = {m["Destination"]: m["Source"] for m in info["Mounts"]}
    assert mounts["/home"] == slot_folder, mounts
    assert exists_on_machine(machine, slot_folder)
    assert not os.path.exists(slot_folder), f"{slot_folder} exists on the Hub's machine"
    env = "\n".join(info["Config"]["Env"])
    assert "JUPYTERHUB_API_TOKEN" not in env and "JUPYTERHUB_USER" not in env
    # The home helper made the slot there: it runs on the machine, hardened.
    helper = inspect_on_machine(machine, helper_name(machine.storage_root))
    assert helper["State"]["Running"], helper["State"]
    assert helper["Config"]["Labels"]["codeyard.helper"] == HELPER_KIND
    assert helper["HostConfig"]["CapDrop"] == ["ALL"], helper["HostConfig"]
    assert helper["HostConfig"]["NetworkMode"] == "none"
    assert helper["Config"]["User"] == "1000:1000"
    # Nothing of the machine's pool runs on the Hub's own engine.
    for found in (name, helper_name(machine.storage_root)):
        with pytest.raises(docker.errors.NotFound):
            docker_client.inspect_container(found)
    mine = docker_client.containers(
        all=True, filters={"label": f"{STORAGE_LABEL}={machine.storage_root}"}
    )
    assert mine == [], mine


def test_a_spawn_claims_the_warm_container_on_the_machine(
    remote_hub: HubProcess, machine: Machine, users: Users, docker_client: docker.APIClient
) -> None:
    name, slot = claim(remote_hub, machine, users.alice)
    SEEN["first"], SEEN["first slot"] = name, slot
    info = inspect_on_machine(machine, name)
    assert info["State"]["Running"], info["State"]
    assert info["Config"]["Labels"][SLOT_LABEL] == slot
    with pytest.raises(docker.errors.NotFound):
        docker_client.inspect_container(name)
    assert inspect_on_machine(machine, helper_name(machine.storage_root))["State"]["Running"]

    headers = headers_for(remote_hub, users.alice)
    at = base(remote_hub, users.alice, WS)
    r = requests.get(
        f"{at}/codeyard/api/tree", params={"path": "", "depth": "2"}, headers=headers, timeout=60
    )
    assert r.status_code == 200, r.text
    assert isinstance(r.json()["entries"], list), r.json()
    r = requests.get(f"{at}/api/me", headers=headers, timeout=30)
    assert r.status_code == 200 and r.json()["identity"]["username"] == users.alice, r.text
    write_text(at, "notes.txt", MARKER, headers)

    # The home is in the slot on the machine's disk while the workspace runs, not at its
    # own place, and nothing of it is on the Hub's machine.
    in_slot = on_machine(
        machine, "cat", f"{machine.storage_root}/{POOL_DIR}/{slot}/jovyan/work/notes.txt"
    )
    assert in_slot.returncode == 0 and in_slot.stdout == MARKER, in_slot
    home = f"{machine.storage_root}/{users.alice}/{WS}"
    assert not exists_on_machine(machine, home)
    assert exists_on_machine(machine, f"{machine.storage_root}/{users.alice}")
    assert not os.path.exists(f"{machine.storage_root}/{users.alice}")
    assert not any(Path(machine.storage_root).iterdir())


def test_after_stop_the_home_is_back_and_the_next_claim_has_it(
    remote_hub: HubProcess, machine: Machine, users: Users
) -> None:
    first, first_slot = SEEN["first"], SEEN["first slot"]
    stop(remote_hub, users.alice, WS)
    home = f"{machine.storage_root}/{users.alice}/{WS}"
    back = on_machine(machine, "cat", f"{home}/work/notes.txt")
    assert back.returncode == 0 and back.stdout == MARKER, (back, remote_hub.log_tail())
    owner = on_machine(machine, "stat", "-c", "%u:%g", home)
    assert owner.stdout.strip() == "1000:1000", owner
    assert not exists_on_machine(machine, f"{machine.storage_root}/{POOL_DIR}/{first_slot}")
    assert gone_from_machine(machine, first)

    # The pool refilled on the machine; the same home moves into the next container's slot.
    name, slot = claim(remote_hub, machine, users.alice)
    assert name != first and slot != first_slot
    headers = headers_for(remote_hub, users.alice)
    r = requests.get(
        f"{base(remote_hub, users.alice, WS)}/api/contents/notes.txt", headers=headers, timeout=30
    )
    assert r.status_code == 200 and r.json()["content"] == MARKER, r.text
    stop(remote_hub, users.alice, WS)
    back = on_machine(machine, "cat", f"{home}/work/notes.txt")
    assert back.returncode == 0 and back.stdout == MARKER, back
    assert not exists_on_machine(machine, f"{machine.storage_root}/{POOL_DIR}/{slot}")
    assert gone_from_machine(machine, name)


def test_the_next_user_on_the_machine_sees_nothing_of_the_first(
    remote_hub: HubProcess, machine: Machine, users: Users
) -> None:
    name, slot = claim(remote_hub, machine, users.bob)
    headers = headers_for(remote_hub, users.bob)
    at = base(remote_hub, users.bob, WS)
    r = requests.get(
        f"{at}/codeyard/api/tree", params={"path": "", "depth": "3"}, headers=headers, timeout=60
    )
    assert r.status_code == 200, r.text
    assert MARKER not in r.text and "notes.txt" not in r.text, r.text
    r = requests.get(f"{at}/api/contents/notes.txt", headers=headers, timeout=30)
    assert r.status_code == 404, r.text
    r = requests.get(f"{at}/api/me", headers=headers, timeout=30)
    assert r.status_code == 200 and r.json()["identity"]["username"] == users.bob, r.text
    code, everything = exec_on_machine(
        machine,
        name,
        "cat /proc/*/environ /proc/*/cmdline 2>/dev/null | tr '\\0' '\\n';"
        " grep -rs . /home /tmp 2>/dev/null | head -c 2000000; ls -laR /home /tmp",
    )
    assert code == 0, everything
    assert users.alice not in everything
    assert MARKER not in everything
    stop(remote_hub, users.bob, WS)
    assert not exists_on_machine(machine, f"{machine.storage_root}/{POOL_DIR}/{slot}")
    # Alice's home was never touched.
    kept = on_machine(machine, "cat", f"{machine.storage_root}/{users.alice}/{WS}/work/notes.txt")
    assert kept.returncode == 0 and kept.stdout == MARKER, kept


def test_pool_size_zero_removes_the_warm_container_and_its_slot_on_the_machine(
    remote_hub: HubProcess, machine: Machine
) -> None:
    wait_warm(remote_hub, machine, 1)
    (warm,) = warm_on_machine(remote_hub, machine)
    name, slot = warm["Names"][0].lstrip("/"), warm["Labels"][SLOT_LABEL]
    set_pool_size(remote_hub, machine, 0)
    deadline = time.monotonic() + 120
    while not gone_from_machine(machine, name):
        assert time.monotonic() < deadline, remote_hub.log_tail()
        time.sleep(0.5)
    assert registry_of(remote_hub).get_server(machine.name)["load"]["pooled"] == 0
    # The slot goes after the container, through the helper: wait for that step too.
    slot_folder = f"{machine.storage_root}/{POOL_DIR}/{slot}"
    while exists_on_machine(machine, slot_folder):
        assert time.monotonic() < deadline, remote_hub.log_tail()
        time.sleep(0.5)
