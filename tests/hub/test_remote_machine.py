"""A workspace on another machine, for real: the project Hub places it on a namespace machine
(`support.machines`: its own network stack, its own docker0 at 172.17.0.1, its own disk for
homes) and it works end to end.

The Hub listens on every interface (`CODEYARD_HUB_IP=0.0.0.0`, docs/multi-machine.md); the
machine is registered in the placement registry over TLS and the Hub's own engine (`local`)
is drained, so placement must choose the machine. What the workspace then does proves each
route: the proxy reaches its published port on the machine's address (Lab page, tree); the
container reaches the Hub API (the Lab page's OAuth, token checks, activity reports) and the
gateway (explain, with the shared vLLM) at the Hub's address on the machine's route, never
at 172.17.0.1, which there is the machine's own bridge. Its home is on the machine's private
storage: it survives stop and start, and the same path on the Hub's machine does not exist.

The image reaches the machine as in production: it is pushed to the run's registry
(`support.registry`, Debian's docker-registry with TLS and a login, whose login the Hub
config stores encrypted in the placement database), the machine holds no copy before the
spawn, and the spawn pulls it; the image on the machine then carries the registry's
manifest digest in its `RepoDigests` (a `docker save | load` would carry none).

The tests run in file order and share one Hub, one machine and one workspace. They print
the spawn time on the machine next to one on the Hub's own engine, measured in this run.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import requests
from conftest import HubLauncher
from support.browser import Browser, signed_in, user_token
from support.contents_api import write_text
from support.hub import HubProcess
from support.hub_workspaces import (
    explain_from_workspace,
    registry_of,
    server_model,
    spawn_and_time,
    stop,
)
from support.machines import Machine, can_run_machines, machines
from support.registry import REPO, RegistryServer, running_registry

from codeyard.placement.models import ServerState

# The first test's setup builds the image when the tree changed and pushes it (about 1 GB,
# minutes on a loaded 2-core box; skipped when the run's registry holds the tag already).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

PASSWORD = "correct-horse-battery-7"
WS = "far"
LOCAL_WS = "near"
# Activity reports every few seconds instead of JupyterHub's 300, so the test sees one.
SITE_CONFIG = """
c.Spawner.args = ["--CodeyardLLM.explain_max_tokens=60"]
c.Spawner.environment = {"JUPYTERHUB_ACTIVITY_INTERVAL": "5"}
"""
SPAWN_TIMES: dict[str, float] = {}


MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    )
)


@pytest.fixture(scope="module")
def registry_server() -> Iterator[RegistryServer]:
    with running_registry() as server:
        yield server


@pytest.fixture(scope="module")
def pushed(image: str, registry_server: RegistryServer) -> str:
    """The image pushed to the registry with the project's script (once per run: a tag the
    registry holds is skipped); returns `<registry>/<repository>@<digest>` as the registry
    itself names its manifest."""
    started = time.monotonic()
    out = subprocess.run(
        [str(REPO / "images" / "bin" / "push-image.sh"), image],
        env={**os.environ, **registry_server.env()},
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert out.returncode == 0, out.stderr
    print(f"\npush-image.sh {image}: {time.monotonic() - started:.1f}s")
    repo, tag = image.rsplit(":", 1)
    r = requests.head(
        f"https://{registry_server.address}/v2/{repo}/manifests/{tag}",
        headers={"Accept": MANIFEST_TYPES},
        auth=(registry_server.username, registry_server.password),
        verify=registry_server.ca_file,
        timeout=30,
    )
    assert r.status_code == 200, r.status_code
    return f"{registry_server.address}/{repo}@{r.headers['Docker-Content-Digest']}"


@pytest.fixture(scope="module")
def machine(image: str, registry_server: RegistryServer) -> Iterator[Machine]:
    """The run's machine (or one of our own), without the image: the spawn must pull it."""
    if why := can_run_machines():
        pytest.skip(f"namespace machines unavailable: {why}")
    with machines(1) as running:
        m = running[0]
        with m.client() as c:
            for name in (image, f"{registry_server.address}/{image}"):
                with contextlib.suppress(docker.errors.NotFound):
                    c.api.remove_image(name, force=True)
        assert not m.has_image(image)
        yield m


def _remove_user_containers(client: docker.APIClient, user: str) -> None:
    for c in client.containers(all=True, filters={"label": f"codeyard.user={user}"}):
        client.remove_container(c["Id"], force=True)


