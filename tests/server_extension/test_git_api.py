"""The git endpoints against a real jupyter-server and real git.

The workspace is made a repository by the test (`git init`); a bare repository in tmp is
the remote (a plain path, as `file://` would be), and a second clone of it plays the
colleague who pushes first. HOME is pytest-jupyter's empty folder, so git has no identity
and commits are made as JUPYTERHUB_USER.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from jpconfig import closed_port
from trees import files_of, put

from codeyard.server_extension.git.message import CommitMessageWriter, clean_answer
from codeyard.server_extension.git.porcelain import parse_status
from codeyard.server_extension.llm.tokens import TokenCounter

HUB_USER = "ws-alice"
HEX40 = re.compile(r"^[0-9a-f]{40}$")


@pytest.fixture(autouse=True)
def git_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The machine's /etc/gitconfig must not change what the server's git does here.
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("JUPYTERHUB_USER", HUB_USER)


def git(repo: Path, *args: str, check: bool = True) -> str:
    """Git as the test's own hand, with an identity of its own (never the server's)."""
    who = ["-c", "user.name=Colleague", "-c", "user.email=c@example.org"]
    proc = subprocess.run(
        ["git", "-C", str(repo), *who, *args],
        capture_output=True,
        check=False,
        env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1"},
    )
    if check:
        assert proc.returncode == 0, (args, proc.stderr.decode())
    return proc.stdout.decode()


def snapshot(repo: Path) -> tuple[str, str, str, dict[str, bytes]]:
    """Everything a failed operation must leave as it was: HEAD, status, the index's
    entries, and the bytes of every file of the working tree."""
    tree = {rel: data for rel, data in files_of(repo).items() if not rel.startswith(".git/")}
    return (
        git(repo, "rev-parse", "--verify", "-q", "HEAD", check=False),
        git(repo, "status", "--porcelain=v2", "--branch", "--untracked-files=all"),
        git(repo, "ls-files", "--stage"),
        tree,
    )


def fetched(snap: tuple[str, str, str, dict[str, bytes]]) -> tuple[Any, ...]:
    """A snapshot without ahead/behind: a pull's fetch moves the remote-tracking branch
    (that is what a fetch is for) and nothing of the working tree, index or branch."""
    head, status, index, tree = snap
    lines = [line for line in status.splitlines() if not line.startswith("# branch.ab ")]
    return head, lines, index, tree


def running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie waiting for its parent is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def no_leftovers(repo: Path) -> None:
    git_dir = repo / ".git"
    assert not (git_dir / "index.lock").exists()
    assert not list(git_dir.glob("codeyard-index-*"))


@pytest.fixture
def repo(workspace: Path) -> Path:
    """The workspace as a repository on `main` with one commit."""
    git(workspace, "init", "-q", "-b", "main")
    put(workspace, {"a.txt": b"alpha\n", "b.txt": b"beta\n"})
    git(workspace, "add", "-A")
    git(workspace, "commit", "-q", "-m", "initial")
    return workspace


@pytest.fixture
def remote(tmp_path: Path, repo: Path) -> Path:
    """A bare repository as `origin` of the workspace; nothing pushed yet."""
    bare = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    git(repo, "remote", "add", "origin", str(bare))
    return bare


async def first_push(api: Any) -> dict[str, Any]:
    status, body = await api("git/push", body={})
    assert status == 200, body
    return body  # type: ignore[no-any-return]


def colleague(tmp_path: Path, bare: Path, files: dict[str, bytes], message: str) -> str:
    """Another clone commits `files` and pushes; returns its commit."""
    other = tmp_path / "other"
    if not other.exists():
        subprocess.run(["git", "clone", "-q", str(bare), str(other)], check=True)
    else:
        git(other, "pull", "-q", "--ff-only")
    put(other, files)
    git(other, "add", "-A")
    git(other, "commit", "-q", "-m", message)
    git(other, "push", "-q", "origin", "HEAD:main")
    return git(other, "rev-parse", "HEAD").strip()


# ---- status and log ---------------------------------------------------------------------


async def test_status_of_a_fresh_repository(api: Any, workspace: Path) -> None:
    git(workspace, "init", "-q", "-b", "main")
    status, body = await api("git/status")
    assert status == 200, body
    assert body["repository"] is True
    assert body["branch"] == "main" and body["detached"] is False
    assert body["unborn"] is True and body["head"] is None
    assert body["upstream"] is None and body["remotes"] == []
    # The state folder (.codeyard/) was made before `git init`; it is still never listed.
    assert body["clean"] is True and body["files"] == [], body["files"]

    status, body = await api("git/log")
    assert status == 200 and body["commits"] == []


async def test_status_lists_changes_made_by_any_writer(api: Any, repo: Path) -> None:
    (repo / "a.txt").write_bytes(b"alpha, edited by hand\n")
    (repo / "b.txt").unlink()
    put(repo, {"new file.txt": b"fresh\n", "dir/deep.txt": b"deep\n"})
    git(repo, "mv", "a.txt", "renamed.txt")
    status, body = await api("git/status")
    assert status == 200, body
    by_path = {f["path"]: f for f in body["files"]}
    assert set(by_path) == {"renamed.txt", "b.txt", "new file.txt", "dir/"}, by_path
    moved = by_path["renamed.txt"]
    assert moved["kind"] == "renamed" and moved["from"] == "a.txt"
    assert moved["index"] == "renamed" and moved["worktree"] == "modified"
    assert by_path["b.txt"]["worktree"] == "deleted" and by_path["b.txt"]["staged"] is False
    assert by_path["new file.txt"]["kind"] == "untracked"
    assert body["clean"] is False and body["truncated"] is False


async def test_log_is_newest_first_and_bounded(api: Any, repo: Path) -> None:
    for n in range(3):
        put(repo, {"a.txt": b"v%d\n" % n})
        git(repo, "commit", "-q", "-am", f"change {n}")
    status, body = await api("git/log", params={"limit": "2"})
    assert status == 200, body
    assert [c["subject"] for c in body["commits"]] == ["change 2", "change 1"]
    first = body["commits"][0]
    assert HEX40.match(first["hash"]) and first["hash"].startswith(first["short"])
    assert first["author"] == "Colleague" and first["date"]
    assert (await api("git/log", params={"limit": "0"}))[0] == 400
    assert (await api("git/log", params={"limit": "100000"}))[0] == 400


# ---- commit ------------------------------------------------------------------------------


async def test_commit_returns_the_hash_and_is_audited_without_its_message(
    api: Any, repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    put(repo, {"a.txt": b"alpha two\n", "c.txt": b"gamma\n"})
    message = "Add gamma\n\nmessage-marker-7f3a"
    status, body = await api("git/commit", body={"message": message})
    assert status == 200, body
    assert HEX40.match(body["commit"])
    assert body["commit"] == git(repo, "rev-parse", "HEAD").strip()
    assert body["branch"] == "main" and body["files"] == 2
    assert sorted(body["paths"]) == ["a.txt", "c.txt"]
    # Git had no identity (empty HOME): the commit is the Hub user's.
    assert body["author"] == f"{HUB_USER} <{HUB_USER}@users.noreply.codeyard>"
    assert git(repo, "log", "-1", "--format=%B").strip() == message
    assert (await api("git/status"))[1]["clean"] is True
    no_leftovers(repo)

    status, log = await api("git/log", params={"limit": "5"})
    assert [c["subject"] for c in log["commits"]] == ["Add gamma", "initial"]

    status, audit = await api("audit", params={"limit": "5"})
    assert status == 200 and audit["chain_ok"] is True
    record = audit["records"][0]
    assert record["action"] == "git_commit"
    assert record["commit"] == body["commit"] and record["branch"] == "main"
    assert record["files"] == 2
    assert record["message_sha256"] == hashlib.sha256(message.encode()).hexdigest()
    raw = (repo / ".codeyard" / "audit.jsonl").read_text()
    assert "message-marker-7f3a" not in raw and "Add gamma" not in raw
    assert "message-marker-7f3a" not in caplog.text


async def test_an_edit_in_the_second_of_the_last_commit_is_committed(
    api: Any, workspace: Path
) -> None:
    """Racy git: a file whose size and whole-second times match its index entry is taken as
    unchanged unless the index file is no older than it. The commit stages into a copy of
    the index; a copy stamped a second later hid an edit of the same size made within the
    second of the previous commit ("nothing to commit", seen in CI). Deterministic: the
    edit is made in the commit's second, the API commit a second later."""
    git(workspace, "init", "-q", "-b", "main")
    for attempt in range(5):
        await asyncio.sleep(1.02 - time.time() % 1)  # just after a second begins
        put(workspace, {"a.txt": f"one{attempt}\n".encode()})
        git(workspace, "add", "-A")
        git(workspace, "commit", "-q", "-m", f"first {attempt}")
        put(workspace, {"a.txt": f"two{attempt}\n".encode()})
        index = int((workspace / ".git" / "index").stat().st_mtime)
        edited = (workspace / "a.txt").stat()
        if index == int(edited.st_mtime) == int(edited.st_ctime):
            break
    else:
        pytest.fail("five tries could not put the commit and the edit in one second")
    await asyncio.sleep(1.02 - time.time() % 1)  # the server's copy of the index: a second on
    status, body = await api("git/commit", body={"message": "second"})
    assert status == 200, body
    assert "a.txt" in body["paths"]
    assert git(workspace, "show", "HEAD:a.txt") == f"two{attempt}\n"
    no_leftovers(workspace)


