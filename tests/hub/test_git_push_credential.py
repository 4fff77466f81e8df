"""Pull and push from a real workspace with the git credential stored in the Hub.

A real Hub spawns a real workspace container that clones a private remote (`git
http-backend` behind Basic auth, `private_git.py`, on the docker bridge). The workspace's
git endpoints (`codeyard/api/git/push`, `git/pull`) then run `git` with Codeyard's
credential helper, which asks the Hub's `git-credential` endpoint with the server's own
token at each operation. The tests check that:

- push and pull with the stored credential work, and the remote saw authorised requests;
- only the workspace's own server token gets the credential: not the owner's session or
  another token of theirs, not another of their workspaces, not another user, not an admin
  service, and not for a host other than the repository's;
- a wrong credential and no credential each give a 409 whose message says which;
- the credential string is nowhere in the workspace: no file of the home (the `.git`
  folder included), not the container's environment, not its logs, not the Hub's log;
- every hand-out is in the Hub's log, without the secret.

The tests run in file order and share one Hub and one workspace.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import requests
from private_git import PrivateGitServer, private_git_server, publish_repo
from support.browser import Browser, signed_in, start_workspace, user_token
from support.contents_api import write_text
from support.hub import DOCKER_BRIDGE_IP, HubProcess

pytestmark = pytest.mark.slow

PASSWORD = "correct-horse-battery-7"
IMAGE_KEY = "Codeyard (Python, JupyterLab, Jupyter AI)"
WS = "pushy"
OTHER = "plain"
GIT = ["git", "-c", "user.name=Upstream", "-c", "user.email=up@example.com"]


@pytest.fixture(scope="module")
def remote(
    tmp_path_factory: pytest.TempPathFactory, image: str, docker_client: docker.APIClient
) -> Iterator[PrivateGitServer]:
    # `image` first: it starts dockerd, which creates the bridge address we listen on.
    base = tmp_path_factory.mktemp("push-git")
    bare = publish_repo(base, "shared.git", {"README.md": "# shared\n"}, git=GIT, message="start")
    # git http-backend refuses pushes unless the repository allows them.
    subprocess.run(["git", "config", "http.receivepack", "true"], cwd=bare, check=True)
    with private_git_server(base / "srv", DOCKER_BRIDGE_IP) as server:
        yield server


def bare_head(remote: PrivateGitServer) -> str:
    return subprocess.run(
        ["git", "rev-parse", "refs/heads/main"],
        cwd=remote.root / "shared.git",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


@pytest.fixture(scope="module")
def alice(hub: HubProcess, users: Any) -> Browser:
    return signed_in(hub.url, users.alice, PASSWORD)


@pytest.fixture(scope="module")
def workspace(
    hub: HubProcess,
    alice: Browser,
    remote: PrivateGitServer,
    docker_client: docker.APIClient,
    users: Any,
) -> dict[str, Any]:
    """Alice's running workspace cloned from the private remote with her stored credential:
    its base URL, an auth header of hers, its container id and its server token."""
    r = alice.api(
        "PUT",
        f"/codeyard/workspaces/{users.alice}/{WS}/credential",
        json={"username": remote.username, "secret": remote.token},
    )
    assert r.status_code == 204, r.text
    events = alice.start(
        users.alice,
        WS,
        {"repo_url": remote.url("shared.git"), "profile": "small", "image": IMAGE_KEY},
    )
    assert events[-1].get("ready"), f"{[e['message'] for e in events]}\n{hub.log_tail()}"
    token = user_token(alice, users.alice, "git push test")
    found = docker_client.containers(
        filters={"label": [f"codeyard.user={users.alice}", f"codeyard.workspace={WS}"]}
    )
    assert len(found) == 1, found
    info = docker_client.inspect_container(found[0]["Id"])
    env = dict(e.split("=", 1) for e in info["Config"]["Env"])
    return {
        "base": f"{hub.url}/user/{users.alice}/{WS}",
        "auth": {"Authorization": f"token {token}"},
        "id": info["Id"],
        "server_token": env["JUPYTERHUB_API_TOKEN"],
    }


def ws_api(ws: dict[str, Any], method: str, endpoint: str, body: Any = None) -> requests.Response:
    return requests.request(
        method,
        f"{ws['base']}/codeyard/api/{endpoint}",
        headers=ws["auth"],
        json=body,
        timeout=240,
    )


def write_file(ws: dict[str, Any], rel: str, text: str) -> None:
    write_text(ws["base"], rel, text, ws["auth"], timeout=60)


def fill(hub: HubProcess, user: str, server: str, headers: dict[str, str], host: str = "") -> Any:
    return requests.get(
        f"{hub.url}/hub/api/codeyard/workspaces/{user}/{server}/git-credential",
        params={"protocol": "http", "host": host},
        headers=headers,
        timeout=30,
    )


def test_push_with_the_stored_credential(
    hub: HubProcess, workspace: dict[str, Any], remote: PrivateGitServer
) -> None:
    write_file(workspace, "NOTES.md", "pushed from the panel\n")
    r = ws_api(workspace, "POST", "git/commit", {"message": "notes from the workspace"})
    assert r.status_code == 200, r.text
    commit = r.json()["commit"]
    before = len(remote.requests)
    r = ws_api(workspace, "POST", "git/push", {})
    assert r.status_code == 200, r.text
    assert r.json()["commit"] == commit and r.json()["remote"] == "origin"
    assert bare_head(remote) == commit
    # git was challenged, then sent the credential the Hub handed to the helper.
    pushed = remote.requests[before:]
    assert any(not ok for _, _, ok in pushed), pushed
    assert any(ok and method == "POST" for method, _, ok in pushed), pushed
    assert "git credential of" in hub.log_path.read_text()
    assert "handed to its server" in hub.log_path.read_text()


def test_pull_with_the_stored_credential(
    workspace: dict[str, Any], remote: PrivateGitServer, tmp_path: Path, hub: HubProcess, users: Any
) -> None:
    # Someone else pushes to the remote directly.
    other = tmp_path / "other"
    subprocess.run(["git", "clone", "-q", str(remote.root / "shared.git"), str(other)], check=True)
    (other / "UPSTREAM.md").write_text("from upstream\n")
    subprocess.run([*GIT, "add", "."], cwd=other, check=True)
    subprocess.run([*GIT, "commit", "-q", "-m", "upstream change"], cwd=other, check=True)
    subprocess.run(["git", "push", "-q", "origin", "main"], cwd=other, check=True)
    upstream = bare_head(remote)

    r = ws_api(workspace, "POST", "git/pull", {})
    assert r.status_code == 200, r.text
    assert r.json()["updated"] is True and r.json()["after"] == upstream
    home = hub.state_dir / "homes" / users.alice / WS / "work"
    assert (home / "UPSTREAM.md").read_text() == "from upstream\n"


def test_only_the_workspace_server_token_gets_the_credential(
    hub: HubProcess,
    alice: Browser,
    workspace: dict[str, Any],
    remote: PrivateGitServer,
    docker_client: docker.APIClient,
    users: Any,
) -> None:
    host = f"{remote.host}:{remote.port}"
    own = {"Authorization": f"token {workspace['server_token']}"}
    r = fill(hub, users.alice, WS, own, host)
    assert r.status_code == 200, r.text
    assert r.json() == {"username": remote.username, "password": remote.token}
    assert r.headers.get("Cache-Control") == "no-store"

    # Another host than the repository's: refused, even to the server itself.
    assert fill(hub, users.alice, WS, own, "evil.example:443").status_code == 403
    # Alice herself (a token of hers, her browser session), an admin service, nobody.
    assert fill(hub, users.alice, WS, workspace["auth"], host).status_code == 403
    r = alice.api("GET", f"/codeyard/workspaces/{users.alice}/{WS}/git-credential")
    assert r.status_code == 403, r.text
    admin = {"Authorization": f"token {hub.admin_token}"}
    assert fill(hub, users.alice, WS, admin, host).status_code == 403
    assert fill(hub, users.alice, WS, {}, host).status_code == 403

    # Bob, and another workspace of alice's, with their own server tokens.
    bob = signed_in(hub.url, users.bob, PASSWORD)
    bob_auth = start_workspace(hub, bob, users.bob, OTHER)
    assert fill(hub, users.alice, WS, bob_auth, host).status_code == 403
    start_workspace(hub, alice, users.alice, OTHER)
    for user, server in ((users.alice, OTHER), (users.bob, OTHER)):
        token = server_token(docker_client, user, server)
        r = fill(hub, users.alice, WS, {"Authorization": f"token {token}"}, host)
        assert r.status_code == 403, (user, server, r.text)
    assert remote.token not in hub.log_path.read_text()


def server_token(client: docker.APIClient, user: str, server: str) -> str:
    """The Hub token the workspace `user`/`server` was started with."""
    [found] = client.containers(
        filters={"label": [f"codeyard.user={user}", f"codeyard.workspace={server}"]}
    )
    env = dict(e.split("=", 1) for e in client.inspect_container(found["Id"])["Config"]["Env"])
    return env["JUPYTERHUB_API_TOKEN"]


def test_a_wrong_credential_gives_a_clear_409(
    alice: Browser, workspace: dict[str, Any], remote: PrivateGitServer, users: Any
) -> None:
    wrong = "wrong-" + secrets.token_hex(8)
    r = alice.api(
        "PUT",
        f"/codeyard/workspaces/{users.alice}/{WS}/credential",
        json={"username": remote.username, "secret": wrong},
    )
    assert r.status_code == 204, r.text
    write_file(workspace, "MORE.md", "more\n")
    r = ws_api(workspace, "POST", "git/commit", {"message": "more"})
    assert r.status_code == 200, r.text
    before = bare_head(remote)
    r = ws_api(workspace, "POST", "git/push", {})
    assert r.status_code == 409, r.text
    body = r.json()
    assert body["error"] == "remote_auth_failed", body
    assert "refused the git credential stored for this workspace" in body["message"], body
    assert wrong not in r.text and remote.url("shared.git") not in r.text
    assert bare_head(remote) == before


def test_no_credential_gives_a_clear_409(
    alice: Browser, workspace: dict[str, Any], remote: PrivateGitServer, users: Any
) -> None:
    r = alice.api("DELETE", f"/codeyard/workspaces/{users.alice}/{WS}/credential")
    assert r.status_code == 204, r.text
    for verb in ("pull", "push"):
        r = ws_api(workspace, "POST", f"git/{verb}", {})
        assert r.status_code == 409, r.text
        body = r.json()
        assert body["error"] == "remote_auth_failed", body
        assert "none is stored for this workspace" in body["message"], body


def test_the_credential_is_nowhere_in_the_workspace(
    hub: HubProcess,
    workspace: dict[str, Any],
    remote: PrivateGitServer,
    docker_client: docker.APIClient,
    users: Any,
) -> None:
    secret = remote.token.encode()
    home = hub.state_dir / "homes" / users.alice / WS
    checked = 0
    for path in home.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert secret not in path.read_bytes(), path
            checked += 1
    assert checked > 10  # the .git folder's files were read, not an empty tree
    config = (home / "work" / ".git" / "config").read_text()
    assert "credential" not in config, config
    # The container: environment, labels, arguments, mounts; and everything it logged.
    info = docker_client.inspect_container(workspace["id"])
    assert remote.token not in json.dumps(info)
    logs = docker_client.logs(workspace["id"], stdout=True, stderr=True)
    assert b"git/push" in logs or b"git/commit" in logs, logs[-2000:]
    assert secret not in logs
    # No process of the workspace holds it in its environment either.
    ex = docker_client.exec_create(
        workspace["id"],
        ["sh", "-c", "cat /proc/[0-9]*/environ 2>/dev/null; env; cat $HOME/.gitconfig 2>&1"],
    )
    out = docker_client.exec_start(ex)
    assert b"JUPYTERHUB_API_URL" in out, out[-500:]
    assert secret not in out
    assert remote.token not in hub.log_path.read_text()
