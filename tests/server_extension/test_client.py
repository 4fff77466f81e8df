"""`codeyard.client.Workspace` against the real server, run off the event loop thread."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from codeyard.client import CodeyardAPIError, Workspace, discover


@pytest.fixture
def ws(jp_serverapp, http_server_client, jp_http_port, jp_base_url) -> Workspace:
    return Workspace(
        f"http://127.0.0.1:{jp_http_port}{jp_base_url}", token=jp_serverapp.identity_provider.token
    )


async def test_client_reads_and_patches(ws: Workspace, workspace: Path, git_diff) -> None:
    (workspace / "a.txt").write_text("one\ntwo\n")
    tree = await asyncio.to_thread(ws.tree)
    assert [e["path"] for e in tree["entries"]] == ["a.txt"]
    got = await asyncio.to_thread(ws.read, "a.txt")
    assert got["sha256"] == hashlib.sha256(b"one\ntwo\n").hexdigest()
    diff = git_diff({"a.txt": b"one\ntwo\n"}, {"a.txt": b"one\nTWO\n"})
    check = await asyncio.to_thread(ws.validate, diff)
    assert check["ok"] is True
    applied = await asyncio.to_thread(ws.apply, diff, {"a.txt": got["sha256"]})
    assert (workspace / "a.txt").read_text() == "one\nTWO\n"
    await asyncio.to_thread(ws.revert, applied["patch_id"])
    assert (workspace / "a.txt").read_text() == "one\ntwo\n"
    audit = await asyncio.to_thread(ws.audit, 10)
    assert audit["chain_ok"] is True


async def test_client_raises_with_server_message(ws: Workspace, workspace: Path) -> None:
    with pytest.raises(CodeyardAPIError) as info:
        await asyncio.to_thread(ws.read, "../outside")
    assert info.value.status == 403
    assert info.value.code == "path_forbidden"
    assert "'..'" in info.value.message


async def test_client_with_wrong_token_gets_403(
    http_server_client, jp_http_port, jp_base_url
) -> None:
    bad = Workspace(f"http://127.0.0.1:{jp_http_port}{jp_base_url}", token="wrong")
    with pytest.raises(CodeyardAPIError) as info:
        await asyncio.to_thread(bad.tree)
    assert info.value.status == 403


def test_discover_prefers_explicit_then_hub_environment() -> None:
    hub_env = {
        "JUPYTERHUB_SERVICE_URL": "http://0.0.0.0:8888/user/ann/ws/",
        "JUPYTERHUB_API_TOKEN": "tok",
    }
    found = discover(hub_env)
    assert found.base_url == "http://127.0.0.1:8888/user/ann/ws/"
    assert found.token == "tok"
    explicit = discover(
        {**hub_env, "CODEYARD_SERVER_URL": "http://127.0.0.5:9/x", "CODEYARD_TOKEN": "t2"}
    )
    assert (explicit.base_url, explicit.token) == ("http://127.0.0.5:9/x/", "t2")
