"""The warm pool on a real Hub, real dockerd and real containers (docs/warm-pool.md).

One project Hub; its local engine is the registry's only host. The tests run in order on
that Hub: an empty pool starts cold with the usual progress; with a pool size the pool
fills; a claimed workspace is its own user's only (a second user on the same host, after
the first, sees none of the first's files, environment, tokens, processes or kernels);
two users claiming at once get different containers; pooled containers count against the
host's capacity; a swarm host refuses a pool size with 400.

A second Hub has a home quota (docs/home-quota.md): each home is its own loop-mounted ext4
file system, which the quota helper binds into the claimed container's slot. Its tests: a
claim is still warm, the home inside is the quota'd file system of the quota's size, a
write past the quota fails with ENOSPC and loses nothing else, and after the stop the next
user's claim sees none of the first user's files.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import requests
from conftest import Users, running_hub
from support.hub import HubProcess
from support.hub_workspaces import registry_of
from support.hub_workspaces import spawn_with_progress as spawn
from support.mounts import mounts_under, unmount_all_under

from codeyard.placement import pool
from codeyard.placement.shapes import RegistryError
from codeyard.spawner import warm_pool

POOL_LABEL = "codeyard.pool"
STORAGE_LABEL = "codeyard.pool.storage"


@contextlib.contextmanager
def _pool_hub_at(
    state: Path,
    image: str,
    proxy_command: str,
    users: Users,
    docker_client: docker.APIClient,
    site_config: str = "",
) -> Iterator[HubProcess]:
    """A Hub with the test users made, on the local engine; afterwards the warm containers
    and the home helper (they carry the storage root, not a user) are removed, and the
    homes' loop mounts, the slots' binds and the storage root's shared bind, which are the
    host's, are undone before the homes folder goes."""
    try:
        with running_hub(
            state, image, proxy_command, users, docker_client, site_config=site_config
        ) as proc:
            r = proc.api("POST", "/users", json={"usernames": users.all()})
            assert r.status_code == 201, r.text
            yield proc
    finally:
        root = str(state / "homes")
        for c in docker_client.containers(all=True, filters={"label": f"{STORAGE_LABEL}={root}"}):
            docker_client.remove_container(c["Id"], force=True)
        unmount_all_under(state / "homes")
        shutil.rmtree(state / "homes", ignore_errors=True)


@pytest.fixture(scope="module")
def pool_hub(
    tmp_path_factory: pytest.TempPathFactory,
    image: str,
    proxy_command: str,
    users: Users,
    docker_client: docker.APIClient,
) -> Iterator[HubProcess]:
    state = tmp_path_factory.mktemp("hubstate-pool")
    with _pool_hub_at(state, image, proxy_command, users, docker_client) as proc:
        yield proc


def local_host(hub: HubProcess) -> str:
    servers = registry_of(hub).list_servers()
    assert len(servers) == 1, servers
    return servers[0]["name"]


def set_host(hub: HubProcess, **fields: Any) -> dict[str, Any]:
    return dict(registry_of(hub).update_server(local_host(hub), fields))


def warm_containers(hub: HubProcess, client: docker.APIClient) -> list[dict[str, Any]]:
    """This Hub's warm containers not yet claimed: running, and still recorded in the
    registry (a claim deletes the row; the container keeps its labels)."""
    root = str(hub.state_dir / "homes")
    recorded = set(pool.recorded(registry_of(hub).sessions, local_host(hub)))
    found = client.containers(filters={"label": f"{STORAGE_LABEL}={root}"})
    return [c for c in found if POOL_LABEL in c["Labels"] and c["Names"][0].lstrip("/") in recorded]


def wait_warm(hub: HubProcess, client: docker.APIClient, n: int, timeout: float = 240) -> None:
    """Until the registry counts `n` warm containers and `n` of them wait for a claim."""
    deadline = time.monotonic() + timeout
    while True:
        load = registry_of(hub).get_server(local_host(hub))["load"]
        waiting = [
            c
            for c in warm_containers(hub, client)
            if b"waiting for a claim" in client.logs(c["Id"])
        ]
        if load["pooled"] == n and len(waiting) >= n:
            # The Hub probes each launcher before handing it out; give it that moment.
            time.sleep(1.0)
            return
        assert time.monotonic() < deadline, (
            f"pool never reached {n}: registry {load}, waiting {len(waiting)}\n{hub.log_tail()}"
        )
        time.sleep(0.5)


