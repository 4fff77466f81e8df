"""Private repositories on the real Hub, proxy and dockerd: a credential given once, stored
encrypted in the Hub, handed to git by a credential helper for the clone only.

The remote is `git http-backend` behind Basic auth (`private_git.py`) on the docker bridge.
While the clone helper container runs, the server records its `docker inspect`, so the test
sees its real arguments. The secret must appear nowhere a user, a shared user or a log
reader could see it: `.git/config`, `user_options`, the status API, the Hub log, the
workspace container (its environment included), the helper's arguments, the database file.

The tests run in file order and share one Hub.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import requests
from private_git import PrivateGitServer, private_git_server, publish_repo
from support.browser import Browser, signed_in
from support.hub import DOCKER_BRIDGE_IP, HubProcess

pytestmark = pytest.mark.slow

PASSWORD = "correct-horse-battery-7"
IMAGE_KEY = "Codeyard (Python, JupyterLab, Jupyter AI)"
WS = "private"


@pytest.fixture(scope="module")
def remote(
    tmp_path_factory: pytest.TempPathFactory, image: str, docker_client: docker.APIClient
) -> Iterator[PrivateGitServer]:
    # `image` first: it starts dockerd, which creates the bridge address we listen on.
    base = tmp_path_factory.mktemp("private-git")
    git = ["git", "-c", "user.name=T", "-c", "user.email=t@example.com"]
    files = {"SECRET_PLAN.md": "only with a token\n"}
    publish_repo(base, "plan.git", files, git=git, message="plan")
    with private_git_server(base / "srv", DOCKER_BRIDGE_IP) as server:
        yield server


@pytest.fixture(scope="module")
def alice(hub: HubProcess, users) -> Browser:
    return signed_in(hub.url, users.alice, PASSWORD)


@pytest.fixture(scope="module")
def bob(hub: HubProcess, users) -> Browser:
    return signed_in(hub.url, users.bob, PASSWORD)


def credential_path(user: str, ws: str) -> str:
    return f"/codeyard/workspaces/{user}/{ws}/credential"


def helper_snapshots(
    remote: PrivateGitServer, docker_client: docker.APIClient, user: str
) -> list[dict[str, Any]]:
    """Record `docker inspect` of the user's running home helper on every request."""
    seen: list[dict[str, Any]] = []

    def snapshot() -> None:
        for c in docker_client.containers(
            filters={"label": [f"codeyard.user={user}", "codeyard.helper=home"]}
        ):
            seen.append(docker_client.inspect_container(c["Id"]))

    remote.on_request = snapshot
    return seen


def test_the_credential_api_answers_204_and_never_echoes(
    hub: HubProcess, alice: Browser, remote: PrivateGitServer, users
) -> None:
    r = alice.api(
        "PUT",
        credential_path(users.alice, WS),
        json={"username": remote.username, "secret": remote.token},
    )
    assert r.status_code == 204, r.text
    assert r.content == b""
    # Malformed bodies are refused without quoting them.
    for body in ({"secret": ""}, {"secret": "a\nprotocol=https"}, {"token": "x"}, ["x"]):
        r = alice.api("PUT", credential_path(users.alice, "other"), json=body)
        assert r.status_code == 400, r.text
        assert "a\nprotocol" not in r.text


def test_others_cannot_set_or_delete_it(
    hub: HubProcess, alice: Browser, bob: Browser, users
) -> None:
    for method in ("PUT", "DELETE"):
        r = bob.api(method, credential_path(users.alice, WS), json={"secret": "planted"})
        assert r.status_code == 403, r.text
    r = requests.put(
        f"{hub.url}/hub/api{credential_path(users.alice, WS)}",
        json={"secret": "planted"},
        timeout=30,
    )
    assert r.status_code == 403, r.text


def test_private_clone_works_and_the_secret_is_nowhere(
    hub: HubProcess,
    alice: Browser,
    remote: PrivateGitServer,
    docker_client: docker.APIClient,
    users,
) -> None:
    helpers = helper_snapshots(remote, docker_client, users.alice)
    events = alice.start(
        users.alice,
        WS,
        {"repo_url": remote.url("plan.git"), "profile": "small", "image": IMAGE_KEY},
    )
    messages = [e["message"] for e in events]
    assert events[-1].get("ready"), f"{messages}\n{hub.log_tail()}"
    # A fast spawn's stream holds only its end; the spawner logs every step it emits.
    assert "Using the git credential stored for this workspace" in hub.log_path.read_text()
    assert any(ok for _, _, ok in remote.requests), remote.requests

    home = hub.state_dir / "homes" / users.alice / WS / "work"
    assert (home / "SECRET_PLAN.md").read_text() == "only with a token\n"
    config = (home / ".git" / "config").read_text()
    assert remote.token not in config and "credential" not in config, config
    assert remote.url("plan.git") in config  # the remote is usable for a later pull
    for path in (home / ".git").rglob("*"):
        if path.is_file():
            assert remote.token.encode() not in path.read_bytes(), path

    # The helper really got the credential, but not in its arguments.
    assert helpers, "the helper was never seen running during the clone"
    for info in helpers:
        args = json.dumps([info["Path"], info["Args"], info["Config"]["Cmd"]])
        assert remote.token not in args
        assert info["HostConfig"]["ReadonlyRootfs"] is True

    model = hub.api("GET", f"/users/{users.alice}").json()["servers"][WS]
    assert remote.token not in json.dumps(model)
    assert model["user_options"]["repo_url"] == remote.url("plan.git")
    status = alice.api("GET", f"/codeyard/workspaces/{users.alice}/{WS}/status")
    assert status.status_code == 200 and status.json()["state"] == "RUNNING"
    assert remote.token not in status.text

    found = docker_client.containers(
        filters={"label": [f"codeyard.user={users.alice}", f"codeyard.workspace={WS}"]}
    )
    assert len(found) == 1
    info = docker_client.inspect_container(found[0]["Id"])
    assert remote.token not in json.dumps(info)  # environment, labels, args, mounts
    assert not any("CODEYARD_GIT" in e for e in info["Config"]["Env"])

    assert remote.token not in hub.log_path.read_text()
    db = hub.state_dir / "placement.sqlite"
    for path in db.parent.glob("placement.sqlite*"):
        assert remote.token.encode() not in path.read_bytes(), path


