"""Jupyternaut in a real workspace: a signed-up user's workspace container, spawned by the
real Hub, answers a chat from the shared model through the Hub's proxy, with jupyter-ai's
heavy server extensions loaded on first use rather than at start.

container (its own JUPYTERHUB_API_TOKEN) -> gateway -> vLLM, as in test_model_in_workspace;
the chat goes over jupyterlab-chat's websocket through configurable-http-proxy, as the lab's
chat panel sends it. Before the first use the workspace has not loaded Jupyternaut (its
presence probe says so and the MCP server's port is closed); after it, both are there.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import docker
import pytest
import requests
from support.browser import signed_in, start_workspace
from support.contents_api import write_text
from support.hub import HubProcess
from support.jupyternaut import chat

pytestmark = pytest.mark.slow

PASSWORD = "correct-horse-battery-7"
MCP_PORT_HEX = ":0BB9"  # 3001, jupyter-ai's MCP server (bound to 127.0.0.1 in the image)


def container_id(client: docker.APIClient, user: str, workspace: str) -> str:
    found = client.containers(
        filters={"label": [f"codeyard.user={user}", f"codeyard.workspace={workspace}"]}
    )
    assert len(found) == 1, found
    return str(found[0]["Id"])


def fresh_workspace(
    hub: HubProcess, client: docker.APIClient, user: str, ws_name: str
) -> tuple[dict[str, str], str, str]:
    """A new user's workspace, started: its auth header, container id and base URL. Each
    test starts its own, so Jupyternaut is not loaded yet when the test begins."""
    b = signed_in(hub.url, user, PASSWORD)
    auth = start_workspace(hub, b, user, ws_name)
    return auth, container_id(client, user, ws_name), f"{hub.url}/user/{user}/{ws_name}"


def mcp_listening(client: docker.APIClient, cid: str) -> bool:
    """Whether something in the container listens on the MCP port (state 0A in /proc/net/tcp)."""
    exec_id = client.exec_create(cid, ["cat", "/proc/net/tcp"])["Id"]
    rows = client.exec_start(exec_id).decode().splitlines()[1:]
    return any(MCP_PORT_HEX in r.split()[1] and r.split()[3] == "0A" for r in rows if r.strip())


def audit_rows_for(hub: HubProcess, user: str) -> list[dict[str, object]]:
    audit = Path(hub.state_dir) / "llm-audit.jsonl"
    text = audit.read_text() if audit.exists() else ""
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [r for r in rows if r.get("user") == user]


def assert_real_reply(reply: str) -> None:
    assert reply.strip(), "Jupyternaut did not reply"
    assert not reply.startswith("Error"), reply
    assert "No chat model is configured" not in reply, reply


def test_jupyternaut_answers_in_a_workspace_after_loading_on_first_chat(
    model_hub: HubProcess, users, docker_client: docker.APIClient
) -> None:
    hub, user, ws_name = model_hub, users.alice, "naut"
    auth, cid, base = fresh_workspace(hub, docker_client, user, ws_name)

    # Started, lab-ready, and Jupyternaut not loaded: the page-load probe is answered by the
    # placeholder and the MCP server is not up.
    probe = requests.get(f"{base}/api/jupyternaut/get-example", headers=auth, timeout=30)
    assert probe.status_code == 200, probe.text
    assert probe.json()["loaded"] is False, probe.text
    assert not mcp_listening(docker_client, cid)
    assert requests.get(f"{base}/lab", headers=auth, timeout=60).status_code == 200

    write_text(base, "test.chat", "{}", auth)
    before = len(audit_rows_for(hub, user))
    ws_base = base.replace("http://", "ws://", 1)
    reply = asyncio.run(chat(ws_base, auth, "What is 2+2? Answer briefly."))
    assert_real_reply(reply)
    print(f"Jupyternaut in the workspace: {reply[:200]!r}")

    # The first chat loaded the real extensions: the real probe handler, the MCP server, and
    # Jupyternaut's config API with the model the image configures.
    probe = requests.get(f"{base}/api/jupyternaut/get-example", headers=auth, timeout=30)
    assert probe.status_code == 200 and "loaded" not in probe.json(), probe.text
    assert mcp_listening(docker_client, cid)
    config = requests.get(f"{base}/api/jupyternaut/config", headers=auth, timeout=60)
    assert config.status_code == 200, config.text
    assert config.json()["model_provider_id"].startswith("hosted_vllm/"), config.text

    # The reply came from the model through the gateway, as this user.
    deadline = time.monotonic() + 10
    while len(audit_rows_for(hub, user)) <= before:
        assert time.monotonic() < deadline, "no gateway audit row for the chat"
        time.sleep(0.2)
    assert audit_rows_for(hub, user)[-1]["status"] == 200


def test_jupyternaut_settings_request_loads_it_then_the_chat_answers(
    model_hub: HubProcess, users, docker_client: docker.APIClient
) -> None:
    hub, user, ws_name = model_hub, users.bob, "nautcfg"
    auth, cid, base = fresh_workspace(hub, docker_client, user, ws_name)
    assert not mcp_listening(docker_client, cid)

    # The settings panel's first call loads the extensions and is redirected to itself (307);
    # the real handler answers it, writes included.
    first = requests.get(
        f"{base}/api/jupyternaut/config", headers=auth, timeout=300, allow_redirects=False
    )
    assert first.status_code == 307, first.text
    assert first.headers["Location"].endswith(f"/user/{user}/{ws_name}/api/jupyternaut/config")
    config = requests.get(f"{base}/api/jupyternaut/config", headers=auth, timeout=60)
    assert config.status_code == 200, config.text
    assert config.json()["model_provider_id"].startswith("hosted_vllm/"), config.text
    deadline = time.monotonic() + 60
    while not mcp_listening(docker_client, cid):
        assert time.monotonic() < deadline, "the MCP server did not start after loading"
        time.sleep(0.5)

    write_text(base, "test.chat", "{}", auth)
    reply = asyncio.run(chat(base.replace("http://", "ws://", 1), auth, "Say hello briefly."))
    assert_real_reply(reply)