def stop(hub: HubProcess, user: str, ws: str) -> None:
    hub.api("DELETE", f"/users/{user}/servers/{ws}")
    deadline = time.monotonic() + 120
    while ws in hub.api("GET", f"/users/{user}").json()["servers"]:
        assert time.monotonic() < deadline, hub.log_tail()
        time.sleep(0.3)


def container_of(hub: HubProcess, user: str, ws: str) -> str:
    """The container name in the server's state (admin:server_state)."""
    user_model = hub.api("GET", f"/users/{user}").json()
    state = user_model["servers"][ws]["state"]
    return str(state["object_name"])


def claim_warm(hub: HubProcess, user: str, ws: str) -> str:
    """Start `user`'s `ws` and check that it claimed a warm container rather than creating
    one; that container's name."""
    messages = spawn(hub, user, ws)
    assert "Claiming a warm workspace" in messages, messages
    assert "Creating container" not in messages, messages
    container = container_of(hub, user, ws)
    assert container.startswith("codeyard-pool-")
    return container


def token(hub: HubProcess, user: str) -> dict[str, str]:
    return {"Authorization": f"token {hub.token_for(user, note='pool test')}"}


def base(hub: HubProcess, user: str, ws: str) -> str:
    return f"{hub.url}/user/{user}/{ws}"


def exec_out(client: docker.APIClient, cid: str, cmd: list[str]) -> str:
    ex = client.exec_create(cid, cmd, user="1000:1000")
    return client.exec_start(ex["Id"]).decode("utf-8", "replace")


# ---- the tests, in order ------------------------------------------------------------------


def test_pool_size_on_a_swarm_host_is_refused(pool_hub: HubProcess) -> None:
    registry = registry_of(pool_hub)
    registry.add_server(
        {
            "name": "swarm-nopool",
            "endpoint": "unix:///nonexistent/docker.sock",
            "kind": "swarm",
            "state": "draining",
        }
    )
    try:
        with pytest.raises(RegistryError) as refused:
            registry.update_server("swarm-nopool", {"pool_size": 1})
        assert refused.value.status == 400
        assert "not supported on a swarm host" in str(refused.value)
        assert registry.get_server("swarm-nopool")["pool_size"] == 0
    finally:
        registry.delete_server("swarm-nopool")


def test_empty_pool_starts_cold_with_the_usual_progress(
    pool_hub: HubProcess, users: Users, docker_client: docker.APIClient
) -> None:
    assert registry_of(pool_hub).get_server(local_host(pool_hub))["pool_size"] == 0
    messages = spawn(pool_hub, users.alice, "cold")
    assert "Creating container" in messages, messages
    assert "Starting Jupyter server" in messages, messages
    assert not any("warm" in m for m in messages), messages
    assert not container_of(pool_hub, users.alice, "cold").startswith("codeyard-pool-")
    assert warm_containers(pool_hub, docker_client) == []
    stop(pool_hub, users.alice, "cold")


def test_pool_fills_to_its_size(pool_hub: HubProcess, docker_client: docker.APIClient) -> None:
    server = set_host(pool_hub, pool_size=1)
    assert server["pool_size"] == 1
    wait_warm(pool_hub, docker_client, 1)
    (warm,) = warm_containers(pool_hub, docker_client)
    info = docker_client.inspect_container(warm["Id"])
    hc = info["HostConfig"]
    # The same hardening as every workspace.
    assert hc["CapDrop"] == ["ALL"] and hc["ReadonlyRootfs"] is True
    assert "no-new-privileges:true" in hc["SecurityOpt"]
    assert hc["PidsLimit"] == 1024
    assert hc["NetworkMode"] == "codeyard-workspaces"
    # No user's anything before a claim.
    env = "\n".join(info["Config"]["Env"])
    assert "JUPYTERHUB_API_TOKEN" not in env and "JUPYTERHUB_USER" not in env


