"""`GET audit`, and the promise that the audit trail never holds code or diff text."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest

RECORD_KEYS = {
    "seq",
    "ts",
    "user",
    "action",
    "paths",
    "sha256_before",
    "sha256_after",
    "patch_sha256",
    "patch_id",
    "prev",
    "hash",
}


def leaks(root: Path, markers: set[str], skip: set[str]) -> list[tuple[str, str]]:
    """(file, marker) for every marker found in a file under `root` outside `skip`."""
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not path.is_symlink() and rel not in skip:
            data = path.read_bytes()
            found += [(rel, m) for m in markers if m.encode() in data]
    return found


def create(path: str, line: str) -> str:
    return f"--- /dev/null\n+++ b/{path}\n@@ -0,0 +1 @@\n+{line}\n"


async def test_audit_lists_newest_first_with_chain_ok(api, workspace: Path) -> None:
    ids = []
    for name in ("one.txt", "two.txt"):
        status, body = await api("patch/apply", body={"diff": create(name, "x")})
        assert status == 200
        ids.append(body["patch_id"])
    assert (await api(f"patch/{ids[0]}/revert", body={}))[0] == 200

    status, body = await api("audit")
    assert status == 200
    assert body["chain_ok"] is True
    records = body["records"]
    assert [(r["action"], r["patch_id"]) for r in records] == [
        ("patch.revert", ids[0]),
        ("patch.apply", ids[1]),
        ("patch.apply", ids[0]),
    ]
    assert [r["seq"] for r in records] == [3, 2, 1]
    assert all(set(r) == RECORD_KEYS for r in records)
    assert records[2]["paths"] == ["one.txt"]
    assert records[2]["sha256_before"] == {"one.txt": None}
    assert records[0]["sha256_after"] == {"one.txt": None}
    assert records[0]["sha256_before"] == records[2]["sha256_after"]
    assert records[0]["user"] and records[0]["user"] != "anonymous"

    status, body = await api("audit", params={"limit": 1})
    assert status == 200 and [r["seq"] for r in body["records"]] == [3]


@pytest.mark.parametrize("limit", ["0", "-1", "abc", "1000000"])
async def test_audit_bad_limit_gives_400(api, limit: str) -> None:
    status, body = await api("audit", params={"limit": limit})
    assert status == 400
    assert body["error"] == "bad_request"


async def test_tampered_audit_log_reports_chain_broken(api, workspace: Path) -> None:
    for name in ("one.txt", "two.txt"):
        assert (await api("patch/apply", body={"diff": create(name, "x")}))[0] == 200
    log = workspace / ".codeyard" / "audit.jsonl"
    log.write_bytes(log.read_bytes().replace(b"one.txt", b"0ne.txt"))
    status, body = await api("audit")
    assert status == 200
    assert body["chain_ok"] is False


async def test_no_marker_leaks_outside_the_patched_files(
    api, workspace: Path, git_diff, settle, caplog: pytest.LogCaptureFixture
) -> None:
    """Markers live only in the lines patches add, so they may appear only in patched files.

    Scope, decided honestly: revert data is kept as the old file content (a hard link or
    copy of each file as it was before the patch) in the private state folder. A marker
    that one patch adds and a later patch overwrites would therefore sit in the later
    patch's revert data, which is the point of that data. This test never patches the
    same file twice, so every file the extension writes outside the patched files (audit
    log, revert store, transaction and scratch folders, lock, logs, HTTP answers) must be
    marker-free; after a revert, that patch's marker must be gone everywhere.
    """
    caplog.set_level(logging.DEBUG)
    markers = {name: f"MARKER-{uuid.uuid4().hex}" for name in ("a", "b", "c", "d", "e", "f")}
    (workspace / "mod.txt").write_bytes(b"one\ntwo\nthree\n")
    (workspace / "ren.txt").write_bytes(b"same\n" * 8)
    (workspace / "del.txt").write_bytes(b"plain\n")
    answers = []

    async def call(endpoint: str, body: dict[str, object]) -> int:
        status, answer = await api(endpoint, body=body)
        answers.append(repr(answer))
        return status

    new = f"one\n{markers['a']}\nthree\n".encode()
    diff_a = git_diff({"mod.txt": b"one\ntwo\nthree\n"}, {"mod.txt": new})
    assert await call("patch/validate", {"diff": diff_a}) == 200
    assert await call("patch/apply", {"diff": diff_a}) == 200
    ren = git_diff(
        {"ren.txt": b"same\n" * 8},
        {"moved/ren.txt": b"same\n" * 8 + markers["b"].encode() + b"\n"},
    )
    assert await call("patch/apply", {"diff": ren}) == 200
    assert await call("patch/apply", {"diff": create("made.txt", markers["c"])}) == 200
    gone = git_diff({"del.txt": b"plain\n"}, {})
    assert await call("patch/apply", {"diff": gone}) == 200
    # Refused patches carrying markers: a failing hunk, a stale base and a path escape.
    bad_hunk = f"--- a/mod.txt\n+++ b/mod.txt\n@@ -1,2 +1,2 @@\n one\n-{markers['d']}\n+x\n"
    assert await call("patch/apply", {"diff": bad_hunk}) == 409
    stale = {"diff": create("other.txt", markers["e"]), "base": {"other.txt": "0" * 64}}
    assert await call("patch/apply", stale) == 409
    assert await call("patch/apply", {"diff": create("../x.txt", markers["e"])}) == 403
    status, made = await api("patch/apply", body={"diff": create("undo.txt", markers["f"])})
    assert status == 200
    assert await call(f"patch/{made['patch_id']}/revert", {}) == 200

    patched = {"mod.txt", "moved/ren.txt", "made.txt"}
    settle()  # the last transactions are retired in the background; let them finish
    assert leaks(workspace, set(markers.values()), patched) == []
    for marker in markers.values():
        assert marker not in caplog.text
        assert all(marker not in answer for answer in answers)
    assert markers["a"].encode() in (workspace / "mod.txt").read_bytes()
    assert not (workspace / "undo.txt").exists()
