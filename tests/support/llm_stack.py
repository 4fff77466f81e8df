"""The real model stack for tests and benchmarks: vLLM (hub_config/vllm/serve.sh) and a minimal
JupyterHub running LLM gateway services in front of it.

Plain functions, used by session fixtures of several suites (gateway, server_extension, ui),
which run in separate pytest processes, and by tests/bench/bench_gateway.py. Everything
listens on 127.0.0.1 only. Set CODEYARD_TEST_VLLM_URL (and CODEYARD_TEST_VLLM_KEY_FILE) to
reuse a vLLM that is already running, e.g. one started once by `make test` for every suite;
otherwise each caller starts its own.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.hub import HUB_CONFIG, Gateway, JsonApiHub
from support.processes import free_port, stop_process, wait_http

MODEL = "smollm2"

# name -> extra GatewayApp arguments. Each runs as its own managed Hub service.
GATEWAYS: dict[str, list[str]] = {
    "codeyard-llm": [],
    "codeyard-llm-strict": [
        "--GatewayApp.max_concurrent_per_user=1",
        "--GatewayApp.tokens_per_minute_per_user=60",
        "--GatewayApp.max_body_bytes=2000",
        "--GatewayApp.max_tokens_cap=8",
    ],
    # Its upstream is a closed port.
    "codeyard-llm-down": [],
    "codeyard-llm-slow": ["--GatewayApp.upstream_timeout=0.05"],
    # Its key file appears only after start-up, as when the Hub starts it before vLLM.
    "codeyard-llm-latekey": [],
    # Token answers cached for 1 s (revocation test); idle upstream connections kept past
    # vLLM's own 5 s keep-alive, so vLLM closes them first (dead-connection test).
    "codeyard-llm-tuned": [
        "--GatewayApp.token_cache_seconds=1",
        "--GatewayApp.upstream_keepalive_seconds=30",
    ],
}


@dataclass
class Vllm:
    url: str
    key_file: Path
    proc: subprocess.Popen[Any] | None = None
    start_seconds: float = 0.0

    @property
    def key(self) -> str:
        return self.key_file.read_text().strip()

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


def start_vllm(workdir: Path, timeout: float = 300) -> Vllm:
    """Run setup.sh + serve.sh on a free port; return once /health answers."""
    external = os.environ.get("CODEYARD_TEST_VLLM_URL")
    if external:
        return Vllm(external, Path(os.environ["CODEYARD_TEST_VLLM_KEY_FILE"]))
    port = free_port()
    key_file = workdir / "vllm.key"
    env = {
        **os.environ,
        "CODEYARD_VLLM_PORT": str(port),
        "CODEYARD_VLLM_KEY_FILE": str(key_file),
        "CODEYARD_VLLM_LOG": str(workdir / "vllm.log"),
    }
    started = time.monotonic()
    with (workdir / "serve.log").open("wb") as log:
        proc = subprocess.Popen(
            [str(HUB_CONFIG / "vllm" / "serve.sh")],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", timeout, proc)
    except Exception:
        stop_process(proc)
        raise RuntimeError(
            "vLLM did not start:\n" + (workdir / "serve.log").read_text()[-3000:]
        ) from None
    return Vllm(url, key_file, proc, time.monotonic() - started)


def start_hub(
    workdir: Path, vllm: Vllm, gateways: dict[str, list[str]] | None = None
) -> JsonApiHub:
    """A started minimal Hub running `gateways` (name -> GatewayApp arguments; default
    `GATEWAYS`) in front of `vllm`, any user allowed to log in."""
    gateways = GATEWAYS if gateways is None else gateways
    closed = f"http://127.0.0.1:{free_port()}"
    specs = {
        name: Gateway(
            name,
            upstream_url=closed if name == "codeyard-llm-down" else vllm.url,
            key_file=str(workdir / "late.key" if name == "codeyard-llm-latekey" else vllm.key_file),
            args=tuple(args),
        )
        for name, args in gateways.items()
    }
    hub = JsonApiHub(
        state_dir=workdir, gateways=specs, site_config="c.Authenticator.allow_all = True"
    )
    hub.start()
    return hub