def test_claimed_workspaces_in_a_row_share_nothing(
    pool_hub: HubProcess, users: Users, docker_client: docker.APIClient
) -> None:
    marker = f"alice-only-{secrets.token_hex(8)}"
    alice_headers = token(pool_hub, users.alice)
    alice_container = claim_warm(pool_hub, users.alice, "w")
    alice_base = base(pool_hub, users.alice, "w")
    # Her files, her token, her kernel, her environment.
    r = requests.put(
        f"{alice_base}/api/contents/secret.txt",
        json={"type": "file", "format": "text", "content": marker},
        headers=alice_headers,
        timeout=30,
    )
    assert r.status_code in (200, 201), r.text
    r = requests.get(f"{alice_base}/codeyard/api/tree", headers=alice_headers, timeout=30)
    assert r.status_code == 200, r.text
    r = requests.post(f"{alice_base}/api/kernels", json={}, headers=alice_headers, timeout=60)
    assert r.status_code == 201, r.text
    info = docker_client.inspect_container(alice_container)
    assert info["HostConfig"]["Memory"] == 2 * 1024**3  # the small profile's limit
    server_env = exec_out(
        docker_client, alice_container, ["sh", "-c", "cat /proc/*/environ | tr '\\0' '\\n'"]
    )
    assert f"JUPYTERHUB_USER={users.alice}" in server_env
    assert f"{users.bob}" not in server_env
    # Each process of the server and its kernels: no pool secret once claimed.
    kernels_env = exec_out(
        docker_client,
        alice_container,
        [
            "sh",
            "-c",
            # The bracket keeps this shell's own command line from matching.
            "for p in /proc/[0-9]*; do grep -qs 'ipykernel_launche[r]' $p/cmdline"
            " && tr '\\0' '\\n' < $p/environ; done",
        ],
    )
    assert "JUPYTERHUB_API_TOKEN=" in kernels_env
    assert "CODEYARD_POOL_SECRET" not in kernels_env
    alice_token = alice_headers["Authorization"].split()[1]
    stop(pool_hub, users.alice, "w")
    # The home is back in its place, with her file; her container is gone for good.
    home = pool_hub.state_dir / "homes" / users.alice / "w"
    assert [p.read_text() for p in home.rglob("secret.txt")] == [marker]
    with pytest.raises(docker.errors.NotFound):
        docker_client.inspect_container(alice_container)
    slots = pool_hub.state_dir / "homes" / ".pool"
    assert not any(p.name == info["Config"]["Labels"]["codeyard.pool.slot"] for p in _ls(slots))

    # The pool refills to its size, and bob gets a different container on the same host.
    wait_warm(pool_hub, docker_client, 1)
    bob_headers = token(pool_hub, users.bob)
    messages = spawn(pool_hub, users.bob, "w")
    assert "Claiming a warm workspace" in messages, messages
    bob_container = container_of(pool_hub, users.bob, "w")
    assert bob_container.startswith("codeyard-pool-") and bob_container != alice_container
    bob_base = base(pool_hub, users.bob, "w")
    r = requests.get(f"{bob_base}/codeyard/api/tree", headers=bob_headers, timeout=30)
    assert r.status_code == 200, r.text
    assert marker not in r.text and "secret.txt" not in r.text
    r = requests.get(f"{bob_base}/api/me", headers=bob_headers, timeout=30)
    assert r.status_code == 200 and r.json()["identity"]["username"] == users.bob, r.text
    r = requests.get(f"{bob_base}/api/kernels", headers=bob_headers, timeout=30)
    assert r.status_code == 200 and r.json() == [], r.text
    # Alice's token does not open bob's workspace.
    r = requests.get(
        f"{bob_base}/api/contents",
        headers={"Authorization": f"token {alice_token}"},
        timeout=30,
        allow_redirects=False,
    )
    assert r.status_code in (302, 403), r.status_code
    everything = exec_out(
        docker_client,
        bob_container,
        [
            "sh",
            "-c",
            "cat /proc/*/environ /proc/*/cmdline 2>/dev/null | tr '\\0' '\\n';"
            " grep -rs . /home /tmp 2>/dev/null | head -c 2000000; ls -laR /home /tmp",
        ],
    )
    assert users.alice not in everything
    assert alice_token not in everything
    assert marker not in everything
    processes = exec_out(
        docker_client, bob_container, ["sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '"]
    )
    assert "codeyard.server_extension.warm_launcher" in processes
    assert "ipykernel" not in processes
    stop(pool_hub, users.bob, "w")


