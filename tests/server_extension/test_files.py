"""`GET codeyard/api/files`: content, hash, binary (415), size limit (413), errors."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path


async def test_read_text_file_with_hash(api, workspace: Path) -> None:
    data = b"line one\r\nline two\r\n"
    (workspace / "crlf.txt").write_bytes(data)
    status, body = await api("files", params={"path": "crlf.txt"})
    assert status == 200
    assert body["content"] == data.decode()
    assert body["encoding"] == "utf-8"
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["size"] == len(data)
    assert body["path"] == "crlf.txt"
    assert isinstance(body["mtime"], float)


async def test_binary_file_gives_415_unless_base64(api, workspace: Path) -> None:
    data = bytes(range(256))
    (workspace / "blob.bin").write_bytes(data)
    status, body = await api("files", params={"path": "blob.bin"})
    assert status == 415 and body["error"] == "binary_file"
    assert "base64" in body["message"]
    status, body = await api("files", params={"path": "blob.bin", "encoding": "base64"})
    assert status == 200
    assert base64.b64decode(body["content"]) == data
    assert body["sha256"] == hashlib.sha256(data).hexdigest()


async def test_latin1_text_counts_as_binary(api, workspace: Path) -> None:
    (workspace / "latin.txt").write_bytes("caf\u00e9".encode("latin-1"))
    status, body = await api("files", params={"path": "latin.txt"})
    assert (status, body["error"]) == (415, "binary_file")


async def test_file_over_limit_gives_413(api, workspace: Path, jp_serverapp) -> None:
    reader = jp_serverapp.web_app.settings["codeyard_files"]
    assert reader.max_size == 2 * 1024 * 1024, "default limit is 2 MiB"
    (workspace / "big.txt").write_bytes(b"a" * (reader.max_size + 1))
    (workspace / "edge.txt").write_bytes(b"a" * reader.max_size)
    status, body = await api("files", params={"path": "big.txt"})
    assert status == 413 and body["error"] == "file_too_large"
    assert body["limit"] == reader.max_size
    status, body = await api("files", params={"path": "edge.txt"})
    assert status == 200 and body["size"] == reader.max_size


async def test_symlink_inside_workspace_is_followed(api, workspace: Path) -> None:
    (workspace / "real.txt").write_text("real\n")
    os.symlink("real.txt", workspace / "alias.txt")
    status, body = await api("files", params={"path": "alias.txt"})
    assert status == 200 and body["content"] == "real\n"


async def test_file_errors(api, workspace: Path, tmp_path_factory) -> None:
    outside = tmp_path_factory.mktemp("outside") / "secret.txt"
    outside.write_text("secret")
    os.symlink(outside, workspace / "escape.txt")
    (workspace / "dir").mkdir()
    cases = [
        ({}, 400),
        ({"path": "nope.txt"}, 404),
        ({"path": "dir"}, 400),
        ({"path": "escape.txt"}, 403),
        ({"path": "../etc/passwd"}, 403),
        ({"path": "/etc/passwd"}, 403),
        ({"path": "a\x00b"}, 403),
        ({"path": "%2e%2e/etc/passwd"}, 403),
        ({"path": "x.txt", "encoding": "utf-16"}, 400),
    ]
    for params, status in cases:
        got, body = await api("files", params=params)
        assert got == status, (params, body)
        assert set(body) >= {"error", "message"}
        assert "secret" not in body["message"]


async def test_path_that_is_not_utf8_gives_400(jp_fetch, workspace: Path) -> None:
    from tornado.httpclient import HTTPClientError

    (workspace / "ok.txt").write_text("x")
    try:
        await jp_fetch("codeyard", "api", "files", params={"path": b"\xff\xfe.txt"})
    except HTTPClientError as exc:
        assert exc.code in (400, 403)
    else:  # pragma: no cover - reaching here is the failure
        raise AssertionError("a non-UTF-8 path was accepted")
