"""`patch/validate`, `patch/apply`, `patch/{id}/revert` against a real jupyter-server."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from trees import files_of, put

from codeyard.server_extension.patches.manager import PatchManager

GitDiff = Callable[..., str]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def diff_ru(folder: Path) -> subprocess.CompletedProcess[bytes]:
    """GNU `diff -ruN a b` inside `folder`: the classic non-git unified diff."""
    proc = subprocess.run(["diff", "-ruN", "a", "b"], cwd=folder, capture_output=True, check=False)
    assert proc.returncode == 1
    return proc


LINES = b"".join(b"line %d\n" % i for i in range(1, 21))


async def test_validate_reports_each_file_and_writes_nothing(api, workspace, git_diff) -> None:
    before = {"a.txt": LINES, "old.txt": b"x\n" * 10, "gone.txt": b"bye\n"}
    after = {"a.txt": LINES.replace(b"line 5\n", b"five\n"), "new.txt": b"x\n" * 10}
    after["b/c.txt"] = b"fresh\n"
    put(workspace, before)
    diff = git_diff(before, after)
    status, body = await api("patch/validate", body={"diff": diff})
    assert status == 200, body
    assert body["ok"] is True
    ops = {f["path"]: f for f in body["files"]}
    assert ops["a.txt"]["op"] == "modify" and ops["a.txt"]["hunks"] == 1
    assert ops["new.txt"]["op"] == "rename" and ops["new.txt"]["from"] == "old.txt"
    assert ops["b/c.txt"]["op"] == "create"
    assert ops["gone.txt"]["op"] == "delete"
    assert all(f["applies"] for f in body["files"])
    assert files_of(workspace) == before


async def test_validate_reports_a_failing_hunk_without_error_status(api, workspace) -> None:
    put(workspace, {"a.txt": LINES})
    diff = "--- a/a.txt\n+++ b/a.txt\n@@ -3,2 +3,2 @@\n line 3\n-nope\n+yes\n"
    status, body = await api("patch/validate", body={"diff": diff})
    assert status == 200
    assert body["ok"] is False
    assert body["files"][0]["applies"] is False
    assert body["files"][0]["error"] == "hunk_failed"
    assert body["files"][0]["hunk"] == 1


async def test_apply_then_revert_round_trip(api, workspace, git_diff) -> None:
    before = {"a.txt": LINES, "old.txt": b"x\n" * 10, "gone.txt": b"bye\n"}
    after = {"a.txt": LINES.replace(b"line 5\n", b"five\n"), "new.txt": b"x\n" * 10}
    put(workspace, before)
    status, body = await api("patch/apply", body={"diff": git_diff(before, after)})
    assert status == 200, body
    assert len(body["patch_id"]) == 32
    by_path = {f["path"]: f for f in body["files"]}
    assert by_path["a.txt"] == {
        "path": "a.txt",
        "op": "modify",
        "sha256_before": sha(before["a.txt"]),
        "sha256_after": sha(after["a.txt"]),
    }
    assert by_path["gone.txt"]["sha256_after"] is None
    assert files_of(workspace) == after

    status, undone = await api(f"patch/{body['patch_id']}/revert", body={})
    assert status == 200, undone
    assert undone["patch_id"] == body["patch_id"]
    assert {f["path"]: f["op"] for f in undone["files"]} == {
        "a.txt": "modify",
        "old.txt": "rename",
        "gone.txt": "create",
    }
    assert files_of(workspace) == before


async def test_traditional_diff_u_is_accepted(api, workspace, tmp_path) -> None:
    old, new = tmp_path / "a", tmp_path / "b"
    put(old, {"src/m.py": LINES, "del.txt": b"d\n"})
    put(new, {"src/m.py": LINES.replace(b"line 9\n", b"nine\n"), "add.txt": b"n\n"})
    proc = diff_ru(tmp_path)
    put(workspace, {"src/m.py": LINES, "del.txt": b"d\n"})
    status, body = await api("patch/apply", body={"diff": proc.stdout.decode()})
    assert status == 200, body
    assert {f["path"]: f["op"] for f in body["files"]} == {
        "src/m.py": "modify",
        "del.txt": "delete",
        "add.txt": "create",
    }
    assert files_of(workspace) == files_of(new)


async def test_crlf_files_stay_crlf(api, workspace, git_diff) -> None:
    before = {"w.txt": b"one\r\ntwo\r\nthree\r\n"}
    after = {"w.txt": b"one\r\n2\r\nthree\r\n"}
    put(workspace, before)
    status, body = await api("patch/apply", body={"diff": git_diff(before, after)})
    assert status == 200, body
    assert (workspace / "w.txt").read_bytes() == after["w.txt"]


async def test_no_newline_at_end_of_file(api, workspace, git_diff) -> None:
    before = {"n.txt": b"a\nb"}
    after = {"n.txt": b"a\nb\nc"}
    put(workspace, before)
    diff = git_diff(before, after)
    assert "\\ No newline at end of file" in diff
    status, body = await api("patch/apply", body={"diff": diff})
    assert status == 200, body
    assert (workspace / "n.txt").read_bytes() == b"a\nb\nc"


async def test_file_mode_is_preserved_and_set(api, workspace, git_diff) -> None:
    put(workspace, {"run.sh": b"echo 1\n"})
    (workspace / "run.sh").chmod(0o755)
    diff = git_diff({"run.sh": b"echo 1\n"}, {"run.sh": b"echo 2\n"})
    status, body = await api("patch/apply", body={"diff": diff})
    assert status == 200, body
    assert (workspace / "run.sh").stat().st_mode & 0o777 == 0o755
    exec_diff = (
        "diff --git a/t.sh b/t.sh\nnew file mode 100755\n--- /dev/null\n+++ b/t.sh\n"
        "@@ -0,0 +1 @@\n+echo t\n"
    )
    status, body = await api("patch/apply", body={"diff": exec_diff})
    assert status == 200, body
    assert (workspace / "t.sh").stat().st_mode & 0o111


async def test_stale_base_gives_409_with_current_hash(api, workspace, git_diff) -> None:
    put(workspace, {"a.txt": LINES})
    diff = git_diff({"a.txt": LINES}, {"a.txt": LINES + b"more\n"})
    status, body = await api("patch/apply", body={"diff": diff, "base": {"a.txt": "0" * 64}})
    assert status == 409
    assert body["error"] == "base_mismatch"
    assert body["path"] == "a.txt"
    assert body["current"] == sha(LINES)
    assert (workspace / "a.txt").read_bytes() == LINES
    status, body = await api("patch/apply", body={"diff": diff, "base": {"a.txt": sha(LINES)}})
    assert status == 200, body


async def test_failing_hunk_gives_409_naming_file_and_hunk(api, workspace) -> None:
    put(workspace, {"a.txt": LINES, "b.txt": b"b\n"})
    diff = (
        "--- a/b.txt\n+++ b/b.txt\n@@ -1 +1 @@\n-b\n+B\n"
        "--- a/a.txt\n+++ b/a.txt\n@@ -1,3 +1,3 @@\n line 1\n-line 2\n+two\n line 3\n"
        "@@ -10,3 +10,3 @@\n line 10\n-not there\n+x\n line 12\n"
    )
    status, body = await api("patch/apply", body={"diff": diff})
    assert status == 409
    assert body["error"] == "hunk_failed"
    assert body["path"] == "a.txt"
    assert body["hunk"] == 2
    assert "a.txt" in body["message"] and "#2" in body["message"]
    assert "not there" not in body["message"]
    assert files_of(workspace) == {"a.txt": LINES, "b.txt": b"b\n"}


async def test_offset_refused_by_default(api, workspace) -> None:
    put(workspace, {"a.txt": b"x\nx\nx\n" + LINES})
    diff = "--- a/a.txt\n+++ b/a.txt\n@@ -5,3 +5,3 @@\n line 5\n-line 6\n+six\n line 7\n"
    status, body = await api("patch/apply", body={"diff": diff})
    assert status == 409
    assert body["error"] == "hunk_offset"
    assert body["hunk"] == 1
    assert body["offsets"] == [{"hunk": 1, "line": 8, "offset": 3}]


async def test_offset_reported_per_hunk_when_allowed(
    api, workspace, jp_serverapp, monkeypatch
) -> None:
    manager: PatchManager = jp_serverapp.web_app.settings["codeyard_patches"]
    monkeypatch.setattr(manager, "allow_offset", True)
    put(workspace, {"a.txt": b"x\nx\nx\n" + LINES})
    diff = (
        "--- a/a.txt\n+++ b/a.txt\n@@ -5,3 +5,3 @@\n line 5\n-line 6\n+six\n line 7\n"
        "@@ -15,3 +15,3 @@\n line 15\n-line 16\n+sixteen\n line 17\n"
    )
    status, body = await api("patch/validate", body={"diff": diff})
    assert status == 200 and body["ok"] is True
    assert body["files"][0]["offsets"] == [
        {"hunk": 1, "line": 8, "offset": 3},
        {"hunk": 2, "line": 18, "offset": 3},
    ]
    status, body = await api("patch/apply", body={"diff": diff})
    assert status == 200, body
    assert [o["hunk"] for o in body["files"][0]["offsets"]] == [1, 2]
    assert b"six\n" in (workspace / "a.txt").read_bytes()


@pytest.mark.parametrize(
    "payload",
    [
        {"diff": "this is not a diff\n"},
        {"diff": ""},
        {"diff": 42},
        {},
        {"diff": "--- a/a.txt\n+++ b/a.txt\n@@ -1,3 +1,3 @@\n line 1\n"},
        {"diff": "--- a/a.txt\n+++ b/a.txt\n@@ nonsense @@\n"},
        {"diff": "diff --git a/a.txt b/a.txt\n--- a/a.txt\n"},
        {"diff": "@@ -1 +1 @@\n-a\n+b\n"},
        {"diff": "--- a/a.txt\n+++ b/a.txt\n@@ -1 +1 @@\n-line 1\n+x\n", "base": "nope"},
        {"diff": "--- a/a.txt\n+++ b/a.txt\n@@ -1 +1 @@\n-line 1\n+x\n", "base": {"a.txt": 1}},
    ],
    ids=[
        "not-a-diff",
        "empty",
        "not-a-string",
        "missing",
        "short-hunk",
        "bad-hunk-header",
        "no-plus-line",
        "hunk-without-file",
        "base-not-object",
        "base-not-hash",
    ],
)
@pytest.mark.parametrize("endpoint", ["patch/validate", "patch/apply"])
async def test_malformed_input_gives_400(api, workspace, endpoint, payload) -> None:
    put(workspace, {"a.txt": LINES})
    status, body = await api(endpoint, body=payload)
    assert status == 400, body
    assert body["error"] == "bad_request"
    assert (workspace / "a.txt").read_bytes() == LINES


async def test_invalid_json_gives_400(api) -> None:
    status, body = await api("patch/apply", raw_body=b"{not json")
    assert status == 400
    assert body["error"] == "bad_request"


async def test_creating_an_existing_file_gives_409(api, workspace) -> None:
    put(workspace, {"a.txt": b"mine\n"})
    diff = "--- /dev/null\n+++ b/a.txt\n@@ -0,0 +1 @@\n+theirs\n"
    status, body = await api("patch/apply", body={"diff": diff})
    assert status == 409
    assert body["error"] == "file_exists" and body["path"] == "a.txt"
    assert (workspace / "a.txt").read_bytes() == b"mine\n"


async def test_modifying_a_missing_file_gives_409(api, workspace) -> None:
    put(workspace, {"b.txt": b"b\n"})
    diff = (
        "--- a/b.txt\n+++ b/b.txt\n@@ -1 +1 @@\n-b\n+B\n"
        "--- a/a.txt\n+++ b/a.txt\n@@ -1 +1 @@\n-a\n+A\n"
    )
    status, body = await api("patch/apply", body={"diff": diff})
    assert status == 409
    assert body["error"] == "file_missing" and body["path"] == "a.txt"
    assert (workspace / "b.txt").read_bytes() == b"b\n"


async def test_revert_after_a_later_change_gives_409(api, workspace, git_diff) -> None:
    put(workspace, {"a.txt": LINES})
    diff = git_diff({"a.txt": LINES}, {"a.txt": LINES + b"x\n"})
    status, body = await api("patch/apply", body={"diff": diff})
    assert status == 200
    (workspace / "a.txt").write_bytes(b"edited by hand\n")
    status, err = await api(f"patch/{body['patch_id']}/revert", body={})
    assert status == 409
    assert err["error"] == "changed_since_patch"
    assert err["path"] == "a.txt" and err["current"] == sha(b"edited by hand\n")
    assert (workspace / "a.txt").read_bytes() == b"edited by hand\n"


async def test_revert_twice_gives_409_and_unknown_id_404(api, workspace, git_diff) -> None:
    put(workspace, {"a.txt": LINES})
    status, body = await api(
        "patch/apply", body={"diff": git_diff({"a.txt": LINES}, {"a.txt": b"new\n"})}
    )
    assert status == 200
    assert (await api(f"patch/{body['patch_id']}/revert", body={}))[0] == 200
    status, err = await api(f"patch/{body['patch_id']}/revert", body={})
    assert status == 409 and err["error"] == "already_reverted"
    status, err = await api(f"patch/{'0' * 32}/revert", body={})
    assert status == 404 and err["error"] == "not_found"
    status, err = await api("patch/not-an-id/revert", body={})
    assert status == 404


async def test_revert_data_lives_in_state_dir_not_audit(api, workspace, git_diff) -> None:
    secret = b"old content only revert needs\n"
    put(workspace, {"a.txt": secret})
    diff = git_diff({"a.txt": secret}, {"a.txt": b"new\n"})
    status, body = await api("patch/apply", body={"diff": diff})
    assert status == 200
    store = workspace / ".codeyard" / "patches" / body["patch_id"]
    assert any(p.read_bytes() == secret for p in store.rglob("*") if p.is_file())
    assert secret not in (workspace / ".codeyard" / "audit.jsonl").read_bytes()


async def test_every_patch_endpoint_requires_authentication(jp_fetch) -> None:
    from tornado.httpclient import HTTPClientError

    for parts in (("validate",), ("apply",), ("0" * 32, "revert")):
        with pytest.raises(HTTPClientError) as info:
            await jp_fetch(
                "codeyard",
                "api",
                "patch",
                *parts,
                method="POST",
                body="{}",
                headers={"Authorization": ""},
            )
        assert info.value.code in (401, 403)