def test_two_claims_at_once_get_different_containers(
    pool_hub: HubProcess, users: Users, docker_client: docker.APIClient
) -> None:
    set_host(pool_hub, pool_size=2)
    wait_warm(pool_hub, docker_client, 2)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda u: spawn(pool_hub, u, "both"), [users.alice, users.bob]))
    for messages in results:
        assert "Claiming a warm workspace" in messages, messages
    a = container_of(pool_hub, users.alice, "both")
    b = container_of(pool_hub, users.bob, "both")
    assert a.startswith("codeyard-pool-") and b.startswith("codeyard-pool-") and a != b
    for user in (users.alice, users.bob):
        headers = token(pool_hub, user)
        r = requests.get(f"{base(pool_hub, user, 'both')}/api/status", headers=headers, timeout=30)
        assert r.status_code == 200, r.text
    stop(pool_hub, users.alice, "both")
    stop(pool_hub, users.bob, "both")


def helper_events(client: docker.APIClient, since: float) -> list[dict[str, Any]]:
    """Docker events since `since` of the helper containers: the home helper
    (`codeyard-pool-homes-*`, its execs included) and the quota helper (`codeyard.helper`
    label), in any state."""
    events = client.events(since=int(since), until=int(time.time()) + 1, decode=True)
    found = []
    for event in events:
        attrs = (event.get("Actor") or {}).get("Attributes") or {}
        if event.get("Type") == "container" and (
            attrs.get("codeyard.helper") or attrs.get("name", "").startswith("codeyard-pool-homes-")
        ):
            found.append(event)
    return found


def test_a_claim_on_the_hubs_own_machine_runs_no_helper(
    pool_hub: HubProcess, users: Users, docker_client: docker.APIClient
) -> None:
    """The storage root is the Hub's own file system and the Hub runs as root: the home
    moves in and out by an in-process rename, with no helper container and no exec."""
    wait_warm(pool_hub, docker_client, 2)
    since = time.time() - 1
    claim_warm(pool_hub, users.alice, "fast")
    headers = token(pool_hub, users.alice)
    r = requests.put(
        f"{base(pool_hub, users.alice, 'fast')}/api/contents/fast.txt",
        json={"type": "file", "format": "text", "content": "fast"},
        headers=headers,
        timeout=30,
    )
    assert r.status_code in (200, 201), r.text
    stop(pool_hub, users.alice, "fast")
    home = pool_hub.state_dir / "homes" / users.alice / "fast"
    assert [p.read_text() for p in home.rglob("fast.txt")] == ["fast"], "the home did not come back"
    assert os.stat(home).st_uid == 1000
    assert helper_events(docker_client, since) == []
    root = str(pool_hub.state_dir / "homes")
    helpers = docker_client.containers(
        all=True, filters={"label": ["codeyard.helper", f"{STORAGE_LABEL}={root}"]}
    )
    assert helpers == [], helpers


def test_pooled_containers_count_against_capacity(
    pool_hub: HubProcess, users: Users, docker_client: docker.APIClient
) -> None:
    # Room for two containers in all: a pool of 3 fills only that room.
    set_host(pool_hub, pool_size=3, max_workspaces=2)
    wait_warm(pool_hub, docker_client, 2)
    time.sleep(5)  # a few refill rounds: still two
    server = registry_of(pool_hub).get_server(local_host(pool_hub))
    assert server["load"]["pooled"] == 2 and server["load"]["running"] == 0
    assert server["load"]["load"] == 1.0
    assert len(warm_containers(pool_hub, docker_client)) == 2
    # A user claims one: the user and the remaining warm container fill the host.
    messages = spawn(pool_hub, users.alice, "cap")
    assert "Claiming a warm workspace" in messages, messages
    time.sleep(5)
    server = registry_of(pool_hub).get_server(local_host(pool_hub))
    assert server["load"]["running"] == 1 and server["load"]["pooled"] == 1, server["load"]
    assert len(warm_containers(pool_hub, docker_client)) == 1
    stop(pool_hub, users.alice, "cap")
    # No pool size: the warm containers go.
    set_host(pool_hub, pool_size=0, max_workspaces=0)
    deadline = time.monotonic() + 60
    while warm_containers(pool_hub, docker_client):
        assert time.monotonic() < deadline, pool_hub.log_tail()
        time.sleep(0.5)
    assert registry_of(pool_hub).get_server(local_host(pool_hub))["load"]["pooled"] == 0


