"""`GET codeyard/api/tree`: shape, .gitignore, hidden files, depth, limit, errors."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pathspec
from hypothesis import given, settings
from hypothesis import strategies as st

from codeyard.server_extension.tree import _Ignore, _prefilter


def _names(entries: list[dict]) -> list[str]:
    return [e["name"] for e in entries]


async def test_tree_lists_entries_with_metadata(api, workspace: Path) -> None:
    (workspace / "src").mkdir()
    (workspace / "src" / "a.py").write_text("x = 1\n")
    (workspace / "README.md").write_text("hi\n")
    status, body = await api("tree", params={"depth": 2})
    assert status == 200
    assert body["path"] == "" and body["truncated"] is False
    assert _names(body["entries"]) == ["README.md", "src"]
    src = body["entries"][1]
    assert src["type"] == "directory" and src["path"] == "src"
    child = src["children"][0]
    assert child == {
        "name": "a.py",
        "path": "src/a.py",
        "type": "file",
        "size": 6,
        "mtime": child["mtime"],
    }
    assert abs(child["mtime"] - (workspace / "src" / "a.py").stat().st_mtime) < 1e-3


async def test_depth_one_has_no_children(api, workspace: Path) -> None:
    (workspace / "d" / "e").mkdir(parents=True)
    status, body = await api("tree")
    assert status == 200
    assert "children" not in body["entries"][0]


async def test_gitignore_is_honoured_at_every_level(api, workspace: Path) -> None:
    (workspace / ".gitignore").write_text("*.log\nbuild/\n!keep.log\n")
    (workspace / "pkg").mkdir()
    (workspace / "pkg" / ".gitignore").write_text("secret.txt\n!debug.log\n")
    for rel in [
        "a.log",
        "keep.log",
        "build/out.o",
        "main.py",
        "pkg/secret.txt",
        "pkg/debug.log",
        "pkg/mod.py",
        "pkg/other.log",
    ]:
        (workspace / rel).parent.mkdir(parents=True, exist_ok=True)
        (workspace / rel).write_text("x")
    status, body = await api("tree", params={"depth": 3})
    assert status == 200
    top = _names(body["entries"])
    assert top == ["keep.log", "main.py", "pkg"]
    pkg = body["entries"][2]["children"]
    assert _names(pkg) == ["debug.log", "mod.py"]


async def test_git_and_hidden_files_are_hidden(api, workspace: Path) -> None:
    (workspace / ".git").mkdir()
    (workspace / ".git" / "HEAD").write_text("ref")
    (workspace / ".env").write_text("SECRET=1")
    (workspace / "visible.txt").write_text("v")
    status, body = await api("tree", params={"depth": 2})
    assert status == 200
    assert _names(body["entries"]) == ["visible.txt"]


async def test_hidden_files_shown_when_contents_manager_allows(
    api, workspace: Path, jp_serverapp
) -> None:
    (workspace / ".git").mkdir()
    (workspace / ".env").write_text("x")
    lister = jp_serverapp.web_app.settings["codeyard_tree"]
    lister.allow_hidden = True
    try:
        status, body = await api("tree")
    finally:
        lister.allow_hidden = False
    assert status == 200
    assert _names(body["entries"]) == [".env"], ".git stays hidden even when hidden files show"


async def test_limit_caps_entries_and_sets_truncated(api, workspace: Path) -> None:
    for i in range(10):
        (workspace / f"f{i:02}.txt").write_text("x")
    status, body = await api("tree", params={"limit": 4})
    assert status == 200
    assert _names(body["entries"]) == ["f00.txt", "f01.txt", "f02.txt", "f03.txt"]
    assert body["truncated"] is True
    status, body = await api("tree", params={"limit": 10})
    assert body["truncated"] is False and len(body["entries"]) == 10


async def test_symlinks_are_reported_as_symlinks(api, workspace: Path) -> None:
    (workspace / "target.txt").write_text("t")
    os.symlink("target.txt", workspace / "link.txt")
    status, body = await api("tree")
    assert status == 200
    types = {e["name"]: e["type"] for e in body["entries"]}
    assert types == {"link.txt": "symlink", "target.txt": "file"}


async def test_subdirectory_listing(api, workspace: Path) -> None:
    (workspace / "a" / "b").mkdir(parents=True)
    (workspace / "a" / "b" / "c.txt").write_text("c")
    status, body = await api("tree", params={"path": "a/b"})
    assert status == 200
    assert body["path"] == "a/b"
    assert [e["path"] for e in body["entries"]] == ["a/b/c.txt"]


async def test_tree_errors(api, workspace: Path) -> None:
    (workspace / "f.txt").write_text("x")
    cases = [
        ({"path": "missing"}, 404, "not_found"),
        ({"path": "f.txt"}, 400, "bad_request"),
        ({"path": "../"}, 403, "path_forbidden"),
        ({"depth": "x"}, 400, "bad_request"),
        ({"depth": 0}, 400, "bad_request"),
        ({"limit": 10**9}, 400, "bad_request"),
    ]
    for params, status, code in cases:
        got, body = await api("tree", params=params)
        assert (got, body["error"]) == (status, code), params
        assert body["message"]


PATTERNS = st.lists(
    st.sampled_from(
        [
            "*.log",
            "build/",
            "!keep.log",
            "/root.txt",
            "a/**/b",
            "docs/*.md",
            "!docs/x.md",
            "*.py[co]",
            "tmp",
            "**/cache/",
            "\\#x",
            "sp ace",
            "!build/keep/",
            "[ab].txt",
        ]
    ),
    max_size=6,
)
PATHS = st.lists(
    st.tuples(
        st.lists(st.sampled_from(["a", "b", "build", "docs", "cache", "keep", "x"]), max_size=3),
        st.sampled_from(
            [
                "keep.log",
                "a.log",
                "root.txt",
                "b",
                "x.md",
                "m.pyc",
                "tmp",
                "a.txt",
                "sp ace",
                "#x",
                "cache",
            ]
        ),
        st.booleans(),
    ),
    min_size=1,
    max_size=20,
)


@settings(max_examples=200, deadline=None)
@given(PATTERNS, PATHS)
def test_prefilter_never_changes_what_pathspec_decides(patterns, paths) -> None:
    spec = pathspec.GitIgnoreSpec.from_lines(patterns)
    fast = _Ignore([("", spec, _prefilter(spec))])
    plain = _Ignore([("", spec, re.compile(""))])  # matches everything: always asks pathspec
    for folders, name, is_dir in paths:
        rel = "/".join([*folders, name])
        assert fast.ignored(rel, is_dir) == plain.ignored(rel, is_dir), (patterns, rel, is_dir)
