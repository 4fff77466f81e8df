"""The shared model in a real workspace: a signed-up user's workspace answers explain through
the Hub's proxy with text from the real model.

container (its own JUPYTERHUB_API_TOKEN) -> gateway (managed Hub service on the docker
bridge) -> vLLM. The vLLM is the one `hub_config/vllm/with-vllm.sh` started for this run
(CODEYARD_TEST_VLLM_URL / CODEYARD_TEST_VLLM_KEY_FILE); the Hub starts none of its own.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import docker
import pytest
from support.browser import signed_in, start_workspace
from support.hub import HubProcess
from support.hub_workspaces import explain_from_workspace

pytestmark = pytest.mark.slow

PASSWORD = "correct-horse-battery-7"
WS = "model"


def test_workspace_explains_code_with_the_real_model(
    model_hub: HubProcess, users, docker_client: docker.APIClient
) -> None:
    hub = model_hub
    user = users.alice
    b = signed_in(hub.url, user, PASSWORD)
    auth = start_workspace(hub, b, user, WS)

    # The Hub handed the container the gateway and the tokenizer.
    found = docker_client.containers(
        filters={"label": [f"codeyard.user={user}", f"codeyard.workspace={WS}"]}
    )
    info = docker_client.inspect_container(found[0]["Id"])
    env = dict(e.split("=", 1) for e in info["Config"]["Env"])
    assert env["CODEYARD_LLM_URL"] == f"http://172.17.0.1:{hub.llm_port}", env
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    if "CODEYARD_TOKENIZER_FILE" in env:
        assert mounts[env["CODEYARD_TOKENIZER_FILE"]]["RW"] is False

    body, elapsed = explain_from_workspace(hub, f"{hub.url}/user/{user}/{WS}", auth)
    assert isinstance(body["text"], str) and body["text"].strip(), body
    assert body["usage"]["completion_tokens"] > 0, body
    assert body["usage"]["prompt_tokens"] > 0, body
    print(f"explain via container -> gateway -> vLLM in {elapsed:.1f}s: {body['text'][:200]!r}")

    # The call went through the gateway as this user (its audit log has the row).
    audit = Path(hub.state_dir) / "llm-audit.jsonl"
    deadline = time.monotonic() + 10
    while True:
        text = audit.read_text() if audit.exists() else ""
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        if any(row.get("user") == user for row in rows):
            break
        assert time.monotonic() < deadline, f"no audit row for {user}: {rows[-3:]}"
        time.sleep(0.2)
