"""Workspace containers are hardened: read back from a real workspace spawned by the real Hub.

One Hub for the module, with a small `pids_limit` from its site config, and one workspace
cloned from git (so the home helper, which runs as the workspace user, is exercised too).
Every setting is read back twice: from `docker inspect`, and from inside the running
container, where the kernel applies it.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import docker
import pytest
import requests
from conftest import HubLauncher, Users
from support.browser import signed_in, start_server, user_token
from support.hub import HubProcess
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from codeyard.spawner import PlacementSpawner

pytestmark = pytest.mark.slow

PASSWORD = "correct-horse-battery-7"
WS = "hard"
# Small enough to exhaust quickly, with room for JupyterLab, its extensions and jupyter-ai
# (they use about 60 tasks together; the kernel counts threads).
PIDS_LIMIT = 200
NETWORK = "codeyard-workspaces"


@pytest.fixture(scope="module")
def hub(hubs: HubLauncher) -> Iterator[HubProcess]:
    small = f"c.PlacementSpawner.pids_limit = {PIDS_LIMIT}"
    with hubs.running("hubstate-hardening", site_config=small) as proc:
        yield proc


@pytest.fixture(scope="module")
def workspace(
    hub: HubProcess, users: Users, git_server, docker_client: docker.APIClient
) -> dict[str, Any]:
    """Alice's workspace, cloned from the test git server; returns its token and inspect."""
    alice = signed_in(hub.url, users.alice, PASSWORD)
    token = user_token(alice, users.alice, "hardening")
    start_server(hub, alice, users.alice, WS, repo_url=git_server.url("project.git"))
    found = docker_client.containers(
        filters={"label": [f"codeyard.user={users.alice}", f"codeyard.workspace={WS}"]}
    )
    assert len(found) == 1, found
    return {"token": token, "info": docker_client.inspect_container(found[0]["Id"])}


def run_in(
    docker_client: docker.APIClient, info: dict[str, Any], cmd: list[str], user: str | None = None
) -> tuple[int, str]:
    """Run `cmd` in the container (as its own user unless `user`); exit code and output."""
    user = info["Config"]["User"] if user is None else user
    ex = docker_client.exec_create(info["Id"], cmd, user=user)
    out = docker_client.exec_start(ex).decode("utf-8", "replace")
    return docker_client.exec_inspect(ex["Id"])["ExitCode"], out