def _ls(folder: Path) -> list[Path]:
    """What a root test process sees in `folder` (the slots' folder is not listable by
    the workspace uid, on purpose)."""
    try:
        return list(folder.iterdir())
    except FileNotFoundError:
        return []


# ---- with a home quota: the home is a mount point, bound into the slot at claim -------------

QUOTA = 64 * 1024 * 1024
QUOTA_CONFIG = """
c.PlacementSpawner.home_quota = "64M"
c.PlacementSpawner.home_quota_keep_free = "256M"
"""


@pytest.fixture(scope="module")
def quota_hub(
    tmp_path_factory: pytest.TempPathFactory,
    image: str,
    proxy_command: str,
    users: Users,
    docker_client: docker.APIClient,
) -> Iterator[HubProcess]:
    state = tmp_path_factory.mktemp("hubstate-pool-quota")
    with _pool_hub_at(
        state, image, proxy_command, users, docker_client, site_config=QUOTA_CONFIG
    ) as proc:
        yield proc


@pytest.fixture(scope="module")
def quota_marker() -> str:
    """A string only alice's quota'd home holds."""
    return f"alice-quota-only-{secrets.token_hex(8)}"


def exec_code(client: docker.APIClient, cid: str, script: str) -> tuple[int, str]:
    """Run `script` in `cid` as the workspace uid; its exit code and output."""
    ex = client.exec_create(cid, ["sh", "-c", script], user="1000:1000")
    out = client.exec_start(ex["Id"]).decode("utf-8", "replace")
    return client.exec_inspect(ex["Id"])["ExitCode"], out


def test_with_a_quota_a_claim_is_warm_and_the_home_is_its_file_system(
    quota_hub: HubProcess, users: Users, docker_client: docker.APIClient, quota_marker: str
) -> None:
    set_host(quota_hub, pool_size=1)
    wait_warm(quota_hub, docker_client, 1)
    (warm,) = warm_containers(quota_hub, docker_client)
    info = docker_client.inspect_container(warm["Id"])
    hc = info["HostConfig"]
    # Still no capability and no privilege: only mounts under its own slot reach it.
    assert hc["Privileged"] is False and hc["CapDrop"] == ["ALL"] and not hc["CapAdd"]
    assert hc["ReadonlyRootfs"] is True
    (slot_mount,) = [m for m in info["Mounts"] if m["Destination"] == "/home"]
    assert slot_mount["Propagation"] == "rslave", slot_mount

    messages = spawn(quota_hub, users.alice, "q")
    assert "Claiming a warm workspace" in messages, messages
    assert "Creating container" not in messages, messages
    assert not any("No warm workspace" in m for m in messages), messages
    alice_container = container_of(quota_hub, users.alice, "q")
    assert alice_container == warm["Names"][0].lstrip("/")

    # The home on the host is its own file system of the quota's size...
    home = quota_hub.state_dir / "homes" / users.alice / "q"
    assert str(home) in mounts_under(home), mounts_under(quota_hub.state_dir)
    fs = os.statvfs(home)
    size = fs.f_blocks * fs.f_frsize
    assert QUOTA // 2 < size <= QUOTA, size
    # ...and it is what the claimed container has at its home: same size, same files.
    headers = token(quota_hub, users.alice)
    r = requests.put(
        f"{base(quota_hub, users.alice, 'q')}/api/contents/marker.txt",
        json={"type": "file", "format": "text", "content": quota_marker},
        headers=headers,
        timeout=30,
    )
    assert r.status_code in (200, 201), r.text
    assert [p.read_text() for p in home.rglob("marker.txt")] == [quota_marker]
    code, out = exec_code(
        docker_client, alice_container, "df -B1 --output=size /home/jovyan | tail -1"
    )
    assert code == 0 and int(out.split()[-1]) == size, out

    # A write past the quota fails at once and loses nothing else.
    code, out = exec_code(
        docker_client,
        alice_container,
        "cd /home/jovyan && echo kept > keep && dd if=/dev/zero of=fill bs=1M count=128 2>&1;"
        " echo rc=$?; cat keep",
    )
    assert code == 0 and "No space left on device" in out, out
    assert "rc=0" not in out and out.rstrip().endswith("kept"), out
    assert (home / "fill").stat().st_size < QUOTA
    assert (home / "keep").read_text() == "kept\n"
    assert [p.read_text() for p in home.rglob("marker.txt")] == [quota_marker]
    assert (home.with_name("q.img")).stat().st_size == QUOTA, "the image grew past its quota"
    code, out = exec_code(docker_client, alice_container, "rm /home/jovyan/fill && echo ok")
    assert code == 0, out
    r = requests.get(
        f"{base(quota_hub, users.alice, 'q')}/api/contents/marker.txt", headers=headers, timeout=30
    )
    assert r.status_code == 200 and r.json()["content"] == quota_marker, r.text

    stop(quota_hub, users.alice, "q")
    # The container is gone for good, its slot with it; the home is still mounted at its
    # own folder, with her files, and no bind of it is left anywhere under the slots.
    with pytest.raises(docker.errors.NotFound):
        docker_client.inspect_container(alice_container)
    slots = quota_hub.state_dir / "homes" / ".pool"
    slot = info["Config"]["Labels"]["codeyard.pool.slot"]
    assert not any(p.name == slot for p in _ls(slots))
    assert mounts_under(slots) == [], mounts_under(slots)
    assert str(home) in mounts_under(home)
    assert (home / "keep").read_text() == "kept\n"


