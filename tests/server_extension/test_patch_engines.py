"""A large patch shared out between several `git apply` processes (`patch_engine_processes`).

Real git runs in every test here. What must hold: the parts cover the patch exactly once,
a failure in any part refuses the whole patch and names the right file and hunk, and
patches that delete or rename (git removes folders it empties) never run in parts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import pytest
from traitlets import TraitError
from trees import files_of, put

from codeyard.server_extension.app import CodeyardApp
from codeyard.server_extension.audit import AuditLog
from codeyard.server_extension.errors import CodeyardError
from codeyard.server_extension.patches.diffparse import parse_diff
from codeyard.server_extension.patches.gitapply import (
    MIN_FILES_PER_ENGINE,
    EngineRun,
    FileOutcome,
    GitVerdict,
    engine_shares,
    merge_verdicts,
)
from codeyard.server_extension.patches.manager import PatchManager
from codeyard.server_extension.paths import WorkspacePaths

N = 2 * MIN_FILES_PER_ENGINE + 8
OLD = {
    f"pkg{i % 4}/m{i:02d}.py": b"".join(b"line %d %d\n" % (i, j) for j in range(12))
    for i in range(N)
}
NEW = {k: v.replace(b"line", b"LINE", 1) for k, v in OLD.items()}
NEW["fresh/made.txt"] = b"made\n"


class Counting(PatchManager):
    """Counts the engines each apply starts."""

    started = 0

    def start_engine(self, work: Path) -> EngineRun:
        self.started += 1
        return super().start_engine(work)


def manager_for(root: Path, processes: int) -> Counting:
    state = root / ".codeyard"
    state.mkdir(exist_ok=True)
    return Counting(
        WorkspacePaths(root), state, AuditLog(state / "audit.jsonl"), engine_processes=processes
    )


@pytest.fixture
def big(git_diff: Callable[..., str]) -> str:
    return git_diff(OLD, NEW)


def test_shares_cover_every_file_once_in_order(big: str) -> None:
    files = parse_diff(big.encode())
    shares = engine_shares(files, 2)
    assert len(shares) == 2
    assert [i for share in shares for i in share] == list(range(len(files)))
    sizes = [sum(len(files[i].text) for i in share) for share in shares]
    assert max(sizes) < 0.6 * sum(sizes), sizes  # about half each
    assert engine_shares(files, 1) == [list(range(len(files)))]
    small = files[: 2 * MIN_FILES_PER_ENGINE - 1]
    assert engine_shares(small, 2) == [list(range(len(small)))]


def test_deletions_and_renames_keep_one_process(git_diff: Callable[..., str]) -> None:
    renamed = {
        **{k: v for k, v in NEW.items() if k != "pkg0/m00.py"},
        "moved.py": OLD["pkg0/m00.py"],
    }
    deleted = {k: v for k, v in NEW.items() if k != "pkg1/m01.py"}
    for after in (renamed, deleted):
        files = parse_diff(git_diff(OLD, after).encode())
        assert len(engine_shares(files, 2)) == 1


def test_a_large_patch_applies_in_two_processes_and_reverts(tmp_path: Path, big: str) -> None:
    put(tmp_path, OLD)
    manager = manager_for(tmp_path, 2)
    result = manager.apply(big)
    assert manager.started == 2
    assert files_of(tmp_path) == NEW
    assert [f["path"] for f in result["files"]] == [fp.path for fp in parse_diff(big.encode())]
    manager.revert(result["patch_id"])
    assert files_of(tmp_path) == OLD


def test_a_failing_hunk_in_the_second_part_refuses_everything(tmp_path: Path, big: str) -> None:
    put(tmp_path, OLD)
    victim = sorted(OLD)[-3]  # near the end: in the second part
    (tmp_path / victim).write_bytes(OLD[victim].replace(b"line", b"edit", 1))
    manager = manager_for(tmp_path, 2)
    report = manager.validate(big)
    assert manager.started == 2
    bad = [f for f in report["files"] if not f["applies"]]
    assert [(f["path"], f["error"], f.get("hunk")) for f in bad] == [(victim, "hunk_failed", 1)]
    before = files_of(tmp_path)
    with pytest.raises(CodeyardError) as info:
        manager.apply(big)
    assert (info.value.status, info.value.code) == (409, "hunk_failed")
    assert info.value.to_json()["path"] == victim
    assert files_of(tmp_path) == before  # nothing of the first part was written either
    assert manager.audit.records() == []


def test_merge_counts_a_malformed_line_from_the_whole_patch(big: str) -> None:
    files = parse_diff(big.encode())
    shares = engine_shares(files, 2)
    first = GitVerdict(True, [FileOutcome() for _ in shares[0]])
    second = GitVerdict(False, [FileOutcome() for _ in shares[1]], malformed_line=3, malformed=True)
    merged = merge_verdicts(files, shares, [first, second])
    lines_in_first = sum(files[i].text.count(b"\n") for i in shares[0])
    assert (merged.ok, merged.malformed, merged.malformed_line) == (False, True, lines_in_first + 3)
    assert len(merged.files) == len(files)


def test_engine_processes_are_validated() -> None:
    with pytest.raises(TraitError, match="between 1 and 16"):
        CodeyardApp(patch_engine_processes=0)
    assert CodeyardApp().patch_engine_processes in (1, 2)


def _children() -> list[str]:
    """Commands of this process's live children (any thread's), from /proc."""
    kids = []
    for task in Path("/proc/self/task").iterdir():
        for pid in (task / "children").read_text().split():
            with contextlib.suppress(FileNotFoundError):
                kids.append(Path(f"/proc/{pid}/comm").read_text().strip())
    return kids


def test_engines_started_early_are_stopped_whatever_happens(
    tmp_path: Path, big: str, git_diff: Callable[..., str]
) -> None:
    """Engines start before the diff is parsed; none may outlive the call."""
    put(tmp_path, OLD)
    manager = manager_for(tmp_path, 2)
    deleted = git_diff(OLD, {k: v for k, v in NEW.items() if k != "pkg1/m01.py"})
    with pytest.raises(CodeyardError):  # 400 before any engine is needed
        manager.apply(big.replace("@@ -1,", "@@ -x,", 1))
    with pytest.raises(CodeyardError):  # 409: a file is missing, no engine runs
        manager.apply(big.replace("pkg0/m00.py", "pkg0/nothere.py"))
    assert manager.validate(deleted)["ok"] is True  # guessed two, needed one
    assert manager.validate(big)["ok"] is True  # needed two
    assert files_of(tmp_path) == OLD
    manager.settle()
    assert "git" not in _children()
