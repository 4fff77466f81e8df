"""Staging by hard link: git must leave the workspace's inodes alone, and we check it.

The staging folder shares inodes with the workspace (`staging` explains why that is safe
with `git apply`). These tests run real git on content, mode, rename and delete changes
and assert the workspace files keep their bytes, modes and inodes until the swap; one
test swaps in an engine that edits in place (a stand-in: real git never does) to show
such a result is refused before anything is committed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from trees import walk_files

from codeyard.server_extension.audit import AuditLog
from codeyard.server_extension.errors import CodeyardError
from codeyard.server_extension.patches.diffparse import FilePatch
from codeyard.server_extension.patches.gitapply import FileOutcome, GitVerdict
from codeyard.server_extension.patches.manager import PatchManager
from codeyard.server_extension.paths import WorkspacePaths

OLD = {
    "mod.txt": b"one\ntwo\n",
    "mode.sh": b"echo hi\n",
    "both.sh": b"echo a\n",
    "ren/from.txt": b"moving\n" * 10,
    "gone.txt": b"bye\n",
}
NEW = {
    "mod.txt": b"one\n2\n",
    "mode.sh": b"echo hi\n",
    "both.sh": b"echo b\n",
    "ren/to.txt": b"moving\n" * 10,
}
EXEC = {"mode.sh", "both.sh"}


def build(root: Path, files: dict[str, bytes], executable: set[str] = frozenset()) -> None:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        (root / rel).chmod(0o755 if rel in executable else 0o644)


def snapshot(root: Path) -> dict[str, tuple[bytes, int, int]]:
    out = {}
    for rel, path in walk_files(root):
        if path.is_file():
            info = path.lstat()
            out[rel] = (path.read_bytes(), stat.S_IMODE(info.st_mode), info.st_ino)
    return out


@pytest.fixture
def diff(tmp_path: Path, git_diff: Callable[..., str]) -> str:
    text = git_diff(OLD, NEW)
    # git_diff builds plain files; add the mode changes git would show.
    return (
        text.replace(
            "diff --git a/both.sh b/both.sh\n",
            "diff --git a/both.sh b/both.sh\nold mode 100644\nnew mode 100755\n",
        )
        + "diff --git a/mode.sh b/mode.sh\nold mode 100644\nnew mode 100755\n"
    )


def manager_for(root: Path, cls: type[PatchManager] = PatchManager) -> PatchManager:
    state = root / ".codeyard"
    state.mkdir(exist_ok=True)
    return cls(WorkspacePaths(root), state, AuditLog(state / "audit.jsonl"))


def test_validate_leaves_bytes_modes_and_inodes_alone(tmp_path: Path, diff: str) -> None:
    build(tmp_path, OLD)
    before = snapshot(tmp_path)
    result = manager_for(tmp_path).validate(diff)
    assert result["ok"] is True, result
    assert snapshot(tmp_path) == before


def test_apply_replaces_inodes_and_keeps_old_ones_for_revert(tmp_path: Path, diff: str) -> None:
    build(tmp_path, OLD)
    before = snapshot(tmp_path)
    fds = len(os.listdir("/proc/self/fd"))
    manager = manager_for(tmp_path)
    patch_id = manager.apply(diff)["patch_id"]
    after = snapshot(tmp_path)
    assert {k: v[0] for k, v in after.items()} == NEW
    assert {k for k, v in after.items() if v[1] == 0o755} == EXEC
    for rel in ("mod.txt", "mode.sh", "both.sh"):
        assert after[rel][2] != before[rel][2], f"{rel} was written in place"
    manager.revert(patch_id)
    assert snapshot(tmp_path) == before  # the very same inodes come back
    manager.settle()  # the background retire holds the lock file open while it works
    assert len(os.listdir("/proc/self/fd")) == fds  # git's stderr file is closed


def test_an_engine_writing_through_a_link_is_refused(tmp_path: Path) -> None:
    class InPlace:
        """Stands in for an engine that edits files in place (git does not)."""

        def __init__(self, work: Path) -> None:
            self.work = work

        def feed(self, text: bytes) -> None:
            with open(self.work / "mod.txt", "r+b") as fh:
                fh.write(b"ONE")

        def result(self, files: list[FilePatch]) -> GitVerdict:
            return GitVerdict(True, [FileOutcome() for _ in files])

        def cancel(self) -> None:
            pass

    class Manager(PatchManager):
        def start_engine(self, work: Path) -> InPlace:  # type: ignore[override]
            return InPlace(work)

    build(tmp_path, OLD)
    manager = manager_for(tmp_path, Manager)
    with pytest.raises(CodeyardError) as info:
        manager.apply("--- a/mod.txt\n+++ b/mod.txt\n@@ -1 +1 @@\n-one\n+ONE\n")
    assert (info.value.status, info.value.code) == (500, "engine_wrote_in_place")
    state = tmp_path / ".codeyard"
    assert list((state / "tx").iterdir()) == [] and list((state / "patches").iterdir()) == []
    assert manager.audit.records() == []


def test_staging_trees_are_reused_and_bounded(tmp_path: Path, monkeypatch) -> None:
    """A swapped transaction's empty `work/` tree is kept in `spare/` and reused."""
    from codeyard.server_extension.patches import journal as journaled

    build(tmp_path, {"pkg/sub/a.txt": b"a\n"})
    manager = manager_for(tmp_path)
    spare = tmp_path / ".codeyard" / "spare"
    patch = "--- a/pkg/sub/a.txt\n+++ b/pkg/sub/a.txt\n@@ -1 +1 @@\n-a\n+A\n"
    first = manager.apply(patch)["patch_id"]
    manager.settle()
    (kept,) = list(spare.iterdir())
    assert [p.relative_to(kept).as_posix() for p in sorted(kept.rglob("*"))] == ["pkg", "pkg/sub"]
    inode = kept.stat().st_ino
    manager.revert(first)  # takes the spare tree, then gives it back
    manager.settle()
    assert [p.stat().st_ino for p in spare.iterdir()] == [inode]
    assert (tmp_path / "pkg/sub/a.txt").read_bytes() == b"a\n"
    # A tree over the folder bound is taken down instead of kept.
    monkeypatch.setattr(journaled, "SPARE_TREE_FOLDERS", 1)
    manager.apply(patch)
    manager.settle()
    assert list(spare.iterdir()) == []
    assert (tmp_path / "pkg/sub/a.txt").read_bytes() == b"A\n"
