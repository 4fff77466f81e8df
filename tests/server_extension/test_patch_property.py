"""Property: applying `git diff a b` to tree `a` gives `b`, and reverting gives `a` back.

The trees mix modified, renamed (similar enough for `git diff -M`), created and deleted
files, empty files, files without a final newline, CRLF files and non-UTF-8 bytes. The
property runs on `PatchManager` directly (fresh workspace per example); the endpoint tests
cover the same operations over HTTP.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from trees import files_of

from codeyard.server_extension.audit import AuditLog
from codeyard.server_extension.patches.manager import PatchManager
from codeyard.server_extension.paths import WorkspacePaths

NAMES = ["a.txt", "b.py", "dir/c.txt", "dir/sub/d.md", "e/f.txt"]
NEW_NAMES = ["n1.txt", "dir/n2.py", "new/deep/n3.txt", "e/n4.md"]
WORDS = [b"alpha", b"beta", b"gamma", b"delta", b"caf\xe9", b"  indented", b"", b"x = 1"]


@st.composite
def contents(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(st.sampled_from(WORDS), min_size=0, max_size=12))
    eol = draw(st.sampled_from([b"\n", b"\n", b"\r\n"]))
    body = b"".join(line + eol for line in lines)
    if body and draw(st.booleans()):
        body = body[: -len(eol)]  # no newline at end of file
    return body


@st.composite
def edited(draw: st.DrawFn, data: bytes) -> bytes:
    lines = data.splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 3))):
        pos = draw(st.integers(0, len(lines)))
        kind = draw(st.sampled_from(["insert", "delete", "replace"]))
        word = draw(st.sampled_from(WORDS)) + b"\n"
        if kind == "insert" or not lines:
            lines.insert(pos, word)
        elif kind == "delete":
            del lines[min(pos, len(lines) - 1)]
        else:
            lines[min(pos, len(lines) - 1)] = word
    return b"".join(lines)


@st.composite
def tree_pairs(draw: st.DrawFn) -> tuple[dict[str, bytes], dict[str, bytes]]:
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=len(NAMES), unique=True))
    before = {name: draw(contents()) for name in names}
    after: dict[str, bytes] = {}
    free = list(NEW_NAMES)
    for name, data in before.items():
        action = draw(st.sampled_from(["keep", "modify", "delete", "rename"]))
        if action == "keep":
            after[name] = data
        elif action == "modify":
            after[name] = draw(edited(data))
        elif action == "rename" and free:
            target = free.pop(draw(st.integers(0, len(free) - 1)))
            # A long body with a small edit keeps git's similarity above 50%: a real rename.
            long = data + b"".join(b"shared line %d\n" % i for i in range(12))
            before[name] = long
            after[target] = long if draw(st.booleans()) else long + b"tail\n"
    created = draw(st.lists(st.sampled_from(free), max_size=2, unique=True)) if free else []
    for name in created:
        after[name] = draw(contents())
    if after == before:
        after[NEW_NAMES[0] if NEW_NAMES[0] not in before else "extra.txt"] = b"extra\n"
    return before, after


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def read_tree(root: Path) -> dict[str, bytes]:
    return files_of(root)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(pair=tree_pairs())
def test_apply_gives_b_and_revert_gives_a(
    pair: tuple[dict[str, bytes], dict[str, bytes]],
    git_diff: Callable[..., str],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    before, after = pair
    root = tmp_path_factory.mktemp("prop")
    write_tree(root, before)
    state = root / ".codeyard"
    manager = PatchManager(WorkspacePaths(root), state, AuditLog(state / "audit.jsonl"))
    diff = git_diff(before, after)
    report = manager.validate(diff)
    note(str([(f["op"], f["path"]) for f in report["files"]]))
    assert report["ok"], report
    assert read_tree(root) == before

    applied = manager.apply(diff)
    assert read_tree(root) == after
    manager.revert(applied["patch_id"])
    assert read_tree(root) == before
    assert manager.audit.verify()
    manager.settle()  # answered transactions are retired in the background
    assert list((state / "tx").iterdir()) == []
