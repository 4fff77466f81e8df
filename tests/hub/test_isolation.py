"""Workspaces cannot reach each other over the network, but still reach the Hub and gateway.

Two users each spawn a real workspace through the real Hub. Both land on the Codeyard
workspace network, a bridge with inter-container traffic off: a server bob starts in his
workspace answers inside it, and alice's workspace cannot connect to it. Alice's workspace
still reaches the Hub API and the LLM gateway on the host's address.
"""

from __future__ import annotations

import time
from typing import Any

import docker
import pytest
import requests
from conftest import Users
from support.browser import signed_in, start_workspace
from support.container_exec import fetch
from support.hub import HubProcess

pytestmark = pytest.mark.slow

PASSWORD = "correct-horse-battery-7"
WS = "iso"
NETWORK = "codeyard-workspaces"
PORT = 9000


def fetch_from(
    docker_client: docker.APIClient, cid: str, url: str, timeout: float = 5
) -> dict[str, Any]:
    """GET `url` from inside the container (its proxy settings apply): {"status": ...} or
    {"error": ...}, without the body, since these tests compare the whole answer."""
    result = fetch(docker_client, cid, url, timeout=timeout)
    result.pop("body", None)
    return result


@pytest.fixture(scope="module")
def workspaces(
    hub: HubProcess, users: Users, docker_client: docker.APIClient
) -> dict[str, dict[str, Any]]:
    """Alice's and bob's running workspaces: name -> {"auth", "info"} (docker inspect)."""
    result = {}
    for name in users.all():
        browser = signed_in(hub.url, name, PASSWORD)
        auth = start_workspace(hub, browser, name, WS)
        found = docker_client.containers(
            filters={"label": [f"codeyard.user={name}", f"codeyard.workspace={WS}"]}
        )
        assert len(found) == 1, found
        result[name] = {"auth": auth, "info": docker_client.inspect_container(found[0]["Id"])}
    return result


def test_both_workspaces_are_on_the_codeyard_network_only(
    workspaces: dict[str, dict[str, Any]], docker_client: docker.APIClient
) -> None:
    for name, ws in workspaces.items():
        networks = ws["info"]["NetworkSettings"]["Networks"]
        assert set(networks) == {NETWORK}, (name, set(networks))
        assert "bridge" not in networks
        assert networks[NETWORK]["IPAddress"], name
    [net] = [n for n in docker_client.networks(names=[NETWORK]) if n["Name"] == NETWORK]
    info = docker_client.inspect_network(net["Id"])
    assert info["Driver"] == "bridge"
    assert info["Options"]["com.docker.network.bridge.enable_icc"] == "false"
    on_it = {c["Name"] for c in info["Containers"].values()}
    assert {ws["info"]["Name"].lstrip("/") for ws in workspaces.values()} <= on_it


def test_bobs_server_answers_bob_but_alice_cannot_reach_it(
    workspaces: dict[str, dict[str, Any]], docker_client: docker.APIClient, users: Users
) -> None:
    alice, bob = workspaces[users.alice]["info"], workspaces[users.bob]["info"]
    ex = docker_client.exec_create(
        bob["Id"], ["python3", "-m", "http.server", str(PORT), "--bind", "0.0.0.0"], workdir="/tmp"
    )
    docker_client.exec_start(ex, detach=True)
    # Bob's own workspace: the server is up (so a failure below is the network's doing).
    deadline = time.monotonic() + 30
    while True:
        own = fetch_from(docker_client, bob["Id"], f"http://127.0.0.1:{PORT}/")
        if own.get("status") == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert own == {"status": 200}, own
    bob_ip = bob["NetworkSettings"]["Networks"][NETWORK]["IPAddress"]
    assert fetch_from(docker_client, bob["Id"], f"http://{bob_ip}:{PORT}/") == {"status": 200}

    # Alice's workspace, on the same network: no connection (dropped, so a timeout).
    other = fetch_from(docker_client, alice["Id"], f"http://{bob_ip}:{PORT}/")
    assert "status" not in other and other.get("error"), other
    # Nor bob's Jupyter server, which listens on every address of his container.
    port = next(iter(bob["Config"]["ExposedPorts"])).split("/")[0]  # "8888/tcp"
    jupyter = fetch_from(docker_client, alice["Id"], f"http://{bob_ip}:{port}/")
    assert "status" not in jupyter and jupyter.get("error"), jupyter


def test_workspaces_still_reach_the_hub_api_and_the_gateway(
    hub: HubProcess,
    workspaces: dict[str, dict[str, Any]],
    docker_client: docker.APIClient,
    users: Users,
) -> None:
    alice = workspaces[users.alice]
    env = dict(e.split("=", 1) for e in alice["info"]["Config"]["Env"])
    # The singleuser server's own route to the Hub (its spawn already depended on it).
    assert fetch_from(docker_client, alice["info"]["Id"], env["JUPYTERHUB_API_URL"]) == {
        "status": 200
    }
    # The gateway, asked by the Codeyard extension in the workspace. Without a model behind
    # it the gateway itself answers (an HTTP error); a network failure would be
    # llm_unavailable or llm_timeout.
    r = requests.get(
        f"{hub.url}/user/{users.alice}/{WS}/codeyard/api/status",
        headers=alice["auth"],
        timeout=60,
    )
    body = r.json()
    assert r.status_code in (200, 503), r.text
    assert "healthy" in body, body
    assert body.get("error") not in ("llm_unavailable", "llm_timeout"), body