async def test_commit_works_where_git_already_ignores_the_state_folder(
    api: Any, repo: Path
) -> None:
    """A workspace that was a repository when the server started has `/.codeyard/` in
    `.git/info/exclude` (the state folder puts it there); a commit must not name it again.
    (This fixture's repository was made after the server started, so its first commit holds
    the state folder: take it out first, as it is in such a workspace.)"""
    git(repo, "rm", "-r", "-q", "--cached", ".codeyard")
    git(repo, "commit", "-q", "-m", "untrack state")
    exclude = repo / ".git" / "info" / "exclude"
    exclude.parent.mkdir(exist_ok=True)
    exclude.write_text("/.codeyard/\n")
    status, _ = await api(
        "patch/apply", body={"diff": "--- /dev/null\n+++ b/n.txt\n@@ -0,0 +1 @@\n+n\n"}
    )
    assert status == 200
    assert (repo / ".codeyard").is_dir()
    status, body = await api("git/commit", body={"message": "Add n"})
    assert status == 200, body
    assert body["paths"] == ["n.txt"]
    assert ".codeyard" not in git(repo, "ls-files")
    no_leftovers(repo)


async def test_commit_of_some_paths_leaves_the_rest_as_it_was(api: Any, repo: Path) -> None:
    put(repo, {"a.txt": b"alpha staged\n"})
    git(repo, "add", "a.txt")
    put(repo, {"b.txt": b"beta unstaged\n", "c.txt": b"new\n"})
    status, body = await api("git/commit", body={"message": "Add c", "paths": ["c.txt"]})
    assert status == 200, body
    assert body["paths"] == ["c.txt"]
    assert git(repo, "show", "--name-only", "--format=", "HEAD").split() == ["c.txt"]
    # a.txt is still staged, b.txt still only changed in the working tree.
    assert git(repo, "diff", "--cached", "--name-only").split() == ["a.txt"]
    assert git(repo, "diff", "--name-only").split() == ["b.txt"]
    no_leftovers(repo)