def test_with_a_quota_the_next_claim_sees_nothing_of_the_first(
    quota_hub: HubProcess, users: Users, docker_client: docker.APIClient, quota_marker: str
) -> None:
    alice_home = quota_hub.state_dir / "homes" / users.alice / "q"
    assert [p.read_text() for p in alice_home.rglob("marker.txt")] == [quota_marker]
    wait_warm(quota_hub, docker_client, 1)
    bob_container = claim_warm(quota_hub, users.bob, "q")
    bob_home = quota_hub.state_dir / "homes" / users.bob / "q"
    # His own file system, not hers.
    assert str(bob_home) in mounts_under(bob_home)
    assert os.stat(bob_home).st_dev != os.stat(alice_home).st_dev
    code, out = exec_code(
        docker_client, bob_container, "df -B1 --output=size /home/jovyan | tail -1"
    )
    fs = os.statvfs(bob_home)
    assert code == 0 and int(out.split()[-1]) == fs.f_blocks * fs.f_frsize <= QUOTA, out
    headers = token(quota_hub, users.bob)
    r = requests.get(
        f"{base(quota_hub, users.bob, 'q')}/codeyard/api/tree", headers=headers, timeout=30
    )
    assert r.status_code == 200, r.text
    assert quota_marker not in r.text and "marker.txt" not in r.text
    code, everything = exec_code(
        docker_client,
        bob_container,
        "cat /proc/*/environ /proc/*/cmdline 2>/dev/null | tr '\\0' '\\n';"
        " grep -rs . /home /tmp 2>/dev/null | head -c 2000000; ls -laR /home /tmp;"
        " cat /proc/self/mountinfo",
    )
    assert users.alice not in everything
    assert quota_marker not in everything
    stop(quota_hub, users.bob, "q")
    slots = quota_hub.state_dir / "homes" / ".pool"
    assert mounts_under(slots) == [], mounts_under(slots)
    set_host(quota_hub, pool_size=0)


