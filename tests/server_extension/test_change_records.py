"""Every change is recorded: Contents API writes as `contents.*` records, writes by kernels,
terminals and other processes as `external.change` records (found by the inotify watcher),
and with `patch_only` the Contents API and terminals refuse while patches and kernels work.

Everything runs against a real jupyter-server: real Contents API requests, a real ipykernel
driven over the kernels websocket, a real terminal (terminado) and real subprocesses.
Waits for the watcher are bounded polls of `GET audit`, never fixed sleeps. To show that
something was *not* recorded, a sentinel file is written afterwards by a separate process
and its record awaited: the watcher handles events in the order they happen, so once the
sentinel is recorded, anything earlier has been handled too.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from jpconfig import server_config
from support.contents_api import text_file
from tornado.httpclient import HTTPClientError

from codeyard.server_extension.contents_audit import PATCH_ONLY_MESSAGE

#: The watcher is on here (the shared test config turns it off for the other modules).
WATCHING = {"external_changes": True}

WAIT = 30.0  # seconds; the watcher records within about one, a loaded CI machine is slower


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def create(path: str, line: str) -> str:
    return f"--- /dev/null\n+++ b/{path}\n@@ -0,0 +1 @@\n+{line}\n"


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return server_config(CodeyardApp=WATCHING)


@pytest.fixture
def contents(jp_fetch: Any) -> Any:
    """`await contents(method, path, body=None)` on `/api/contents`: (status, json)."""

    async def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
        kwargs: dict[str, Any] = {"method": method}
        if body is not None:
            kwargs["body"] = json.dumps(body)
        elif method in ("POST", "PUT", "PATCH"):
            kwargs["body"] = "{}" if method != "PUT" else ""
        try:
            resp = await jp_fetch("api", "contents", *path.split("/"), **kwargs)
        except HTTPClientError as exc:
            assert exc.response is not None
            return exc.code, json.loads(exc.response.body or b"null")
        return resp.code, json.loads(resp.body or b"null")

    return call


async def records(api: Any) -> list[dict[str, Any]]:
    """Every audit record, oldest first; the chain must verify."""
    status, body = await api("audit", params={"limit": 10_000})
    assert status == 200 and body["chain_ok"] is True, body
    return list(reversed(body["records"]))


def of(found: list[dict[str, Any]], action: str, path: str) -> list[dict[str, Any]]:
    return [r for r in found if r["action"] == action and path in r["paths"]]


async def wait_record(api: Any, action: str, path: str, **expect: Any) -> dict[str, Any]:
    """The first record of `action` naming `path` whose fields hold `expect`; bounded."""
    deadline = time.monotonic() + WAIT
    while True:
        for r in of(await records(api), action, path):
            if all(r.get(k) == v for k, v in expect.items()):
                return r
        assert time.monotonic() < deadline, (action, path, expect, await records(api))
        await asyncio.sleep(0.1)


async def run(*args: str) -> None:
    """A real process outside the server, waited for without blocking the server's loop."""
    proc = await asyncio.create_subprocess_exec(*args)
    assert await proc.wait() == 0, args


async def write_from_process(root: Path, rel: str, data: bytes) -> None:
    """A real writer outside the server: another process, as a terminal command would be."""
    code = (
        "import os, sys\n"
        "p = sys.argv[1]\n"
        "os.makedirs(os.path.dirname(p) or '.', exist_ok=True)\n"
        "open(p, 'wb').write(bytes.fromhex(sys.argv[2]))\n"
    )
    await run(sys.executable, "-c", code, str(root / rel), data.hex())


async def sentinel(api: Any, root: Path) -> None:
    """Write a fresh file from another process and wait for its record (see the docstring)."""
    name = f"sentinel-{uuid.uuid4().hex[:8]}.txt"
    await write_from_process(root, name, b"s\n")
    await wait_record(api, "external.change", name)