async def test_commit_refuses_bad_requests(api: Any, repo: Path) -> None:
    before = snapshot(repo)
    status, body = await api("git/commit", body={"message": "   "})
    assert (status, body["error"]) == (400, "bad_request")
    status, body = await api("git/commit", body={"message": "x", "amend": True})
    assert status == 400
    status, body = await api("git/commit", body={"message": "x", "paths": ["../out"]})
    assert status == 400
    status, body = await api("git/commit", body={"message": "Nothing"})
    assert (status, body["error"]) == (409, "nothing_to_commit")
    status, body = await api("git/commit", body={"message": "x", "paths": ["nope.txt"]})
    assert (status, body["error"]) == (404, "path_not_found")
    assert snapshot(repo) == before
    no_leftovers(repo)


async def test_failing_pre_commit_hook_leaves_index_and_tree_unchanged(
    api: Any, repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\necho 'lint: hook-marker-91c2 found a problem' >&2\nexit 1\n")
    hook.chmod(0o755)
    put(repo, {"a.txt": b"alpha staged\n"})
    git(repo, "add", "a.txt")
    put(repo, {"a.txt": b"alpha staged and edited again\n", "new.txt": b"untracked\n"})
    (repo / "b.txt").unlink()
    before = snapshot(repo)

    status, body = await api("git/commit", body={"message": "Try"})
    assert (status, body["error"]) == (409, "hook_failed"), body
    assert body["hooks"] == ["pre-commit"]
    assert "hook-marker-91c2" in body["hook_output"]
    assert "hook-marker-91c2" not in body["message"]
    assert snapshot(repo) == before
    no_leftovers(repo)
    assert "hook-marker-91c2" not in caplog.text
    records = (await api("audit", params={"limit": "5"}))[1]["records"]
    assert all(r["action"] != "git_commit" for r in records)

    hook.unlink()
    status, body = await api("git/commit", body={"message": "Now it works"})
    assert status == 200, body


async def test_a_hook_that_hangs_is_stopped_and_changes_nothing(
    api: Any, repo: Path, jp_serverapp: Any, tmp_path: Path
) -> None:
    jp_serverapp.web_app.settings["codeyard_git"].config.timeout = 2.0
    pid_file = tmp_path / "hook.pid"
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 60\n")
    hook.chmod(0o755)
    put(repo, {"a.txt": b"waiting\n"})
    before = snapshot(repo)
    status, body = await api("git/commit", body={"message": "Slow"})
    assert (status, body["error"]) == (504, "git_timeout"), body
    assert snapshot(repo) == before
    no_leftovers(repo)
    # The hook (a child of git) was stopped with git, not left running.
    hook_pid = int(pid_file.read_text())
    assert not running(hook_pid)


async def test_detached_head_is_shown_and_refused(api: Any, repo: Path, remote: Path) -> None:
    head = git(repo, "rev-parse", "HEAD").strip()
    git(repo, "checkout", "-q", "--detach")
    put(repo, {"a.txt": b"on no branch\n"})
    status, body = await api("git/status")
    assert status == 200
    assert body["detached"] is True and body["branch"] is None and body["head"] == head
    before = snapshot(repo)
    for endpoint, payload in (
        ("git/commit", {"message": "lost"}),
        ("git/pull", {}),
        ("git/push", {}),
    ):
        status, body = await api(endpoint, body=payload)
        assert (status, body["error"]) == (409, "detached_head"), (endpoint, body)
    assert snapshot(repo) == before


# ---- remotes -----------------------------------------------------------------------------


async def test_pull_and_push_without_a_remote(api: Any, repo: Path) -> None:
    for endpoint in ("git/pull", "git/push"):
        status, body = await api(endpoint, body={})
        assert (status, body["error"]) == (409, "no_remote"), body
        assert "git remote add" in body["message"]
    status, body = await api("git/push", body={"remote": "elsewhere"})
    assert status == 409


async def test_first_push_sets_the_upstream(api: Any, repo: Path, remote: Path) -> None:
    body = await first_push(api)
    head = git(repo, "rev-parse", "HEAD").strip()
    assert body["commit"] == head and body["created"] is True and body["upstream_set"] is True
    assert git(remote, "rev-parse", "main").strip() == head
    assert git(repo, "rev-parse", "--abbrev-ref", "main@{upstream}").strip() == "origin/main"
    status, after = await api("git/status")
    assert after["upstream"] == "origin/main" and (after["ahead"], after["behind"]) == (0, 0)
    assert "url" not in (repo / ".git" / "config").read_text().split("[branch")[1]

    put(repo, {"a.txt": b"second\n"})
    assert (await api("git/commit", body={"message": "Second"}))[0] == 200
    status, again = await api("git/push", body={})
    assert status == 200, again
    assert again["upstream_set"] is False and again["created"] is False
    assert git(remote, "rev-parse", "main").strip() == again["commit"]
    records = (await api("audit", params={"limit": "10"}))[1]["records"]
    pushes = [r for r in records if r["action"] == "git_push"]
    assert [p["commit"] for p in pushes] == [again["commit"], head]
    assert str(remote) not in json.dumps(records)


async def test_push_rejected_when_the_remote_moved_then_pull_diverged(
    api: Any, repo: Path, remote: Path, tmp_path: Path
) -> None:
    await first_push(api)
    theirs = colleague(tmp_path, remote, {"b.txt": b"beta from colleague\n"}, "Their change")
    put(repo, {"a.txt": b"alpha mine\n"})
    status, mine = await api("git/commit", body={"message": "My change"})
    assert status == 200
    put(repo, {"c.txt": b"uncommitted\n"})
    before = snapshot(repo)
    tracking = git(repo, "rev-parse", "origin/main").strip()

    status, body = await api("git/push", body={})
    assert (status, body["error"]) == (409, "push_rejected"), body
    assert "pull first" in body["message"]
    assert snapshot(repo) == before
    assert git(repo, "rev-parse", "origin/main").strip() == tracking
    assert git(remote, "rev-parse", "main").strip() == theirs

    status, body = await api("git/pull", body={})
    assert (status, body["error"]) == (409, "diverged"), body
    assert (body["ahead"], body["behind"]) == (1, 1)
    assert "diverged" in body["message"] and "Nothing was changed" in body["message"]
    assert fetched(snapshot(repo)) == fetched(before)
    assert git(repo, "rev-parse", "origin/main").strip() == theirs
    assert git(repo, "rev-parse", "HEAD").strip() == mine["commit"]
    no_leftovers(repo)


async def test_pull_fast_forwards_to_the_colleagues_push(
    api: Any, repo: Path, remote: Path, tmp_path: Path
) -> None:
    await first_push(api)
    before_head = git(repo, "rev-parse", "HEAD").strip()
    theirs = colleague(tmp_path, remote, {"d.txt": b"delta\n", "b.txt": b"b2\n"}, "Theirs")
    put(repo, {"a.txt": b"my local edit, untouched by the pull\n"})

    status, body = await api("git/pull", body={})
    assert status == 200, body
    assert body["before"] == before_head and body["after"] == theirs
    assert body["updated"] is True and body["files"] == 2
    assert (repo / "d.txt").read_bytes() == b"delta\n"
    assert (repo / "a.txt").read_bytes() == b"my local edit, untouched by the pull\n"
    status, again = await api("git/pull", body={})
    assert status == 200 and again["updated"] is False
    records = (await api("audit", params={"limit": "10"}))[1]["records"]
    pull = next(r for r in records if r["action"] == "git_pull")
    assert pull["after"] == theirs and pull["remote"] == "origin" and pull["branch"] == "main"


async def test_pull_that_would_overwrite_local_changes_changes_nothing(
    api: Any, repo: Path, remote: Path, tmp_path: Path
) -> None:
    await first_push(api)
    colleague(tmp_path, remote, {"b.txt": b"beta from colleague\n"}, "Theirs")
    put(repo, {"b.txt": b"beta, my unsaved work\n"})
    before = snapshot(repo)
    status, body = await api("git/pull", body={})
    assert (status, body["error"]) == (409, "local_changes"), body
    assert body["paths"] == ["b.txt"]
    assert fetched(snapshot(repo)) == fetched(before)


async def test_failing_pre_push_hook_pushes_nothing(api: Any, repo: Path, remote: Path) -> None:
    await first_push(api)
    pushed = git(remote, "rev-parse", "main").strip()
    hook = repo / ".git" / "hooks" / "pre-push"
    hook.write_text("#!/bin/sh\necho 'push-hook-marker says no' >&2\nexit 1\n")
    hook.chmod(0o755)
    put(repo, {"a.txt": b"not to be pushed\n"})
    assert (await api("git/commit", body={"message": "Local only"}))[0] == 200
    status, body = await api("git/push", body={})
    assert (status, body["error"]) == (409, "hook_failed"), body
    assert "push-hook-marker says no" in body["hook_output"]
    assert git(remote, "rev-parse", "main").strip() == pushed


async def test_unreachable_remote_is_a_502(api: Any, repo: Path, tmp_path: Path) -> None:
    git(repo, "remote", "add", "origin", str(tmp_path / "gone.git"))
    before = snapshot(repo)
    status, body = await api("git/pull", body={})
    assert (status, body["error"]) == (502, "remote_unreachable"), body
    assert str(tmp_path) not in body["message"]
    status, body = await api("git/push", body={})
    assert (status, body["error"]) == (502, "remote_unreachable"), body
    assert snapshot(repo) == before


async def test_a_workspace_that_is_no_repository(api: Any, workspace: Path) -> None:
    put(workspace, {"a.txt": b"x\n"})
    calls = [
        ("git/status", None),
        ("git/log", None),
        ("git/commit", {"message": "x"}),
        ("git/pull", {}),
        ("git/push", {}),
        ("git/commit-message", {}),
    ]
    for endpoint, payload in calls:
        status, body = await api(endpoint, body=payload)
        assert (status, body["error"]) == (409, "not_a_repository"), (endpoint, body)
        assert "git init" in body["message"]
    assert not (workspace / ".git").exists()


async def test_repository_answers_whether_there_is_one_without_an_error(
    api: Any, workspace: Path
) -> None:
    status, body = await api("git/repository")
    assert status == 200, body
    assert body["repository"] is False and body["error"] == "not_a_repository", body
    assert "git init" in body["message"]
    git(workspace, "init", "-q", "-b", "main")
    status, body = await api("git/repository")
    assert (status, body) == (200, {"repository": True, "prefix": ""}), body


GIT_ENDPOINTS = [
    ("GET", "git/repository", None),
    ("GET", "git/status", None),
    ("GET", "git/log", None),
    ("POST", "git/commit", '{"message": "x"}'),
    ("POST", "git/commit-message", "{}"),
    ("POST", "git/pull", "{}"),
    ("POST", "git/push", "{}"),
]


@pytest.mark.parametrize(("method", "endpoint", "body"), GIT_ENDPOINTS)
async def test_git_requests_without_token_get_403(
    without_token: Any, method: str, endpoint: str, body: str | None
) -> None:
    assert (await without_token(endpoint, method, body)).code == 403


# ---- the proposed commit message -----------------------------------------------------------


async def test_commit_message_is_proposed_by_the_model(
    api: Any, repo: Path, jp_serverapp: Any, model_stack: dict[str, str]
) -> None:
    llm = jp_serverapp.web_app.settings["codeyard_git_messages"].llm
    llm.url, llm.token = model_stack["url"], model_stack["token"]
    put(repo, {"greet.py": b'def greet(name):\n    return f"Hello, {name}!"\n'})
    before = snapshot(repo)
    status, body = await api("git/commit-message", body={})
    assert status == 200, body
    assert body["message"].strip()
    assert body["files"] == 1
    assert body["usage"]["completion_tokens"] > 0
    assert body["usage"]["context_tokens"] > 0
    assert snapshot(repo) == before
    no_leftovers(repo)


async def test_commit_message_when_the_gateway_is_down(
    api: Any, repo: Path, jp_serverapp: Any
) -> None:
    llm = jp_serverapp.web_app.settings["codeyard_git_messages"].llm
    llm.url, llm.token = f"http://127.0.0.1:{closed_port()}", "some-token"
    put(repo, {"a.txt": b"changed\n"})
    status, body = await api("git/commit-message", body={})
    assert (status, body["error"]) == (503, "llm_unavailable"), body
    git(repo, "commit", "-q", "-am", "clean")
    status, body = await api("git/commit-message", body={})
    assert (status, body["error"]) == (409, "nothing_to_commit"), body


# ---- pure parts ----------------------------------------------------------------------------


def test_prompt_redacts_secrets_and_withholds_env_files() -> None:
    class Config:
        message_diff_tokens = 1500

    writer = CommitMessageWriter(None, None, TokenCounter(None), Config())  # type: ignore[arg-type]
    key = "sk-" + "A1b2C3d4E5f6G7h8I9j0K1l2"
    diff = (
        "diff --git a/app.py b/app.py\n--- a/app.py\n+++ b/app.py\n@@ -1 +1 @@\n"
        f'-x = 1\n+API_KEY = "{key}"\n'
        "diff --git a/.env b/.env\nnew file mode 100644\n--- /dev/null\n+++ b/.env\n"
        "@@ -0,0 +1 @@\n+DB_PASSWORD=hunter2-env-value\n"
    )
    changes = [("M", "app.py", None), ("A", ".env", None)]
    messages, tokens, dropped = writer.prompt(changes, diff)
    text = json.dumps(messages)
    assert key not in text and "hunter2-env-value" not in text
    assert "<redacted-1>" in text and "withheld" in text
    assert "modified: app.py" in text and "added: .env" in text
    assert tokens > 0 and dropped == []


def test_clean_answer_strips_fences_labels_and_quotes() -> None:
    assert clean_answer("```\nFix the parser\n```") == "Fix the parser"
    assert clean_answer("Commit message: Add tests") == "Add tests"
    assert clean_answer('"Update docs"') == "Update docs"
    assert clean_answer("Summary\n\n\n\nBody") == "Summary\n\nBody"


def test_porcelain_v2_paths_with_spaces_renames_and_conflicts() -> None:
    raw = (
        "# branch.oid abc\0# branch.head main\0# branch.upstream origin/main\0"
        "# branch.ab +2 -1\0"
        "1 .M N... 100644 100644 100644 h1 h2 with space.txt\0"
        "2 R. N... 100644 100644 100644 h1 h2 R100 new name\0old name\0"
        "u UU N... 100644 100644 100644 100644 h1 h2 h3 both.txt\0"
        "? dir/\0"
    )
    status = parse_status(raw)
    assert (status.branch.name, status.branch.head) == ("main", "abc")
    assert (status.branch.ahead, status.branch.behind) == (2, 1)
    paths = [(f["path"], f["kind"], f.get("from")) for f in status.files]
    assert paths == [
        ("with space.txt", "changed", None),
        ("new name", "renamed", "old name"),
        ("both.txt", "unmerged", None),
        ("dir/", "untracked", None),
    ]
