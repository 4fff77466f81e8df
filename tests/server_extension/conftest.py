"""Fixtures for the server-extension tests: a real jupyter-server with Codeyard loaded.

These run in their own pytest invocation (pytest-jupyter brings its own event loop, which
clashes with the Hub tests' loops).

Fixtures
--------
jp_server_config
    Enables `codeyard.server_extension` and refuses unauthenticated access.
workspace
    The server's root folder (`jp_root_dir`) as a `pathlib.Path`, empty at the start.
api
    `await api("tree", params={...})` / `await api("patch/apply", body={...})`: calls the real
    server through `jp_fetch` under `codeyard/api/`, never raising on HTTP errors; returns
    `(status, json_body)`.
settle
    `settle()`: retire the patch transactions the server answered (it does so in the
    background); call it before looking inside `.codeyard/`.
git_diff
    `git_diff(before: dict[str, bytes|None], after: dict[str, bytes|None]) -> str`: a real
    `git diff -M --binary` between two trees built in a scratch repository.
without_token
    `await without_token(endpoint, method="GET", body=None)`: calls the real server's
    `codeyard/api/<endpoint>` over HTTP with no token (`jp_fetch` always sends one), expects
    it refused, and returns the `HTTPClientError` for the caller's checks.
model_stack
    Session-scoped: real vLLM + JupyterHub + the LLM gateway (tests/support/llm_stack.py),
    started on first use only; `{"url": gateway URL, "token": a user token}`.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jpconfig import server_config
from support import llm_stack
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

pytest_plugins = ("pytest_jupyter.jupyter_server",)

ApiCall = Callable[..., Awaitable[tuple[int, Any]]]


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return server_config()


@pytest.fixture
def workspace(jp_root_dir: Path) -> Path:
    return Path(jp_root_dir)


@pytest.fixture
def settle(jp_serverapp: Any) -> Callable[[], None]:
    manager = jp_serverapp.web_app.settings["codeyard_patches"]
    return manager.settle  # type: ignore[no-any-return]


@pytest.fixture
def api(jp_fetch: Any, jp_serverapp: Any) -> ApiCall:
    async def call(
        endpoint: str,
        *,
        method: str | None = None,
        params: dict[str, Any] | None = None,
        body: Any = None,
        raw_body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        # pytest-jupyter's 20 s default is too short for a CPU model answering on a busy
        # 2-core CI machine; a hang still fails, after 180 s.
        kwargs: dict[str, Any] = {
            "params": params or {},
            "headers": headers or {},
            "request_timeout": 180,
        }
        if raw_body is not None:
            kwargs["body"] = raw_body
        elif body is not None:
            kwargs["body"] = json.dumps(body)
        verb = method or ("POST" if "body" in kwargs else "GET")
        try:
            resp = await jp_fetch("codeyard", "api", *endpoint.split("/"), method=verb, **kwargs)
        except HTTPClientError as exc:
            assert exc.response is not None, exc
            return exc.code, json.loads(exc.response.body or b"null")
        return resp.code, json.loads(resp.body or b"null")

    return call


@pytest.fixture
def without_token(
    http_server_client: Any, jp_base_url: str, jp_http_port: int
) -> Callable[..., Awaitable[HTTPClientError]]:
    # http_server_client makes the real server listen; a plain client sends no token.
    async def call(endpoint: str, method: str = "GET", body: str | None = None) -> HTTPClientError:
        url = f"http://127.0.0.1:{jp_http_port}{jp_base_url}codeyard/api/{endpoint}"
        with pytest.raises(HTTPClientError) as info:
            await AsyncHTTPClient().fetch(url, method=method, body=body)
        return info.value

    return call


def _write_tree(root: Path, files: dict[str, bytes | None]) -> None:
    for rel, data in files.items():
        if data is None:
            continue
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


@pytest.fixture
def git_diff(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., str]:
    def make(before: dict[str, bytes | None], after: dict[str, bytes | None]) -> str:
        repo = tmp_path_factory.mktemp("gitdiff")
        env_git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
        subprocess.run([*env_git, "init", "-q"], check=True)
        _write_tree(repo, before)
        subprocess.run([*env_git, "add", "-A"], check=True)
        subprocess.run([*env_git, "commit", "-q", "--allow-empty", "-m", "a"], check=True)
        for rel, data in after.items():
            target = repo / rel
            if data is None:
                target.unlink(missing_ok=True)
        for rel in before:
            if rel not in after:
                (repo / rel).unlink(missing_ok=True)
        _write_tree(repo, after)
        subprocess.run([*env_git, "add", "-A"], check=True)
        out = subprocess.run(
            [*env_git, "diff", "--cached", "-M", "--no-color", "--no-ext-diff"],
            check=True,
            capture_output=True,
        )
        return out.stdout.decode("utf-8", "surrogateescape")

    return make


@pytest.fixture(scope="session")
def model_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    # Sync and session-scoped: pytest-jupyter's per-test event loop must not own these
    # processes, and vLLM takes about a minute to start on a loaded machine.
    vllm = llm_stack.start_vllm(tmp_path_factory.mktemp("vllm"))
    hub = llm_stack.start_hub(tmp_path_factory.mktemp("hub"), vllm, {"codeyard-llm": []})
    try:
        yield {
            "url": hub.gateways["codeyard-llm"].url,
            "token": hub.user_token("ws-user", ["custom:codeyard-llm"]),
        }
    finally:
        hub.stop()
        vllm.stop()


def pytest_configure(config: pytest.Config) -> None:
    # The template's check: any handler shipped without authentication fails the run.
    config.addinivalue_line(
        "filterwarnings", "error::jupyter_server.utils.JupyterServerAuthWarning"
    )