@pytest.fixture(scope="module")
def remote_hub(
    test_vllm: str,
    hubs: HubLauncher,
    users,
    machine: Machine,
    registry_server: RegistryServer,
    pushed: str,
) -> Iterator[HubProcess]:
    try:
        with hubs.running(
            "hubstate-remote",
            # The multi-machine settings: the Hub on every interface, the site's registry.
            extra_env={"CODEYARD_HUB_IP": "0.0.0.0", **registry_server.env()},
            site_config=SITE_CONFIG,
        ) as hub:
            yield hub
    finally:
        with machine.client() as c:
            for name in users.all():
                _remove_user_containers(c.api, name)


@pytest.fixture(scope="module")
def user(remote_hub: HubProcess, users) -> Browser:
    return signed_in(remote_hub.url, users.alice, PASSWORD)


@pytest.fixture(scope="module")
def token(user: Browser, users) -> dict[str, str]:
    return {"Authorization": f"token {user_token(user, users.alice, 'remote')}"}


def remote_container(machine: Machine, user: str, ws: str) -> dict[str, Any]:
    with machine.client() as c:
        found = c.api.containers(
            all=True, filters={"label": [f"codeyard.user={user}", f"codeyard.workspace={ws}"]}
        )
        assert len(found) == 1, found
        return c.api.inspect_container(found[0]["Id"])


def on_machine(machine: Machine, *cmd: str) -> subprocess.CompletedProcess[str]:
    """Run `cmd` in the machine's own mount namespace (where its storage root is mounted)."""
    return subprocess.run(
        ["nsenter", "-t", str(machine.pid), "-m", *cmd], capture_output=True, text=True
    )


def test_a_local_spawn_for_comparison(remote_hub: HubProcess, user: Browser, users) -> None:
    SPAWN_TIMES["local"] = spawn_and_time(remote_hub, user, users.alice, LOCAL_WS)
    status = user.api("GET", f"/codeyard/workspaces/{users.alice}/{LOCAL_WS}/status").json()
    assert status["host"] == "local", status
    stop(remote_hub, user, users.alice, LOCAL_WS)


def test_register_the_machine_and_drain_local(remote_hub: HubProcess, machine: Machine) -> None:
    registry = registry_of(remote_hub)
    server = registry.add_server(machine.registration(region="far", storage_shared=False))
    # Derived from the route: the Hub's address on the test bridge, the machine's address.
    assert server["addresses"]["hub_connect_ip"] == machine.gateway, server
    assert server["addresses"]["publish_ip"] == machine.ip, server
    assert registry.set_state("local", ServerState.draining)["state"] == "draining"


def test_workspace_spawns_on_the_machine(
    remote_hub: HubProcess, user: Browser, machine: Machine, users, image: str, pushed: str
) -> None:
    SPAWN_TIMES["remote"] = spawn_and_time(remote_hub, user, users.alice, WS)
    status = user.api("GET", f"/codeyard/workspaces/{users.alice}/{WS}/status").json()
    assert status["state"] == "RUNNING" and status["host"] == machine.name, status
    print(
        f"\nspawn seconds: local {SPAWN_TIMES.get('local', float('nan')):.1f}"
        f" remote {SPAWN_TIMES['remote']:.1f} (first start on {machine.name}: the image"
        " pulled from the registry within it)"
    )


def test_the_image_came_from_the_registry(
    remote_hub: HubProcess,
    machine: Machine,
    users,
    image: str,
    pushed: str,
    registry_server: RegistryServer,
) -> None:
    with machine.client() as c:
        info = c.api.inspect_image(image)
    assert pushed in info["RepoDigests"], (pushed, info["RepoDigests"])
    assert remote_container(machine, users.alice, WS)["Image"] == info["Id"]
    # The Hub recorded the path for the host page.
    shown = {i["image"]: i for i in registry_of(remote_hub).host_images()[machine.name]}
    assert (shown[image]["path"], shown[image]["digest"]) == ("registry", pushed), shown
    # The login the pull used is the one the Hub config stored, encrypted, from its settings.
    stored = registry_of(remote_hub).registry_logins.list()
    assert [(s["registry"], s["username"]) for s in stored] == [
        (registry_server.address, registry_server.username)
    ], stored
    assert registry_server.password not in repr(stored)