def test_with_a_quota_a_claim_on_the_hubs_own_machine_runs_no_helper_container(
    quota_hub: HubProcess, users: Users, docker_client: docker.APIClient, quota_marker: str
) -> None:
    """Alice's home is made and mounted already: her next start checks that the home is
    the mount of its own image, binds it into the slot and, at stop, unmounts the bind, all
    in the Hub's process. No quota helper container runs, and the bind still reaches the
    running warm container through its `rslave` slot."""
    alice_home = quota_hub.state_dir / "homes" / users.alice / "q"
    assert str(alice_home) in mounts_under(alice_home)
    set_host(quota_hub, pool_size=1)
    wait_warm(quota_hub, docker_client, 1)
    since = time.time() - 1
    container = claim_warm(quota_hub, users.alice, "q")
    code, out = exec_code(docker_client, container, "cat /home/jovyan/keep")
    assert code == 0 and out == "kept\n", out
    code, out = exec_code(docker_client, container, "df -B1 --output=size /home/jovyan | tail -1")
    fs = os.statvfs(alice_home)
    assert code == 0 and int(out.split()[-1]) == fs.f_blocks * fs.f_frsize <= QUOTA, out
    slots = quota_hub.state_dir / "homes" / ".pool"
    assert len(mounts_under(slots)) == 1, mounts_under(slots)
    stop(quota_hub, users.alice, "q")
    assert mounts_under(slots) == [], mounts_under(slots)
    assert str(alice_home) in mounts_under(alice_home)
    assert [p.read_text() for p in alice_home.rglob("marker.txt")] == [quota_marker]
    assert helper_events(docker_client, since) == []
    set_host(quota_hub, pool_size=0)


# ---- the in-process home moves themselves: symlinks are refused, never followed -----------

SLOT = "0123456789abcdef01234567"