async def watcher_ready(jp_serverapp: Any) -> None:
    """The watcher sets its watches in its own thread at start; wait until they are set."""
    (app,) = jp_serverapp.extension_manager.extension_apps["codeyard.server_extension"]
    watcher = app.change_records.watcher
    assert watcher is not None, "the watcher did not start"
    assert await asyncio.to_thread(watcher.ready.wait, WAIT)


async def run_in_kernel(jp_fetch: Any, jp_ws_fetch: Any, code: str) -> None:
    """Start a real ipykernel through the kernels API and execute `code` over its websocket."""
    # `path` is what JupyterLab sends for a notebook's kernel: it runs in that folder (here
    # the workspace root) rather than in the server process's own working folder.
    body = json.dumps({"name": "python3", "path": ""})
    resp = await jp_fetch("api", "kernels", method="POST", body=body)
    kernel_id = json.loads(resp.body)["id"]
    ws = await jp_ws_fetch("api", "kernels", kernel_id, "channels")
    msg_id = uuid.uuid4().hex
    ws.write_message(
        json.dumps(
            {
                "header": {
                    "msg_id": msg_id,
                    "msg_type": "execute_request",
                    "username": "test",
                    "session": uuid.uuid4().hex,
                    "version": "5.3",
                    "date": "",
                },
                "parent_header": {},
                "metadata": {},
                "content": {
                    "code": code,
                    "silent": False,
                    "store_history": False,
                    "user_expressions": {},
                    "allow_stdin": False,
                    "stop_on_error": True,
                },
                "channel": "shell",
                "buffers": [],
            }
        )
    )
    deadline = time.monotonic() + 120
    try:
        while True:
            assert time.monotonic() < deadline, "the kernel did not answer"
            raw = await asyncio.wait_for(ws.read_message(), 120)
            assert raw is not None, "the kernel websocket closed"
            msg = json.loads(raw)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "execute_reply":
                assert msg["content"]["status"] == "ok", msg["content"]
                return
    finally:
        ws.close()
        await jp_fetch("api", "kernels", kernel_id, method="DELETE")


# ---- Contents API writes --------------------------------------------------------------------


async def test_editor_save_records_hashes_sizes_and_lines_never_content(
    api: Any, contents: Any, workspace: Path, jp_serverapp: Any
) -> None:
    await watcher_ready(jp_serverapp)
    marker = f"MARKER-{uuid.uuid4().hex}"
    first = f"print('{marker}')\n"
    body = text_file(first)
    status, _ = await contents("PUT", "app.py", body)
    assert status == 201
    created = await wait_record(api, "contents.create", "app.py")
    assert created["sha256_before"] == {"app.py": None}
    assert created["sha256_after"] == {"app.py": sha(first.encode())}

    second = first + "x = 1\ny = 2"
    status, _ = await contents("PUT", "app.py", {**body, "content": second})
    assert status == 200
    saved = await wait_record(api, "contents.save", "app.py")
    assert saved["paths"] == ["app.py"]
    assert saved["sha256_before"] == {"app.py": sha(first.encode())}
    assert saved["sha256_after"] == {"app.py": sha((workspace / "app.py").read_bytes())}
    assert saved["size_before"] == {"app.py": len(first)}
    assert saved["size_after"] == {"app.py": len(second)}
    assert (saved["lines_before"], saved["lines_after"]) == ({"app.py": 1}, {"app.py": 3})
    assert saved["user"] and saved["user"] != "anonymous"

    await sentinel(api, workspace)
    assert of(await records(api), "external.change", "app.py") == []
    assert marker.encode() not in (workspace / ".codeyard" / "audit.jsonl").read_bytes()


