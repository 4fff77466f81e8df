"""End to end on the real Hub, proxy and dockerd: sign up, create a workspace from git,
use it through the proxy, stop and start it, restart the Hub, and keep others out.

The tests run in file order and share one Hub and one workspace (spawns are slow).
"""

from __future__ import annotations

import html
import time
from typing import Any

import docker
import pytest
import requests
from support.browser import Browser, signed_in, user_token, wait_gone, wait_ready
from support.contents_api import write_text
from support.hub import HubProcess

pytestmark = pytest.mark.slow

PASSWORD = "correct-horse-battery-7"
IMAGE_KEY = "Codeyard (Python, JupyterLab, Jupyter AI)"
WS = "proj"


@pytest.fixture(scope="module")
def alice(hub: HubProcess, users) -> Browser:
    b = Browser(hub.url)
    r = b.signup(users.alice, PASSWORD)
    assert r.status_code == 200 and "signup was successful" in r.text, r.text[:500]
    return b


@pytest.fixture(scope="module")
def bob(hub: HubProcess, users) -> Browser:
    return signed_in(hub.url, users.bob, PASSWORD)


@pytest.fixture(scope="module")
def alice_token(alice: Browser, users) -> str:
    return user_token(alice, users.alice, "e2e")


def tree(hub: HubProcess, user: str, ws: str, token: str, path: str = "") -> requests.Response:
    return requests.get(
        f"{hub.url}/user/{user}/{ws}/codeyard/api/tree",
        params={"path": path, "depth": "3"},
        headers={"Authorization": f"token {token}"},
        timeout=30,
    )


def tree_paths(body: dict[str, Any]) -> set[str]:
    return {e["path"] for e in body["entries"]}


def container_of(docker_client: docker.APIClient, user: str, ws: str) -> dict[str, Any]:
    found = docker_client.containers(
        all=True, filters={"label": [f"codeyard.user={user}", f"codeyard.workspace={ws}"]}
    )
    assert len(found) == 1, found
    return docker_client.inspect_container(found[0]["Id"])


def test_signup_then_login_through_the_real_form(alice: Browser, users) -> None:
    r = alice.login(users.alice, PASSWORD)
    assert r.status_code == 200
    assert r.url.endswith("/hub/home")
    assert alice.api("GET", f"/users/{users.alice}").json()["name"] == users.alice


def test_wrong_password_is_refused(hub: HubProcess, users) -> None:
    r = Browser(hub.url).login(users.alice, "not-the-password")
    assert "/hub/home" not in r.url


def test_spawn_form_offers_profiles_and_images_but_no_image_field(alice: Browser, users) -> None:
    page = alice.s.get(f"{alice.hub_url}/hub/spawn/{users.alice}/{WS}", timeout=30).text
    for field in ('name="repo_url"', 'name="branch"', 'name="profile"', 'name="image"'):
        assert field in page
    assert '<select id="cy-image"' in page  # a choice from the allow-list, never free text
    assert 'value="small"' in page and 'value="large"' in page


def test_workspace_from_git_reports_progress_and_becomes_ready(
    alice: Browser, hub: HubProcess, git_server, users
) -> None:
    r = alice.spawn_form(
        users.alice,
        WS,
        {
            "repo_url": git_server.url("project.git"),
            "branch": "feature",
            "profile": "small",
            "image": IMAGE_KEY,
        },
    )
    assert r.status_code == 302, r.text[:500]
    events = alice.progress(users.alice, WS)
    messages = [e["message"] for e in events]
    assert events[-1].get("ready"), f"{messages}\n{hub.log_tail()}"
    for step in ("Placing workspace", "Cloning", "Creating container", "Starting Jupyter"):
        assert any(step in m for m in messages), messages


def test_container_runs_with_the_profile_limits(docker_client, users) -> None:
    info = container_of(docker_client, users.alice, WS)
    assert info["State"]["Running"]
    # From the kernel's cgroup files inside the container, not from our config.
    out = (
        docker_client.exec_start(
            docker_client.exec_create(
                info["Id"],
                [
                    "cat",
                    "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                    "/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
                    "/sys/fs/cgroup/cpu/cpu.cfs_period_us",
                ],
            )
        )
        .decode()
        .split()
    )
    mem, quota, period = (int(x) for x in out)
    assert mem == 2 * 1024**3  # small: 2G
    assert quota / period == pytest.approx(1.0)  # small: 1 CPU
    assert info["HostConfig"]["Memory"] == 2 * 1024**3


