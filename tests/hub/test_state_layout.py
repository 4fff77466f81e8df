"""Workspace state outside the user's tree, on the real Hub with real containers.

The workspace's host folder H is mounted at the image user's HOME: the git working tree is
`H/work` (/home/jovyan/work) and Codeyard's state `H/.codeyard` (/home/jovyan/.codeyard),
beside the tree. The user's commands run in the container (`docker exec`, as the workspace
user), as a terminal would run them. A home made by the older layout (H was the tree, the
state inside it) is made by hand and converted on start. Last, a container killed with
docker behind the Hub's back gets one `workspace.stop` record ("died"), so its hours stop.

The tests run in file order and share one Hub.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import requests
from conftest import HubLauncher, Users
from support.browser import signed_in, start_server, user_token, wait_gone
from support.hub import HubProcess

from codeyard.server_extension.audit import AuditLog
from codeyard.server_extension.patches.manager import PatchManager
from codeyard.server_extension.paths import WorkspacePaths

pytestmark = pytest.mark.slow

PASSWORD = "correct-horse-battery-7"
WS = "cloned"
OLD_WS = "oldhome"
POLL = 3  # seconds between the Hub's polls, so a death is noticed quickly
OLD = b"def main():\n    return 1\n"
NEW = b"def main():\n    return 2\n"


@pytest.fixture(scope="module")
def hub(hubs: HubLauncher) -> Iterator[HubProcess]:
    env = {"CODEYARD_POLL_INTERVAL": str(POLL)}
    with hubs.running("hubstate-layout", extra_env=env) as proc:
        yield proc


@pytest.fixture(scope="module")
def alice(hub: HubProcess, users: Users) -> dict[str, Any]:
    browser = signed_in(hub.url, users.alice, PASSWORD)
    return {"browser": browser, "token": user_token(browser, users.alice, "layout")}


def start(hub: HubProcess, user: str, alice: dict[str, Any], ws: str, **opts: str) -> None:
    start_server(hub, alice["browser"], user, ws, **opts)


def container(docker_client: docker.APIClient, user: str, ws: str) -> dict[str, Any]:
    found = docker_client.containers(
        all=True, filters={"label": [f"codeyard.user={user}", f"codeyard.workspace={ws}"]}
    )
    assert len(found) == 1, found
    return docker_client.inspect_container(found[0]["Id"])


def sh(docker_client: docker.APIClient, info: dict[str, Any], script: str) -> tuple[int, str]:
    """`script` in the workspace container, as its user, in the working tree."""
    ex = docker_client.exec_create(
        info["Id"], ["sh", "-c", script], user=info["Config"]["User"], workdir="/home/jovyan/work"
    )
    out = docker_client.exec_start(ex).decode("utf-8", "replace")
    return docker_client.exec_inspect(ex["Id"])["ExitCode"], out


def ws_api(
    hub: HubProcess, user: str, ws: str, token: str, endpoint: str, body: Any = None
) -> tuple[int, Any]:
    url = f"{hub.url}/user/{user}/{ws}/codeyard/api/{endpoint}"
    headers = {"Authorization": f"token {token}"}
    if body is None:
        r = requests.get(url, headers=headers, params={"limit": 1000}, timeout=60)
    else:
        r = requests.post(url, headers=headers, json=body, timeout=60)
    return r.status_code, r.json()


def audit(hub: HubProcess, user: str, ws: str, token: str) -> list[dict[str, Any]]:
    status, body = ws_api(hub, user, ws, token, "audit")
    assert status == 200 and body["chain_ok"] is True, body
    return list(reversed(body["records"]))


def create(name: str) -> str:
    return f"--- /dev/null\n+++ b/{name}\n@@ -0,0 +1 @@\n+{name}\n"


def test_a_cloned_workspace_has_its_state_outside_the_tree(
    hub: HubProcess, users: Users, alice: dict[str, Any], git_server, docker_client
) -> None:
    start(hub, users.alice, alice, WS, repo_url=git_server.url("project.git"))
    info = container(docker_client, users.alice, WS)
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    home = Path(mounts["/home/jovyan"]["Source"])
    assert mounts["/home/jovyan"]["RW"] is True and "/home/jovyan/work" not in mounts
    assert home == hub.state_dir / "homes" / users.alice / WS
    assert (home / "work" / "README.md").is_file() and (home / "work" / ".git").is_dir()
    assert (home / ".codeyard").is_dir()
    assert not (home / "work" / ".codeyard").exists()
    code, out = sh(docker_client, info, "git status --porcelain --ignored && echo CLEAN")
    assert (code, out.strip()) == (0, "CLEAN"), out
    env = dict(e.split("=", 1) for e in info["Config"]["Env"])
    assert env["CODEYARD_STATE_DIR"] == "/home/jovyan/.codeyard"


def test_git_clean_then_apply_and_revert_an_earlier_patch(
    hub: HubProcess, users: Users, alice: dict[str, Any], docker_client
) -> None:
    token, user = alice["token"], users.alice
    info = container(docker_client, user, WS)
    status, first = ws_api(hub, user, WS, token, "patch/apply", {"diff": create("a.txt")})
    assert status == 200, first
    code, out = sh(docker_client, info, "touch junk.log && git clean -fdx -q && ls -A")
    assert code == 0 and "junk.log" not in out and "a.txt" not in out, out
    status, second = ws_api(hub, user, WS, token, "patch/apply", {"diff": create("b.txt")})
    assert status == 200, second
    status, body = ws_api(hub, user, WS, token, f"patch/{second['patch_id']}/revert", {})
    assert status == 200, body
    # The first patch's file went with the clean; its revert data did not.
    code, out = sh(docker_client, info, "printf 'a.txt\\n' > a.txt")
    assert code == 0, out
    status, body = ws_api(hub, user, WS, token, f"patch/{first['patch_id']}/revert", {})
    assert status == 200, body
    code, out = sh(docker_client, info, "ls -A; git status --porcelain")
    assert "a.txt" not in out and "b.txt" not in out, out
    actions = [r["action"] for r in audit(hub, user, WS, token) if r["action"] != "external.change"]
    assert actions == ["patch.apply", "patch.apply", "patch.revert", "patch.revert"]


def test_rm_rf_of_the_state_folder_and_an_unwritable_one(
    hub: HubProcess, users: Users, alice: dict[str, Any], docker_client
) -> None:
    token, user = alice["token"], users.alice
    info = container(docker_client, user, WS)
    code, out = sh(docker_client, info, "rm -rf /home/jovyan/.codeyard")
    assert code == 0, out
    status, body = ws_api(hub, user, WS, token, "patch/apply", {"diff": create("c.txt")})
    assert status == 200, body
    records = audit(hub, user, WS, token)
    assert records[0]["action"] == "state_lost" and records[0]["seq"] == 1
    assert records[0]["missing"] == ["/home/jovyan/.codeyard"]
    assert "patch.apply" in [r["action"] for r in records]

    # Unwritable: the workspace user takes its own write permission away.
    code, out = sh(docker_client, info, "chmod 0500 /home/jovyan/.codeyard")
    assert code == 0, out
    try:
        status, err = ws_api(hub, user, WS, token, "patch/apply", {"diff": create("d.txt")})
        assert status == 507 and err["error"] == "state_unwritable", err
        assert err["path"] == "/home/jovyan/.codeyard", err
        code, out = sh(docker_client, info, "ls")
        assert "d.txt" not in out, out
    finally:
        sh(docker_client, info, "chmod 0700 /home/jovyan/.codeyard")
    status, body = ws_api(hub, user, WS, token, "patch/apply", {"diff": create("d.txt")})
    assert status == 200, body


def test_a_home_of_the_old_layout_is_converted_and_keeps_its_history(
    hub: HubProcess, users: Users, alice: dict[str, Any], docker_client
) -> None:
    """H made by hand the old way: the tree itself, with the audit log and a patch's revert
    data in H/.codeyard, written by the extension's own patch engine as a server would."""
    token, user = alice["token"], users.alice
    home = hub.state_dir / "homes" / user / OLD_WS
    home.mkdir(parents=True)
    git = ["git", "-C", str(home), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (home / "app.py").write_bytes(OLD)
    subprocess.run([*git, "add", "app.py"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "first"], check=True)
    state = home / ".codeyard"
    old = PatchManager(WorkspacePaths(home), state, AuditLog(state / "audit.jsonl"))
    diff = (
        "--- a/app.py\n+++ b/app.py\n@@ -1,2 +1,2 @@\n def main():\n-    return 1\n+    return 2\n"
    )
    applied = old.apply(diff)
    old.settle()
    assert (home / "app.py").read_bytes() == NEW
    subprocess.run(["chown", "-R", "1000:1000", str(home.parent)], check=True)

    start(hub, user, alice, OLD_WS)
    top = set(os.listdir(home))  # beside these, what Jupyter writes in HOME (.local...)
    assert {".codeyard", ".codeyard-layout", "work"} <= top
    assert not {"app.py", ".git", ".codeyard-layout.work", ".codeyard-layout.moved"} & top
    assert (home / "work" / "app.py").read_bytes() == NEW
    info = container(docker_client, user, OLD_WS)
    code, out = sh(docker_client, info, "git status --porcelain")
    assert (code, out.strip()) == (0, "M app.py"), out
    status, body = ws_api(hub, user, OLD_WS, token, f"patch/{applied['patch_id']}/revert", {})
    assert status == 200, body
    assert (home / "work" / "app.py").read_bytes() == OLD
    records = audit(hub, user, OLD_WS, token)
    assert [r["action"] for r in records[:2]] == ["patch.apply", "patch.revert"]
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    assert records[0]["patch_id"] == applied["patch_id"]


def spawn_records(hub: HubProcess, user: str, ws: str) -> list[dict[str, Any]]:
    path = hub.state_dir / "spawn-events" / "audit.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    records = [json.loads(line) for line in lines if line.strip()]
    return [r for r in records if r["user"] == user and r.get("workspace") == ws]


def test_a_container_killed_behind_the_hubs_back_gets_one_died_stop(
    hub: HubProcess, users: Users, alice: dict[str, Any], docker_client
) -> None:
    user = users.alice
    assert [r["action"] for r in spawn_records(hub, user, OLD_WS)] == ["workspace.start"]
    started = spawn_records(hub, user, OLD_WS)[0]["ts"]
    info = container(docker_client, user, OLD_WS)
    time.sleep(POLL * 2)  # let a poll or two see it running
    killing = time.time()
    # The engine answers a SIGKILL once the container has stopped; until then a poll still
    # finds it running, so its death lies between the call and the answer.
    docker_client.kill(info["Id"])
    killed = time.time()
    wait_gone(hub, user, OLD_WS)
    time.sleep(POLL * 2)  # further polls must not record it again
    records = spawn_records(hub, user, OLD_WS)
    assert [r["action"] for r in records] == ["workspace.start", "workspace.stop"], records
    stop = records[1]
    assert stop["reason"] == "died"
    # Its hours end where it was last seen running: before the kill took effect, within a
    # poll. On a slow engine the first poll may be answered only after the kill; then its
    # last sighting is its start's own, a moment before the Hub's start record (and the
    # usage page ends the run at its start: test_usage_runs.py).
    assert stop["last_seen"] <= killed and killing <= stop["ts"], (stop, killing, killed)
    seen_by_a_poll = stop["last_seen"] >= killing - POLL * 1.1 - 2
    assert seen_by_a_poll or abs(stop["last_seen"] - started) < 5, (stop, started, killed)

    # A normal stop of the other workspace is the Hub's own record, not a death.
    r = alice["browser"].api("DELETE", f"/users/{user}/servers/{WS}")
    assert r.status_code in (202, 204), r.text
    deadline = time.monotonic() + 60
    while not [r for r in spawn_records(hub, user, WS) if r["action"] == "workspace.stop"]:
        assert time.monotonic() < deadline, hub.log_tail()
        time.sleep(0.5)
    stops = [r for r in spawn_records(hub, user, WS) if r["action"] == "workspace.stop"]
    assert len(stops) == 1 and "reason" not in stops[0], stops