def _homes(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(storage root, alice's home `w` with a file, an empty slot): as the Hub lays them out,
    owned by the workspace uid."""
    root = tmp_path / "homes"
    home = root / "alice" / "w"
    home.mkdir(parents=True)
    (home / "mine.txt").write_text("mine")
    for p in (root / "alice", home, home / "mine.txt"):
        os.chown(p, 1000, 1000)
    warm_pool.make_slot_locally(str(root), SLOT, 1000)
    slot = root / ".pool" / SLOT
    return root, home, slot


def test_in_process_moves_keep_the_home_its_owner_and_remove_the_slot(tmp_path: Path) -> None:
    root, home, slot = _homes(tmp_path)
    assert (os.stat(root / ".pool").st_mode & 0o7777) == 0o1733
    assert os.stat(slot).st_uid == 1000 and (os.stat(slot).st_mode & 0o777) == 0o755
    # What a warm server left at the home's name is not the user's: it goes.
    (slot / "jovyan" / ".cache").mkdir(parents=True)
    (slot / "jovyan" / ".cache" / "x").write_text("warm")
    warm_pool.move_in_locally(str(root), "alice", "w", SLOT, "jovyan")
    assert not home.exists()
    assert (slot / "jovyan" / "mine.txt").read_text() == "mine"
    assert not (slot / "jovyan" / ".cache").exists()
    assert os.stat(slot / "jovyan").st_uid == 1000
    (slot / "runtime").write_text("left by the server")
    warm_pool.move_out_locally(str(root), "alice", "w", SLOT, "jovyan")
    assert (home / "mine.txt").read_text() == "mine" and os.stat(home).st_uid == 1000
    assert not slot.exists()
    # Idempotent: done once more, nothing changes.
    warm_pool.move_out_locally(str(root), "alice", "w", SLOT, "jovyan")
    assert (home / "mine.txt").read_text() == "mine"


def test_in_process_move_in_refuses_a_symlink_at_the_home(tmp_path: Path) -> None:
    root, home, slot = _homes(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    home.rename(elsewhere)
    home.symlink_to(elsewhere)
    (slot / "jovyan").mkdir()
    with pytest.raises(RuntimeError, match="not a folder"):
        warm_pool.move_in_locally(str(root), "alice", "w", SLOT, "jovyan")
    # Nothing moved, nothing removed.
    assert home.is_symlink() and (elsewhere / "mine.txt").read_text() == "mine"
    assert (slot / "jovyan").is_dir() and not (slot / "jovyan").is_symlink()


def test_in_process_move_in_refuses_a_symlink_at_the_slot_or_the_user_folder(
    tmp_path: Path,
) -> None:
    root, home, slot = _homes(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    slot.rmdir()
    slot.symlink_to(elsewhere)
    with pytest.raises(OSError):
        warm_pool.move_in_locally(str(root), "alice", "w", SLOT, "jovyan")
    assert (home / "mine.txt").read_text() == "mine" and os.listdir(elsewhere) == []
    # The user folder planted as a symlink: refused too.
    (root / "alice").rename(root / "alice-real")
    (root / "alice").symlink_to(root / "alice-real")
    slot.unlink()
    warm_pool.make_slot_locally(str(root), SLOT, 1000)
    with pytest.raises(OSError):
        warm_pool.move_in_locally(str(root), "alice", "w", SLOT, "jovyan")
    assert (root / "alice-real" / "w" / "mine.txt").read_text() == "mine"
    assert os.listdir(slot) == []
    with pytest.raises(ValueError):
        warm_pool.move_in_locally(str(root), "alice", "w", "../alice", "jovyan")
    with pytest.raises(ValueError):
        warm_pool.move_in_locally(str(root), "..", "w", SLOT, "jovyan")


def test_in_process_move_in_removes_a_symlink_planted_in_the_slot_without_following_it(
    tmp_path: Path,
) -> None:
    root, _home, slot = _homes(tmp_path)
    target = tmp_path / "precious"
    target.mkdir()
    (target / "keep.txt").write_text("keep")
    (slot / "jovyan").symlink_to(target)
    warm_pool.move_in_locally(str(root), "alice", "w", SLOT, "jovyan")
    assert not (slot / "jovyan").is_symlink()
    assert (slot / "jovyan" / "mine.txt").read_text() == "mine"
    assert (target / "keep.txt").read_text() == "keep"


def test_in_process_move_out_refuses_a_symlink_left_at_the_home_in_the_slot(
    tmp_path: Path,
) -> None:
    """A user may rename their home inside the slot (it is their container's /home) and
    leave a symlink in its place. Moving that link back would make it the home that the
    next container binds: refused, the slot and the home in it stay for an admin."""
    root, home, slot = _homes(tmp_path)
    warm_pool.move_in_locally(str(root), "alice", "w", SLOT, "jovyan")
    (slot / "jovyan").rename(slot / "moved")
    (slot / "jovyan").symlink_to("/etc")
    with pytest.raises(RuntimeError, match="not a folder"):
        warm_pool.move_out_locally(str(root), "alice", "w", SLOT, "jovyan")
    assert not os.path.lexists(home)
    assert (slot / "moved" / "mine.txt").read_text() == "mine"
    assert (slot / "jovyan").is_symlink()


def test_in_process_slot_removal_never_enters_another_file_system(tmp_path: Path) -> None:
    root, _home, slot = _homes(tmp_path)
    (slot / "jovyan").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(slot / "jovyan")], check=True)
    try:
        (slot / "jovyan" / "bound.txt").write_text("a home bound here")
        with pytest.raises(OSError, match="another file system"):
            warm_pool.remove_slot_locally(str(root), SLOT)
        assert (slot / "jovyan" / "bound.txt").read_text() == "a home bound here"
    finally:
        subprocess.run(["umount", "-l", str(slot / "jovyan")], check=False)
    warm_pool.remove_slot_locally(str(root), SLOT)
    assert not slot.exists()


def test_the_home_helpers_move_out_refuses_a_symlink_left_at_the_home(tmp_path: Path) -> None:
    """Remote hosts move homes back with the home helper's script: it refuses a symlink at
    the home's place in the slot the same way (run here with the host's `sh`)."""
    slot, user = tmp_path / "slot", tmp_path / "user"
    (slot / "moved").mkdir(parents=True)
    user.mkdir()
    (slot / "jovyan").symlink_to("/etc")
    script = warm_pool.move_out_command("alice", "w", SLOT, "jovyan")[:3]
    args = ["move-out", str(slot / "jovyan"), str(user / "w"), str(slot)]
    done = subprocess.run([*script, *args], capture_output=True, text=True)
    assert done.returncode == 4, done
    assert not os.path.lexists(user / "w") and (slot / "moved").is_dir()
    # A real folder moves back, and the slot goes.
    (slot / "jovyan").unlink()
    (slot / "jovyan").mkdir()
    done = subprocess.run([*script, *args], capture_output=True, text=True)
    assert done.returncode == 0, done
    assert (user / "w").is_dir() and not slot.exists()
