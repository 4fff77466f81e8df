"""The diff header parser: file list, operations, hunk counts and awkward file names."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from codeyard.server_extension.audit import AuditLog
from codeyard.server_extension.errors import CodeyardError
from codeyard.server_extension.patches.diffparse import parse_diff
from codeyard.server_extension.patches.manager import PatchManager
from codeyard.server_extension.paths import WorkspacePaths


def test_traditional_headers_with_timestamps() -> None:
    diff = (
        b"diff -ruN a/x.txt b/x.txt\n"
        b"--- a/x.txt\t2024-01-01 10:00:00.000000000 +0100\n"
        b"+++ b/x.txt\t2024-01-02 10:00:00.000000000 +0100\n"
        b"@@ -1,2 +1,2 @@\n a\n-b\n+c\n"
        b"--- a/new.txt\t1970-01-01 00:00:00.000000000 +0000\n"
        b"+++ b/new.txt\t2024-01-02 10:00:00.000000000 +0100\n"
        b"@@ -0,0 +1 @@\n+n\n"
        b"--- a/old.txt\t2024-01-01 10:00:00.000000000 +0100\n"
        b"+++ b/old.txt\t1970-01-01 00:00:00.000000000 +0000\n"
        b"@@ -1 +0,0 @@\n-o\n"
    )
    files = parse_diff(diff)
    assert [(f.op, f.path, len(f.hunks)) for f in files] == [
        ("modify", "x.txt", 1),
        ("create", "new.txt", 1),
        ("delete", "old.txt", 1),
    ]
    assert files[1].text.startswith(b"diff --git a/new.txt b/new.txt\nnew file mode")


def test_bare_names_from_diff_u_of_two_files_keep_the_new_name() -> None:
    diff = b"--- x.txt.orig\n+++ x.txt\n@@ -1 +1 @@\n-a\n+b\n"
    (fp,) = parse_diff(diff)
    assert (fp.op, fp.path) == ("modify", "x.txt")


def test_git_quoted_names_and_pure_rename() -> None:
    diff = (
        b'diff --git "a/sp ace\\303\\251.txt" "b/sp ace\\303\\251.txt"\n'
        b'--- "a/sp ace\\303\\251.txt"\n+++ "b/sp ace\\303\\251.txt"\n'
        b"@@ -1 +1 @@\n-a\n+b\n"
        b"diff --git a/my file b/your file\nsimilarity index 100%\n"
        b"rename from my file\nrename to your file\n"
        b"diff --git a/run.sh b/run.sh\nold mode 100644\nnew mode 100755\n"
    )
    files = parse_diff(diff)
    assert [(f.op, f.old_path, f.new_path, len(f.hunks)) for f in files] == [
        ("modify", "sp aceé.txt", "sp aceé.txt", 1),
        ("rename", "my file", "your file", 0),
        ("modify", "run.sh", "run.sh", 0),
    ]
    assert files[2].new_mode == "100755"


def test_text_before_the_first_file_is_skipped() -> None:
    diff = b"From abc Mon Sep 17 00:00:00 2001\nSubject: x\n\n---\n" + (
        b"diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n"
    )
    assert [f.path for f in parse_diff(diff)] == ["x"]


@pytest.mark.parametrize(
    "diff",
    [
        b"",
        b"just words\n",
        b"--- a/x\n+++ b/x\n@@ -1,2 +1,2 @@\n a\n",
        b"--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n+c\n",
        b"--- a/x\n+++ b/x\n@@ -1 +1 @@\n?a\n",
        b"diff --git a/x b/x\ncopy from x\ncopy to y\n",
        b'diff --git "a/x b/x\n',
    ],
    ids=["empty", "words", "short", "long", "bad-line", "copy", "bad-quote"],
)
def test_malformed_diffs_are_refused_with_400(diff: bytes) -> None:
    with pytest.raises(CodeyardError) as info:
        parse_diff(diff)
    assert info.value.status == 400


NAMES = ["with space.txt", "ünïcödé.txt", 'quote"d.txt', "tab\there.txt", "back\\slash.txt"]


@pytest.mark.parametrize("name", NAMES)
def test_awkward_names_round_trip_through_git(
    name: str, tmp_path: Path, git_diff: Callable[..., str]
) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    (root / name).write_bytes(b"one\ntwo\n")
    state = root / ".codeyard"
    manager = PatchManager(WorkspacePaths(root), state, AuditLog(tmp_path / "audit.jsonl"))
    diff = git_diff({name: b"one\ntwo\n"}, {"moved/" + name: b"one\ntwo\n", name + "2": b"x\n"})
    try:
        result = manager.apply(diff)
    except CodeyardError as exc:
        # Backslashes are refused by path policy (POSIX paths only), never mis-parsed.
        assert "\\" in name and exc.status == 403
        return
    assert {f["path"] for f in result["files"]} == {"moved/" + name, name + "2"}
    assert (root / "moved" / name).read_bytes() == b"one\ntwo\n"
    manager.revert(result["patch_id"])
    assert (root / name).read_bytes() == b"one\ntwo\n"
    assert not (root / "moved").exists()