def test_home_is_bind_mounted_and_owned_by_the_workspace_user(docker_client, users) -> None:
    info = container_of(docker_client, users.alice, WS)
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    home = mounts["/home/jovyan"]
    assert home["Type"] == "bind" and home["Source"].endswith(f"/{users.alice}/{WS}")
    out = docker_client.exec_start(
        docker_client.exec_create(info["Id"], ["stat", "-c", "%u", "/home/jovyan/work"])
    )
    assert out.decode().strip() == "1000"


def test_tree_through_the_proxy_shows_the_cloned_branch(
    hub: HubProcess, alice_token: str, users
) -> None:
    r = tree(hub, users.alice, WS, alice_token)
    assert r.status_code == 200, r.text
    assert {"README.md", "FEATURE.md", "src"} <= tree_paths(r.json())
    assert "src/app.py" in tree_paths(tree(hub, users.alice, WS, alice_token, "src").json())


def test_tree_through_the_proxy_with_the_login_cookie(alice: Browser, users) -> None:
    # What JupyterLab does: the OAuth redirect dance, then API calls with the xsrf header.
    base = f"{alice.hub_url}/user/{users.alice}/{WS}/"
    page = alice.s.get(f"{base}lab", timeout=60)  # OAuth with the Hub, then the Lab page
    assert page.status_code == 200 and page.url == f"{base}lab"
    xsrf = next(
        c.value for c in alice.s.cookies if c.name == "_xsrf" and c.path.startswith("/user/")
    )
    r = alice.s.get(
        f"{base}codeyard/api/tree",
        params={"path": "", "depth": "2"},
        headers={"X-XSRFToken": xsrf},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert "README.md" in tree_paths(r.json())


def test_a_file_written_survives_stop_and_start(
    hub: HubProcess, alice: Browser, alice_token: str, users
) -> None:
    auth = {"Authorization": f"token {alice_token}"}
    base = f"{hub.url}/user/{users.alice}/{WS}"
    url = f"{base}/api/contents/notes.txt"
    write_text(base, "notes.txt", "keep me", auth)
    r = alice.api("DELETE", f"/users/{users.alice}/servers/{WS}")
    assert r.status_code in (202, 204), r.text
    wait_gone(hub, users.alice, WS)
    status = alice.api("GET", f"/codeyard/workspaces/{users.alice}/{WS}/status").json()
    assert status["state"] == "STOPPED", status

    r = alice.api("POST", f"/users/{users.alice}/servers/{WS}", json={})
    assert r.status_code in (201, 202), r.text
    wait_ready(hub, users.alice, WS)
    r = requests.get(url, headers=auth, timeout=30)
    assert r.status_code == 200 and r.json()["content"] == "keep me"
    assert "src/app.py" in tree_paths(tree(hub, users.alice, WS, alice_token, "src").json())


def test_owner_and_admin_read_status_and_logs(hub: HubProcess, alice: Browser, users) -> None:
    base = f"/codeyard/workspaces/{users.alice}/{WS}"
    for caller in (alice.api, hub.api):
        status = caller("GET", f"{base}/status").json()
        assert status["state"] == "RUNNING" and status["host"] == "local", status
        logs = caller("GET", f"{base}/logs", params={"tail": "50"})
        assert logs.status_code == 200
        assert "ServerApp" in logs.json()["logs"]


def test_second_user_gets_403_on_workspace_and_logs(hub: HubProcess, bob: Browser, users) -> None:
    r = bob.api("POST", f"/users/{users.bob}/tokens", json={"note": "e2e"})
    bob_token = r.json()["token"]
    assert tree(hub, users.alice, WS, bob_token).status_code == 403
    # With the browser cookie: the Hub refuses to hand bob an OAuth grant for alice's server.
    r = bob.s.get(f"{hub.url}/user/{users.alice}/{WS}/lab", timeout=30)
    assert r.status_code == 403
    for what in ("logs", "status"):
        assert bob.api("GET", f"/codeyard/workspaces/{users.alice}/{WS}/{what}").status_code == 403
    # Same answer for a workspace that does not exist: nothing leaks.
    assert bob.api("GET", f"/codeyard/workspaces/{users.alice}/nope/logs").status_code == 403


def test_hub_restart_leaves_the_workspace_running_and_reachable(
    hub: HubProcess, alice_token: str, docker_client, users
) -> None:
    before = container_of(docker_client, users.alice, WS)
    placed = [(p["user"], p["workspace"], p["server"], p["state"]) for p in hub.placements()]
    assert (users.alice, WS, "local", "running") in placed  # the default: the registry
    hub.stop()
    assert docker_client.inspect_container(before["Id"])["State"]["Running"]
    hub.start()
    # every placement is still known after the restart, unchanged
    assert [(p["user"], p["workspace"], p["server"], p["state"]) for p in hub.placements()] == (
        placed
    )
    r = tree(hub, users.alice, WS, alice_token)
    assert r.status_code == 200, f"{r.text}\n{hub.log_tail()}"
    after = container_of(docker_client, users.alice, WS)
    assert after["Id"] == before["Id"]
    assert after["State"]["StartedAt"] == before["State"]["StartedAt"]


def test_failed_clone_fails_the_spawn_with_gits_error_and_leaves_nothing(
    hub: HubProcess, alice: Browser, git_server, docker_client, users
) -> None:
    r = alice.spawn_form(
        users.alice,
        "broken",
        {"repo_url": git_server.url("missing.git"), "profile": "small", "image": IMAGE_KEY},
    )
    if r.status_code == 302:
        # Slow failure: the spawn page's progress stream carries git's message.
        events = alice.progress(users.alice, "broken")
        assert events[-1].get("failed"), events
        failure = " ".join(e["message"] for e in events)
    else:
        # Failed within the Hub's slow_spawn_timeout: the form answers with the error page.
        assert r.status_code == 400, r.text[:300]
        failure = html.unescape(r.text)
    assert "git clone failed" in failure and "fatal" in failure, failure[-2000:]
    homes = hub.state_dir / "homes" / users.alice
    assert sorted(p.name for p in homes.iterdir()) == [WS]  # no half-made home, no .partial
    assert (
        docker_client.containers(
            all=True,
            filters={"label": [f"codeyard.user={users.alice}", "codeyard.workspace=broken"]},
        )
        == []
    )
    status = alice.api("GET", f"/codeyard/workspaces/{users.alice}/broken/status").json()
    assert status["state"] == "ERROR" and "git clone failed" in status["reason"]


@pytest.mark.parametrize(
    "options, reason",
    [
        ({"image": "docker.io/library/anything"}, "not offered"),
        ({"profile": "huge"}, "Unknown size profile"),
        ({"repo_url": "file:///etc"}, "Unsupported git URL"),
        ({"repo_url": "--upload-pack=touch /tmp/x"}, "git URL"),
    ],
)
def test_api_cannot_ask_for_more_than_the_form_offers(
    alice: Browser, users, options: dict[str, str], reason: str
) -> None:
    r = alice.api("POST", f"/users/{users.alice}/servers/bad", json=options)
    assert r.status_code == 400, r.text
    assert reason in r.json()["message"]


def test_deleting_a_workspace_removes_the_container_and_keeps_the_files(
    hub: HubProcess, alice: Browser, docker_client, users
) -> None:
    r = alice.api("DELETE", f"/users/{users.alice}/servers/{WS}", json={"remove": True})
    assert r.status_code in (202, 204), r.text
    deadline = time.monotonic() + 60
    while docker_client.containers(
        all=True, filters={"label": [f"codeyard.user={users.alice}", f"codeyard.workspace={WS}"]}
    ):
        assert time.monotonic() < deadline, "container not removed"
        time.sleep(0.5)
    home = hub.state_dir / "homes" / users.alice / WS
    assert (home / "work" / "notes.txt").read_text() == "keep me"


def test_metrics_answer_only_the_metrics_token_and_admins(
    hub: HubProcess, alice_token: str
) -> None:
    url = f"{hub.url}/hub/metrics"
    assert requests.get(url, timeout=30).status_code == 403
    user = requests.get(url, headers={"Authorization": f"token {alice_token}"}, timeout=30)
    assert user.status_code == 403
    token = (hub.state_dir / "metrics_token").read_text().strip()
    r = requests.get(url, headers={"Authorization": f"token {token}"}, timeout=30)
    assert r.status_code == 200 and "jupyterhub_" in r.text


def test_secrets_are_private_files_in_the_state_folder(hub: HubProcess) -> None:
    for name in ("jupyterhub_cookie_secret", "crypt_key", "proxy_token", "metrics_token"):
        assert (hub.state_dir / name).stat().st_mode & 0o777 == 0o600, name


def test_a_user_cannot_have_more_workspaces_than_the_limit(
    hub: HubProcess, alice: Browser, users
) -> None:
    limit = int(hub.extra_env["CODEYARD_WORKSPACES_PER_USER"])
    # Stopped and failed workspaces count too; add refused ones until the limit answers.
    i = 0
    while True:
        r = alice.api("POST", f"/users/{users.alice}/servers/extra{i}", json={"profile": "huge"})
        if "maximum" in r.text:
            break
        assert r.status_code == 400 and "Unknown size profile" in r.text, r.text
        i += 1
        assert i <= limit, "the limit was never enforced"
    assert r.status_code == 400
    assert f"maximum of {limit}" in r.json()["message"], r.text