def test_the_workspace_itself_cannot_plant_a_credential(
    hub: HubProcess, docker_client: docker.APIClient, users
) -> None:
    found = docker_client.containers(
        filters={"label": [f"codeyard.user={users.alice}", f"codeyard.workspace={WS}"]}
    )
    info = docker_client.inspect_container(found[0]["Id"])
    env = dict(e.split("=", 1) for e in info["Config"]["Env"])
    token = env["JUPYTERHUB_API_TOKEN"]
    r = requests.put(
        f"{hub.url}/hub/api{credential_path(users.alice, 'next')}",
        json={"secret": "planted"},
        headers={"Authorization": f"token {token}"},
        timeout=30,
    )
    assert r.status_code == 403, r.text


def test_a_wrong_credential_fails_the_clone_with_a_clear_error(
    hub: HubProcess, alice: Browser, remote: PrivateGitServer, users
) -> None:
    wrong = "wrong-" + secrets.token_hex(8)
    r = alice.api("PUT", credential_path(users.alice, "wrong"), json={"secret": wrong})
    assert r.status_code == 204, r.text
    r = alice.api(
        "POST",
        f"/users/{users.alice}/servers/wrong",
        json={"repo_url": remote.url("plan.git"), "profile": "small", "image": IMAGE_KEY},
    )
    if r.status_code in (201, 202):
        events = alice.progress(users.alice, "wrong")
        assert events[-1].get("failed"), events
        failure = " ".join(e["message"] for e in events)
    else:
        assert r.status_code == 400, r.text
        failure = r.json()["message"]
    assert "git clone failed" in failure and "Authentication failed" in failure, failure
    assert "credential stored for this workspace" in failure, failure
    assert wrong not in failure and wrong not in hub.log_path.read_text()
    status = alice.api("GET", f"/codeyard/workspaces/{users.alice}/wrong/status").json()
    assert status["state"] == "ERROR" and "Authentication failed" in status["reason"]
    assert not (hub.state_dir / "homes" / users.alice / "wrong").exists()


def test_without_a_credential_git_never_prompts(
    hub: HubProcess, alice: Browser, remote: PrivateGitServer, users
) -> None:
    r = alice.api(
        "POST",
        f"/users/{users.alice}/servers/nocred",
        json={"repo_url": remote.url("plan.git"), "profile": "small", "image": IMAGE_KEY},
    )
    if r.status_code in (201, 202):
        events = alice.progress(users.alice, "nocred")
        failure = " ".join(e["message"] for e in events)
    else:
        failure = r.json()["message"]
    assert "git clone failed" in failure, failure
    assert "stored for this workspace" not in failure


@pytest.mark.parametrize(
    "url, reason",
    [
        ("ssh://-oProxyCommand=touch /tmp/{mark}", "git URL"),
        ("ssh://-oProxyCommand=touch%20/tmp/{mark}/x.git", "may not start with '-'"),
        ("ssh://%2DoProxyCommand=touch%20/tmp/{mark}/x.git", "may not start with '-'"),
        ("ext::sh -c touch% /tmp/{mark}", "git URL"),
        ("ext::touch%/tmp/{mark}", "transport"),
        ("fd::7", "transport"),
        ("file:///tmp/{mark}", "Unsupported git URL"),
        ("https://robot:tok@git.example.com/a.git", "Credential field"),
        ("https://tok@git.example.com/a.git", "Credential field"),
    ],
)
def test_dangerous_urls_are_refused_and_nothing_runs(
    hub: HubProcess, alice: Browser, docker_client: docker.APIClient, users, url: str, reason: str
) -> None:
    mark = "pwned-" + secrets.token_hex(4)
    r = alice.api(
        "POST",
        f"/users/{users.alice}/servers/evil",
        json={"repo_url": url.format(mark=mark), "profile": "small", "image": IMAGE_KEY},
    )
    assert r.status_code == 400, r.text
    assert reason in r.json()["message"], r.json()
    assert not Path(f"/tmp/{mark}").exists()
    assert (
        docker_client.containers(
            all=True, filters={"label": [f"codeyard.user={users.alice}", "codeyard.helper=home"]}
        )
        == []
    )


def test_deleting_the_workspace_forgets_its_credential(
    hub: HubProcess, alice: Browser, remote: PrivateGitServer, users
) -> None:
    db = hub.state_dir / "placement.sqlite"

    def stored() -> set[str]:
        with sqlite3.connect(db) as conn:
            rows = conn.execute(
                "SELECT workspace FROM git_credentials WHERE user = ?", (users.alice,)
            ).fetchall()
        return {w for (w,) in rows}

    assert {WS, "wrong"} <= stored()
    r = alice.api("DELETE", f"/users/{users.alice}/servers/{WS}", json={"remove": True})
    assert r.status_code in (202, 204), r.text
    deadline = time.monotonic() + 60
    while WS in stored():
        assert time.monotonic() < deadline, "credential kept"
        time.sleep(0.5)
    r = alice.api("DELETE", credential_path(users.alice, "wrong"))
    assert r.status_code == 204, r.text
    assert "wrong" not in stored()