def test_container_is_told_the_hub_on_its_own_route(
    remote_hub: HubProcess, machine: Machine, users
) -> None:
    info = remote_container(machine, users.alice, WS)
    env = dict(e.split("=", 1) for e in info["Config"]["Env"])
    hub_url = f"http://{machine.gateway}:{remote_hub.hub_port}"
    assert env["JUPYTERHUB_API_URL"] == f"{hub_url}/hub/api", env
    assert env["JUPYTERHUB_ACTIVITY_URL"].startswith(f"{hub_url}/hub/api/users/"), env
    assert env["CODEYARD_LLM_URL"] == f"http://{machine.gateway}:{remote_hub.llm_port}", env
    # The tokenizer is a file on the Hub's disk: neither mounted nor named here.
    assert "CODEYARD_TOKENIZER_FILE" not in env, env
    assert "172.17.0.1" not in " ".join(env.values())
    # Published on the machine's address, which is where the proxy goes.
    bindings = info["HostConfig"]["PortBindings"]
    assert {b["HostIp"] for port in bindings.values() for b in port} == {machine.ip}, bindings


def test_lab_page_through_the_proxy(
    remote_hub: HubProcess, user: Browser, token: dict[str, str], users
) -> None:
    base = f"{remote_hub.url}/user/{users.alice}/{WS}/"
    # The OAuth dance: the container calls the Hub API to finish it.
    page = user.s.get(f"{base}lab", timeout=60)
    assert page.status_code == 200 and page.url == f"{base}lab", page.status_code
    r = requests.get(
        f"{base}codeyard/api/tree", params={"path": "", "depth": "2"}, headers=token, timeout=60
    )
    assert r.status_code == 200, r.text
    assert isinstance(r.json()["entries"], list)


def test_patch_apply_and_explain_through_the_gateway(
    remote_hub: HubProcess, token: dict[str, str], users
) -> None:
    base = f"{remote_hub.url}/user/{users.alice}/{WS}"
    diff = "--- /dev/null\n+++ b/made.txt\n@@ -0,0 +1 @@\n+made on the machine\n"
    r = requests.post(f"{base}/codeyard/api/patch/apply", json={"diff": diff}, headers=token)
    assert r.status_code == 200, r.text
    r = requests.get(f"{base}/api/contents/made.txt", headers=token, timeout=30)
    assert r.status_code == 200 and r.json()["content"] == "made on the machine\n", r.text

    body, elapsed = explain_from_workspace(remote_hub, base, token)
    assert body["text"].strip() and body["usage"]["completion_tokens"] > 0, body
    print(f"\nexplain from the machine in {elapsed:.1f}s")


def test_activity_reaches_the_hub(remote_hub: HubProcess, token: dict[str, str], users) -> None:
    before = (server_model(remote_hub, users.alice, WS) or {})["last_activity"]
    time.sleep(1.5)
    base = f"{remote_hub.url}/user/{users.alice}/{WS}"
    deadline = time.monotonic() + 90
    while True:
        # Use the server directly, not through the Hub's pages, so only its report counts.
        requests.get(f"{base}/api/contents", headers=token, timeout=30)
        now = (server_model(remote_hub, users.alice, WS) or {})["last_activity"]
        if now and now > before:
            break
        assert time.monotonic() < deadline, f"stayed {before}\n{remote_hub.log_tail()}"
        time.sleep(3)


def test_files_survive_stop_and_start_on_the_machine_only(
    remote_hub: HubProcess, user: Browser, token: dict[str, str], machine: Machine, users
) -> None:
    base = f"{remote_hub.url}/user/{users.alice}/{WS}"
    write_text(base, "notes.txt", "keep me", token)
    home = remote_container(machine, users.alice, WS)
    mounts = {m["Destination"]: m["Source"] for m in home["Mounts"]}
    source = mounts["/home/jovyan"]
    assert source.startswith(machine.storage_root + "/"), mounts

    stop(remote_hub, user, users.alice, WS)
    SPAWN_TIMES["remote restart"] = spawn_and_time(remote_hub, user, users.alice, WS)
    print(
        f"\nspawn seconds: local {SPAWN_TIMES.get('local', float('nan')):.1f}"
        f" remote {SPAWN_TIMES['remote restart']:.1f} (restart on {machine.name}: image there)"
    )
    status = user.api("GET", f"/codeyard/workspaces/{users.alice}/{WS}/status").json()
    assert status["host"] == machine.name, status
    r = requests.get(f"{base}/api/contents/notes.txt", headers=token, timeout=30)
    assert r.status_code == 200 and r.json()["content"] == "keep me", r.text

    # The home is on the machine's own storage, not on the Hub's disk.
    assert not os.path.exists(source), f"{source} exists on the Hub's machine"
    assert not any(Path(machine.storage_root).iterdir())
    seen = on_machine(machine, "cat", f"{source}/work/notes.txt")  # the tree is H/work
    assert seen.returncode == 0 and seen.stdout == "keep me", seen
