"""jupyter-ai's Jupyternaut answers from the shared model, through the gateway, with the
user's own token, configured only by hub_config/jupyter_ai/jupyter_server_config.py.

jupyter-ai is not in the test venv (the single-user image has it). Point
CODEYARD_JUPYTER_AI_PYTHON at a Python that has `jupyter-ai[jupyternaut]==3.2.0` and
`litellm<1.106` installed, or the test is skipped.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from support.hub import HUB_CONFIG
from support.processes import free_port, stop_process, wait_http
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

JAI_PYTHON = os.environ.get("CODEYARD_JUPYTER_AI_PYTHON", "")
PERSONA = "jupyter-ai-personas::jupyter_ai_jupyternaut::JupyternautPersona"

pytestmark = pytest.mark.skipif(
    not (JAI_PYTHON and Path(JAI_PYTHON).exists()),
    reason="set CODEYARD_JUPYTER_AI_PYTHON to a Python with jupyter-ai 3.2 to run",
)


@pytest.fixture
def jupyter_ai_server(hub: Any, gateway: str, tmp_path: Path) -> Any:
    token = hub.user_token("erin", ["custom:codeyard-llm"])
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    shutil.copy(HUB_CONFIG / "jupyter_ai" / "jupyter_server_config.py", config_dir)
    root = tmp_path / "root"
    root.mkdir()
    (root / "test.chat").write_text("{}")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOSTED_VLLM", "JUPYTER"))}
    env.update(
        JUPYTER_CONFIG_DIR=str(config_dir),
        JUPYTER_DATA_DIR=str(tmp_path / "data"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        CODEYARD_LLM_URL=gateway,
        JUPYTERHUB_API_TOKEN=token,
    )
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [
            JAI_PYTHON,
            "-m",
            "jupyter",
            "server",
            "--ip=127.0.0.1",
            f"--port={port}",
            "--IdentityProvider.token=jai-test",
            "--allow-root",
            "--no-browser",
            f"--MCPExtensionApp.mcp_port={free_port()}",
        ],
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/api/status?token=jai-test", 120, proc)
        yield f"127.0.0.1:{port}"
    finally:
        stop_process(proc)


async def chat(base: str, text: str, wait_s: float = 240) -> str:
    request = HTTPRequest(
        f"ws://{base}/api/chat/ws/test.chat", headers={"Authorization": "token jai-test"}
    )
    ws = await websocket_connect(request)
    hello = json.loads(await ws.read_message())
    assert hello["action"] == "connection"
    # The persona manager attaches to a new chat shortly after the first client connects.
    await asyncio.sleep(3)
    message = {
        "type": "client",
        "action": "send",
        "id": uuid.uuid4().hex,
        "body": text,
        "metadata": {"to_persona": PERSONA},
    }
    await ws.write_message(json.dumps(message))
    deadline = time.monotonic() + wait_s
    reply = ""
    while time.monotonic() < deadline:
        raw = await asyncio.wait_for(ws.read_message(), deadline - time.monotonic())
        if raw is None:
            break
        frame = json.loads(raw)
        body = frame.get("message") or {}
        if frame.get("action") == "message" and body.get("sender") == PERSONA:
            reply = body.get("body") or ""
            if reply.strip():
                # Streamed replies are updated in place; wait for a short quiet spell.
                try:
                    while True:
                        raw = await asyncio.wait_for(ws.read_message(), 5)
                        if raw is None:
                            break
                        frame = json.loads(raw)
                        body = frame.get("message") or {}
                        if body.get("sender") == PERSONA and body.get("body"):
                            reply = body["body"]
                except TimeoutError:
                    pass
                break
    ws.close()
    return reply


def test_jupyternaut_replies_from_the_model_through_the_gateway(
    jupyter_ai_server: str, audit_rows: Any
) -> None:
    before = len([r for r in audit_rows("codeyard-llm") if r["user"] == "erin"])
    reply = asyncio.run(chat(jupyter_ai_server, "What is 2+2? Answer briefly."))
    assert reply.strip()
    assert not reply.startswith("Error"), reply
    rows = [r for r in audit_rows("codeyard-llm") if r["user"] == "erin"]
    assert len(rows) > before
    assert rows[-1]["status"] == 200