async def execute(url: str, auth: dict[str, str], code: str, wait: float = 120) -> str:
    """Run `code` in a kernel through its websocket; return what it printed."""
    msg_id = uuid.uuid4().hex
    request = {
        "header": {
            "msg_id": msg_id,
            "msg_type": "execute_request",
            "username": "test",
            "session": uuid.uuid4().hex,
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {},
        "content": {"code": code, "silent": False, "store_history": True},
        "channel": "shell",
    }
    ws = await websocket_connect(HTTPRequest(url, headers=auth, connect_timeout=60))
    printed: list[str] = []
    try:
        await ws.write_message(json.dumps(request))
        while True:
            raw = await asyncio.wait_for(ws.read_message(), wait)
            assert raw is not None, "kernel websocket closed"
            msg = json.loads(raw)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream":
                printed.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                raise AssertionError("\n".join(msg["content"]["traceback"]))
            elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                return "".join(printed)
    finally:
        ws.close()


def proc_status(text: str) -> dict[str, str]:
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def test_defaults_are_the_safe_ones() -> None:
    spawner = PlacementSpawner()
    assert spawner.pids_limit == 1024
    assert spawner.cap_drop == ["ALL"] and spawner.cap_add == []
    assert spawner.security_opt == ["no-new-privileges:true"]
    assert spawner.read_only_root is True
    assert set(spawner.tmpfs_mounts) == {"/tmp"}
    assert spawner.home_mount == "/home/jovyan"
    assert spawner.workspace_network == NETWORK
    assert spawner.workspace_network_options == {"com.docker.network.bridge.enable_icc": "false"}


def test_docker_inspect_shows_every_setting(workspace: dict[str, Any]) -> None:
    host = workspace["info"]["HostConfig"]
    assert host["PidsLimit"] == PIDS_LIMIT
    assert host["CapDrop"] == ["ALL"]
    assert not host["CapAdd"]
    assert host["SecurityOpt"] == ["no-new-privileges:true"]
    assert host["ReadonlyRootfs"] is True
    assert set(host["Tmpfs"]) == {"/tmp"}
    assert "exec" in host["Tmpfs"]["/tmp"].split(",")
    # The user's HOME is the persistent home itself, writable and the workspace user's.
    home = {m["Destination"]: m for m in workspace["info"]["Mounts"]}["/home/jovyan"]
    assert home["Type"] == "bind" and home["RW"] is True
    assert os.stat(home["Source"]).st_uid == 1000
    assert host["NetworkMode"] == NETWORK
    assert workspace["info"]["Config"]["Labels"]["codeyard.network"] == NETWORK
    assert not host["Privileged"]


def test_root_is_read_only_and_tmp_and_home_are_writable(
    workspace: dict[str, Any], docker_client: docker.APIClient
) -> None:
    probe = """
import errno, json, os
result = {}
for path in ("/probe", "/opt/venv/probe", "/etc/probe", "/tmp/probe",
             "/home/jovyan/probe", "/home/jovyan/work/probe"):
    try:
        with open(path, "w") as f:
            f.write("x")
        os.remove(path)
        result[path] = 0
    except OSError as e:
        result[path] = e.errno
print(json.dumps(result))
"""
    code, out = run_in(docker_client, workspace["info"], ["python3", "-c", probe])
    assert code == 0, out
    result = json.loads(out)
    for path in ("/probe", "/opt/venv/probe", "/etc/probe"):
        assert result[path] == errno.EROFS, (path, result)
    for path in ("/tmp/probe", "/home/jovyan/probe", "/home/jovyan/work/probe"):
        assert result[path] == 0, (path, result)
    # The same from a shell, with the kernel's own words.
    code, out = run_in(docker_client, workspace["info"], ["sh", "-c", "touch /x"])
    assert code != 0 and "Read-only file system" in out, out


def test_no_capabilities_and_no_new_privileges_even_for_root(
    workspace: dict[str, Any], docker_client: docker.APIClient
) -> None:
    for user in (None, "0"):  # the workspace user, then root in the same container
        code, out = run_in(docker_client, workspace["info"], ["cat", "/proc/self/status"], user)
        assert code == 0, out
        status = proc_status(out)
        for field in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
            assert int(status[field], 16) == 0, (user, field, status[field])
        assert status["NoNewPrivs"] == "1", (user, status["NoNewPrivs"])
    code, out = run_in(docker_client, workspace["info"], ["id", "-u"])
    assert out.strip() == "1000"
    # Root without CAP_CHOWN cannot take the user's files over (or give files away).
    code, out = run_in(docker_client, workspace["info"], ["chown", "0", "/home/jovyan/work"], "0")
    assert code != 0 and "Operation not permitted" in out, out


def test_pids_limit_holds(workspace: dict[str, Any], docker_client: docker.APIClient) -> None:
    code, out = run_in(docker_client, workspace["info"], ["cat", "/sys/fs/cgroup/pids/pids.max"])
    assert code == 0 and out.strip() == str(PIDS_LIMIT), out
    spawn_many = f"""
import json, subprocess
procs, error = [], None
try:
    for _ in range({PIDS_LIMIT + 50}):
        procs.append(subprocess.Popen(["sleep", "120"]))
except OSError as e:
    error = e.errno
finally:
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()
print(json.dumps({{"started": len(procs), "errno": error}}))
"""
    code, out = run_in(docker_client, workspace["info"], ["python3", "-c", spawn_many])
    assert code == 0, out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["errno"] == errno.EAGAIN, result
    assert 0 < result["started"] < PIDS_LIMIT, result
    # The workspace survived hitting its limit.
    assert docker_client.inspect_container(workspace["info"]["Id"])["State"]["Running"]


def test_jupyterlab_and_the_codeyard_extension_run_on_the_read_only_root(
    hub: HubProcess, users: Users, workspace: dict[str, Any], docker_client: docker.APIClient
) -> None:
    auth = {"Authorization": f"token {workspace['token']}"}
    base = f"{hub.url}/user/{users.alice}/{WS}"
    lab = requests.get(f"{base}/lab", headers=auth, timeout=60)
    assert lab.status_code == 200 and "jupyter-config-data" in lab.text, lab.text[:300]
    tree = requests.get(
        f"{base}/codeyard/api/tree", params={"path": "", "depth": "2"}, headers=auth, timeout=30
    )
    assert tree.status_code == 200, tree.text
    assert {"README.md", "src"} <= {e["path"] for e in tree.json()["entries"]}
    # A kernel starts (its connection file and IPython's history go to the HOME) and
    # runs code, over the same websocket JupyterLab uses.
    r = requests.post(f"{base}/api/kernels", json={"name": "python3"}, headers=auth, timeout=60)
    assert r.status_code == 201, r.text
    kernel = r.json()["id"]
    try:
        ws_url = f"{base.replace('http://', 'ws://')}/api/kernels/{kernel}/channels"
        code = "import os; print(6 * 7, os.path.exists(os.path.expanduser('~/.ipython')))"
        assert asyncio.run(execute(ws_url, auth, code)) == "42 True\n"
    finally:
        requests.delete(f"{base}/api/kernels/{kernel}", headers=auth, timeout=30)
    logs = docker_client.logs(workspace["info"]["Id"]).decode("utf-8", "replace")
    assert "Read-only file system" not in logs, logs[-3000:]


def test_the_home_cloned_by_the_unprivileged_helper_belongs_to_the_user(
    hub: HubProcess, users: Users, workspace: dict[str, Any], docker_client: docker.APIClient
) -> None:
    home = hub.state_dir / "homes" / users.alice
    assert (home.stat().st_uid, (home / WS).stat().st_uid) == (1000, 1000)
    assert (home / WS / "work" / "README.md").stat().st_uid == 1000
    code, out = run_in(
        docker_client, workspace["info"], ["stat", "-c", "%u", "/home/jovyan/work/README.md"]
    )
    assert (code, out.strip()) == (0, "1000"), out
    # No helper container is left behind.
    assert not docker_client.containers(
        all=True, filters={"label": [f"codeyard.user={users.alice}", "codeyard.helper=home"]}
    )
