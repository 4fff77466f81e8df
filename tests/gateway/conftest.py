"""Fixtures for the LLM gateway tests: a real vLLM with SmolLM2 and a real JupyterHub.

Run this suite in its own pytest process (`pytest tests/gateway`). The processes start once
per session: vLLM takes 30-70 s on two CPU cores.

Fixtures
--------
vllm (session)
    `support.llm_stack.Vllm`: the model server started by hub_config/vllm/serve.sh on a free
    127.0.0.1 port (`.url`, `.key`, `.start_seconds`).
hub (session)
    `support.hub.JsonApiHub`: a minimal JupyterHub subprocess with six managed gateway services
    (`hub.gateways[name].url`): `codeyard-llm` (defaults), `codeyard-llm-strict` (1 request
    at a time, 60 tokens/min, 2000-byte bodies, max_tokens 8), `codeyard-llm-down` (upstream is
    a closed port), `codeyard-llm-slow` (50 ms upstream timeout), `codeyard-llm-latekey`
    (its vLLM key file appears after start-up) and `codeyard-llm-tuned` (token answers cached
    1 s, idle vLLM connections kept 30 s).
    `hub.user_token(user, scopes=None)` creates a user and a token.
module_hub (module)
    A minimal Hub of the test module's own, running the gateways its module-level
    `MODULE_GATEWAYS` names (service name -> `--GatewayApp.<name>=<value>` arguments) in
    front of the same vLLM, so that every count a module reads comes from its own calls.
gateway, strict_gateway, down_gateway, slow_gateway
    Base URLs (`http://127.0.0.1:<port>`) of those services.
token
    A token of user `alice` holding `custom:codeyard-llm`.
llm
    `llm(method, path, token=..., base=..., **requests_kwargs) -> requests.Response`:
    calls `<base>/v1/<path>` with `Authorization: Bearer <token>`.
audit_rows
    `audit_rows(service_name) -> list[dict]`: the rows the service has written so far.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from support.hub import JsonApiHub
from support.llm_stack import Vllm, start_hub, start_vllm

SCOPE = "custom:codeyard-llm"


@pytest.fixture(scope="session")
def vllm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vllm]:
    server = start_vllm(tmp_path_factory.mktemp("vllm"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def hub(vllm: Vllm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[JsonApiHub]:
    running = start_hub(tmp_path_factory.mktemp("hub"), vllm)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def module_hub(
    request: pytest.FixtureRequest, vllm: Vllm, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[JsonApiHub]:
    gateways: dict[str, list[str]] = request.module.MODULE_GATEWAYS
    name = request.module.__name__.rpartition(".")[2]
    running = start_hub(tmp_path_factory.mktemp(f"{name}-hub"), vllm, gateways)
    yield running
    running.stop()


@pytest.fixture(scope="session")
def gateway(hub: JsonApiHub) -> str:
    return hub.gateways["codeyard-llm"].url


@pytest.fixture(scope="session")
def strict_gateway(hub: JsonApiHub) -> str:
    return hub.gateways["codeyard-llm-strict"].url


@pytest.fixture(scope="session")
def down_gateway(hub: JsonApiHub) -> str:
    return hub.gateways["codeyard-llm-down"].url


@pytest.fixture(scope="session")
def slow_gateway(hub: JsonApiHub) -> str:
    return hub.gateways["codeyard-llm-slow"].url


@pytest.fixture(scope="session")
def token(hub: JsonApiHub) -> str:
    return hub.user_token("alice", [SCOPE])


@pytest.fixture
def llm(gateway: str, token: str) -> Callable[..., requests.Response]:
    def call(
        method: str, path: str, *, token: str | None = token, base: str = gateway, **kw: Any
    ) -> requests.Response:
        headers = dict(kw.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        kw.setdefault("timeout", 120)
        return requests.request(method, f"{base}/v1/{path}", headers=headers, **kw)

    return call


@pytest.fixture
def audit_rows(hub: JsonApiHub) -> Callable[[str], list[dict[str, Any]]]:
    def rows(service: str) -> list[dict[str, Any]]:
        path = Path(hub.workdir) / f"{service}-audit.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    return rows