async def test_notebook_save_hashes_the_bytes_written(
    api: Any, contents: Any, workspace: Path
) -> None:
    nb = {
        "cells": [{"cell_type": "code", "source": "1 + 1", "metadata": {}, "outputs": []}],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    status, _ = await contents("PUT", "nb.ipynb", {"type": "notebook", "content": nb})
    assert status == 201
    nb["cells"][0]["source"] = "2 + 2"
    status, _ = await contents("PUT", "nb.ipynb", {"type": "notebook", "content": nb})
    assert status == 200
    saved = await wait_record(api, "contents.save", "nb.ipynb")
    assert saved["sha256_after"] == {"nb.ipynb": sha((workspace / "nb.ipynb").read_bytes())}


async def test_chunked_upload_is_one_record_at_the_last_chunk(
    api: Any, contents: Any, workspace: Path, jp_serverapp: Any
) -> None:
    await watcher_ready(jp_serverapp)
    parts = [b"a" * 1000 + b"\n", b"b" * 1000 + b"\n", b"c" * 10]
    for i, part in enumerate(parts):
        chunk = -1 if i == len(parts) - 1 else i + 1
        body = {
            "type": "file",
            "format": "base64",
            "content": base64.b64encode(part).decode(),
            "chunk": chunk,
        }
        status, _ = await contents("PUT", "big.bin", body)
        assert status in (200, 201)
        if chunk != -1:
            assert of(await records(api), "contents.upload", "big.bin") == []
    whole = b"".join(parts)
    assert (workspace / "big.bin").read_bytes() == whole
    uploaded = of(await records(api), "contents.upload", "big.bin")
    assert len(uploaded) == 1
    assert uploaded[0]["sha256_before"] == {"big.bin": None}
    assert uploaded[0]["sha256_after"] == {"big.bin": sha(whole)}
    assert uploaded[0]["size_after"] == {"big.bin": len(whole)}
    await sentinel(api, workspace)
    assert of(await records(api), "external.change", "big.bin") == []


async def test_rename_delete_and_folders_are_recorded_once(
    api: Any, contents: Any, workspace: Path, jp_serverapp: Any
) -> None:
    await watcher_ready(jp_serverapp)
    data = b"one\ntwo\n"
    body = text_file(data.decode())
    assert (await contents("PUT", "a.txt", body))[0] == 201
    status, _ = await contents("PATCH", "a.txt", {"path": "b.txt"})
    assert status == 200
    renamed = await wait_record(api, "contents.rename", "b.txt")
    assert renamed["paths"] == ["a.txt", "b.txt"]
    assert renamed["sha256_before"] == {"a.txt": sha(data), "b.txt": None}
    assert renamed["sha256_after"] == {"a.txt": None, "b.txt": sha(data)}

    status, _ = await contents("DELETE", "b.txt")
    assert status == 204
    deleted = await wait_record(api, "contents.delete", "b.txt")
    assert deleted["sha256_before"] == {"b.txt": sha(data)}
    assert deleted["sha256_after"] == {"b.txt": None}
    assert deleted["lines_before"] == {"b.txt": 2}

    status, made = await contents("POST", "", {"type": "directory"})
    assert status == 201
    folder = made["path"]
    mkdir = await wait_record(api, "contents.mkdir", folder)
    assert mkdir["kind"] == "directory"
    assert (await contents("PUT", f"{folder}/in.txt", body))[0] == 201
    assert (await contents("PATCH", folder, {"path": "moved"}))[0] == 200
    await wait_record(api, "contents.rename", "moved", kind="directory")
    assert (await contents("DELETE", "moved"))[0] == 204
    await wait_record(api, "contents.delete", "moved", kind="directory")

    await sentinel(api, workspace)
    external = [r for r in await records(api) if r["action"] == "external.change"]
    assert [p for r in external for p in r["paths"] if not p.startswith("sentinel-")] == []


# ---- external writers -----------------------------------------------------------------------


async def test_kernel_write_is_an_external_change(
    api: Any, jp_fetch: Any, jp_ws_fetch: Any, jp_serverapp: Any
) -> None:
    await watcher_ready(jp_serverapp)
    await run_in_kernel(jp_fetch, jp_ws_fetch, "open('k.txt','w').write('x')")
    record = await wait_record(api, "external.change", "k.txt")
    assert record["sha256_after"]["k.txt"] == sha(b"x")
    assert record["size_after"]["k.txt"] == 1
    assert record["sha256_before"] == {}  # the extension never knew k.txt before


async def test_process_writes_in_new_folders_modify_and_delete(
    api: Any, workspace: Path, jp_serverapp: Any
) -> None:
    await watcher_ready(jp_serverapp)
    await write_from_process(workspace, "deep/er/t.txt", b"v1\n")
    first = await wait_record(api, "external.change", "deep/er/t.txt")
    assert first["sha256_after"] == {"deep/er/t.txt": sha(b"v1\n")}
    await write_from_process(workspace, "deep/er/t.txt", b"v2\n")
    second = await wait_record(
        api, "external.change", "deep/er/t.txt", sha256_after={"deep/er/t.txt": sha(b"v2\n")}
    )
    assert second["sha256_before"] == {"deep/er/t.txt": sha(b"v1\n")}
    await run("rm", "-rf", str(workspace / "deep"))
    gone = await wait_record(
        api, "external.change", "deep/er/t.txt", sha256_after={"deep/er/t.txt": None}
    )
    assert gone["sha256_before"] == {"deep/er/t.txt": sha(b"v2\n")}


async def test_git_internals_and_the_state_folder_are_not_recorded(
    api: Any, workspace: Path, jp_serverapp: Any
) -> None:
    await watcher_ready(jp_serverapp)
    await run("git", "init", "-q", str(workspace))
    await write_from_process(workspace, ".git/hooks/extra", b"#!/bin/sh\n")
    await write_from_process(workspace, ".codeyard/scratch/note", b"n\n")
    await sentinel(api, workspace)
    found = await records(api)
    assert not [r for r in found if any(p.startswith((".git", ".codeyard")) for p in r["paths"])]


async def test_patch_apply_is_not_recorded_again_as_external(
    api: Any, workspace: Path, jp_serverapp: Any
) -> None:
    await watcher_ready(jp_serverapp)
    for name in ("p.txt", "new/dir/q.txt"):
        status, body = await api("patch/apply", body={"diff": create(name, "patched")})
        assert status == 200, body
    status, reverted = await api(f"patch/{body['patch_id']}/revert", body={})
    assert status == 200, reverted
    await sentinel(api, workspace)
    found = await records(api)
    assert [r["action"] for r in found if "p.txt" in r["paths"]] == ["patch.apply"]
    assert [r["action"] for r in found if "new/dir/q.txt" in r["paths"]] == [
        "patch.apply",
        "patch.revert",
    ]


# ---- terminals, with and without patch_only ----------------------------------------------------


class TestTerminalsRecorded:
    """Terminals on (the default outside patch_only): a shell's write is an external change."""

    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        config = server_config(CodeyardApp=WATCHING)
        config["ServerApp"]["jpserver_extensions"]["jupyter_server_terminals"] = True
        del config["ServerApp"]["terminals_enabled"]
        return config

    # jupyter_server_terminals' websocket handler predates the auth decorator check.
    @pytest.mark.filterwarnings("ignore::jupyter_server.utils.JupyterServerAuthWarning")
    async def test_terminal_write_is_an_external_change(
        self, api: Any, jp_fetch: Any, jp_ws_fetch: Any, jp_serverapp: Any, workspace: Path
    ) -> None:
        await watcher_ready(jp_serverapp)
        # JupyterLab opens a terminal in the file browser's folder; here the workspace root.
        body = json.dumps({"cwd": str(workspace)})
        resp = await jp_fetch("api", "terminals", method="POST", body=body)
        name = json.loads(resp.body)["name"]
        ws = await jp_ws_fetch("terminals", "websocket", name)
        try:
            ws.write_message(json.dumps(["stdin", "printf 'from-shell' > term.txt\r"]))
            record = await wait_record(api, "external.change", "term.txt")
        finally:
            ws.close()
            await jp_fetch("api", "terminals", name, method="DELETE")
        assert record["sha256_after"] == {"term.txt": sha(b"from-shell")}


class TestPatchOnly:
    """`CodeyardApp.patch_only`: the Contents API and terminals refuse, patches and kernels work."""

    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        config = server_config(CodeyardApp={**WATCHING, "patch_only": True})
        config["ServerApp"]["jpserver_extensions"]["jupyter_server_terminals"] = True
        del config["ServerApp"]["terminals_enabled"]
        return config

    async def test_contents_writes_are_refused_with_a_clear_message(
        self, api: Any, contents: Any, workspace: Path
    ) -> None:
        (workspace / "keep.txt").write_bytes(b"keep\n")
        body = text_file("nope\n")
        for method, path, payload in (
            ("PUT", "new.txt", body),
            ("PUT", "keep.txt", body),
            ("POST", "", {"type": "file"}),
            ("POST", "", {"type": "directory"}),
            ("POST", "", {"copy_from": "keep.txt"}),
            ("PATCH", "keep.txt", {"path": "renamed.txt"}),
            ("DELETE", "keep.txt", None),
        ):
            status, answer = await contents(method, path, payload)
            assert (status, answer["message"]) == (403, PATCH_ONLY_MESSAGE), (method, path)
        names = await asyncio.to_thread(os.listdir, workspace)
        assert sorted(n for n in names if n != ".codeyard") == ["keep.txt"]
        assert (workspace / "keep.txt").read_bytes() == b"keep\n"
        assert not [r for r in await records(api) if r["action"].startswith("contents.")]

    async def test_terminals_are_off(self, jp_fetch: Any) -> None:
        with pytest.raises(HTTPClientError) as refused:
            await jp_fetch("api", "terminals", method="POST", body="{}")
        assert refused.value.code == 404

    async def test_patches_apply_and_kernel_writes_are_recorded(
        self, api: Any, jp_fetch: Any, jp_ws_fetch: Any, workspace: Path, jp_serverapp: Any
    ) -> None:
        await watcher_ready(jp_serverapp)
        status, body = await api("patch/apply", body={"diff": create("via-patch.txt", "ok")})
        assert status == 200, body
        assert (workspace / "via-patch.txt").read_bytes() == b"ok\n"
        await run_in_kernel(jp_fetch, jp_ws_fetch, "open('k.txt','w').write('kernel')")
        record = await wait_record(api, "external.change", "k.txt")
        assert record["sha256_after"] == {"k.txt": sha(b"kernel")}
        found = await records(api)
        assert [r["action"] for r in found if "via-patch.txt" in r["paths"]] == ["patch.apply"]


class TestWatchLimit:
    """Past `external_max_watches` folders, further folders are not watched, and that is said."""

    @pytest.fixture
    def jp_server_config(self) -> dict[str, Any]:
        return server_config(CodeyardApp={**WATCHING, "external_max_watches": 2})

    @pytest.fixture
    def jp_root_dir(self, tmp_path: Path) -> Path:
        root = tmp_path / "root_dir"
        for folder in ("one", "two", "three"):
            (root / folder).mkdir(parents=True)
        return root

    async def test_limit_is_recorded_and_unwatched_folders_are_not(
        self, api: Any, workspace: Path, jp_serverapp: Any
    ) -> None:
        await watcher_ready(jp_serverapp)
        (limit,) = [r for r in await records(api) if r["action"] == "watcher.limit"]
        assert (limit["watched"], limit["limit"]) == (2, 2)
        (app,) = jp_serverapp.extension_manager.extension_apps["codeyard.server_extension"]
        watched = set(app.change_records.watcher._dirs)
        assert len(watched) == 2 and "" in watched  # the root, and one of the three
        unwatched = sorted({"one", "two", "three"} - watched)[0]
        await write_from_process(workspace, f"{unwatched}/lost.txt", b"x\n")
        await sentinel(api, workspace)
        assert of(await records(api), "external.change", f"{unwatched}/lost.txt") == []
