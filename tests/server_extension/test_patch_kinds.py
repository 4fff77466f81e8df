"""Patches of unusual kinds through the real server: type changes (file to symlink and back),
a path touched twice, binary patches, and a workspace that is itself a git repository.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from trees import put

LINES = b"".join(b"line %d\n" % i for i in range(1, 21))


TYPE_CHANGE = (
    "diff --git a/t b/t\ndeleted file mode 100644\n--- a/t\n+++ /dev/null\n"
    "@@ -1 +0,0 @@\n-hello\n"
    "diff --git a/t b/t\nnew file mode 120000\n--- /dev/null\n+++ b/t\n"
    "@@ -0,0 +1 @@\n+a.txt\n\\ No newline at end of file\n"
)


async def test_type_change_file_to_symlink_and_back(api, workspace) -> None:
    put(workspace, {"a.txt": b"a\n", "t": b"hello\n"})
    status, body = await api("patch/apply", body={"diff": TYPE_CHANGE})
    assert status == 200, body
    assert [f["op"] for f in body["files"]] == ["delete", "create"]
    assert (workspace / "t").is_symlink() and str((workspace / "t").readlink()) == "a.txt"
    status, undone = await api(f"patch/{body['patch_id']}/revert", body={})
    assert status == 200, undone
    assert not (workspace / "t").is_symlink()
    assert (workspace / "t").read_bytes() == b"hello\n"


async def test_same_file_twice_gives_400(api, workspace) -> None:
    put(workspace, {"a.txt": b"a\n"})
    once = "--- a/a.txt\n+++ b/a.txt\n@@ -1 +1 @@\n-a\n+b\n"
    status, body = await api("patch/apply", body={"diff": once + once})
    assert status == 400 and body["error"] == "bad_request"


def binary_diff(folder: Path, before: bytes, after: bytes) -> str:
    """`git diff --binary` of one binary file: the form git needs to apply binary changes."""
    git = ["git", "-C", str(folder), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (folder / "blob.bin").write_bytes(before)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "a"], check=True)
    (folder / "blob.bin").write_bytes(after)
    out = subprocess.run([*git, "diff", "--binary"], check=True, capture_output=True)
    return out.stdout.decode()


async def test_binary_patch_from_git_diff_binary(api, workspace, tmp_path) -> None:
    before, after = bytes(range(256)) * 4, bytes(reversed(range(256))) * 4
    put(workspace, {"blob.bin": before})
    diff = binary_diff(tmp_path, before, after)
    status, body = await api("patch/validate", body={"diff": diff})
    assert status == 200 and body["files"][0]["hunks"] == 0, body
    status, body = await api("patch/apply", body={"diff": diff})
    assert status == 200, body
    assert (workspace / "blob.bin").read_bytes() == after
    assert (await api(f"patch/{body['patch_id']}/revert", body={}))[0] == 200
    assert (workspace / "blob.bin").read_bytes() == before


async def test_binary_change_without_data_gives_400(api, workspace) -> None:
    put(workspace, {"blob.bin": b"\0\1"})
    diff = (
        "diff --git a/blob.bin b/blob.bin\nindex 1..2 100644\n"
        "Binary files a/blob.bin and b/blob.bin differ\n"
    )
    status, body = await api("patch/apply", body={"diff": diff})
    assert status == 400 and "binary" in body["message"]


def git_init_commit(root: Path) -> None:
    git = ["git", "-C", str(root), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "base"], check=True)


def git_status(root: Path) -> str:
    out = subprocess.run(["git", "-C", str(root), "status", "--porcelain"], capture_output=True)
    return out.stdout.decode()


async def test_workspace_that_is_a_git_repo_is_patched_in_place_not_via_its_repo(
    api, workspace, git_diff
) -> None:
    """Staging sits under the workspace; git must not discover the workspace's own repo."""
    put(workspace, {"src/a.txt": LINES, ".gitignore": b".codeyard/\n"})
    git_init_commit(workspace)
    diff = git_diff({"src/a.txt": LINES}, {"src/a.txt": LINES + b"added\n"})
    status, body = await api("patch/apply", body={"diff": diff})
    assert status == 200, body
    assert (workspace / "src/a.txt").read_bytes() == LINES + b"added\n"
    assert git_status(workspace) == " M src/a.txt\n"  # worktree changed, index untouched
