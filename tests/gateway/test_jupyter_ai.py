"""jupyter-ai's Jupyternaut answers from the shared model, through the gateway, with the
user's own token, configured only by hub_config/jupyter_ai/jupyter_server_config.py.

jupyter-ai is not in the test venv (the single-user image has it). Point
CODEYARD_JUPYTER_AI_PYTHON at a Python that has `jupyter-ai[jupyternaut]==3.2.0` and
`litellm<1.106` installed, or the test is skipped.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from support.hub import HUB_CONFIG
from support.jupyternaut import chat
from support.processes import free_port, stop_process, wait_http

JAI_PYTHON = os.environ.get("CODEYARD_JUPYTER_AI_PYTHON", "")

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
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HOSTED_VLLM", "JUPYTER", "PYTHONPATH"))
    }
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
            # `-m jupyter server` would look `jupyter-server` up on PATH, where the scripts
            # of this venv come last: with the test venv on PATH (an activated venv) that
            # server ran, without jupyter-ai, and the chat answered 404.
            JAI_PYTHON,
            "-m",
            "jupyter_server",
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


def test_jupyternaut_replies_from_the_model_through_the_gateway(
    jupyter_ai_server: str, audit_rows: Any
) -> None:
    before = len([r for r in audit_rows("codeyard-llm") if r["user"] == "erin"])
    reply = asyncio.run(
        chat(
            f"ws://{jupyter_ai_server}",
            {"Authorization": "token jai-test"},
            "What is 2+2? Answer briefly.",
        )
    )
    assert reply.strip()
    assert not reply.startswith("Error"), reply
    rows = [r for r in audit_rows("codeyard-llm") if r["user"] == "erin"]
    assert len(rows) > before
    assert rows[-1]["status"] == 200
