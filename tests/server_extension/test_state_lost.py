"""The private state folder (`.codeyard/`) may be deleted or made unwritable under a running
server; patches keep working, the loss is recorded, and nothing answers a bare 500.

The workspace here is a real git repository (one committed file) and the deletions are the
real ones users make: `git clean -fdx`, `rm -rf`. Tests run as root, and root ignores
permission bits, so `chmod 0500` would not make anything unwritable here. The unwritable
cases therefore use what stops root too: a regular file where a state folder belongs
(every write below it fails with ENOTDIR), a read-only bind mount (EROFS) and the
immutable flag (`chattr +i`, EPERM); the last two are skipped where the test process may
not mount or set the flag.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from codeyard.server_extension.audit import GENESIS, AuditLog
from codeyard.server_extension.patches.manager import PatchManager
from codeyard.server_extension.paths import WorkspacePaths

OLD = b"def main():\n    return 1\n"
GIT = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]


def git(root: Path, *args: str) -> str:
    out = subprocess.run([*GIT, "-C", str(root), *args], check=True, capture_output=True)
    return out.stdout.decode()


def run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


def make_repo(root: Path) -> None:
    """A git working tree with `app.py` committed, as a user's workspace is."""
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q")
    (root / "app.py").write_bytes(OLD)
    git(root, "add", "app.py")
    git(root, "commit", "-q", "-m", "first")


@pytest.fixture
def jp_root_dir(tmp_path: Path) -> Path:
    """The server's root, made a git repository before the server starts."""
    root = tmp_path / "root_dir"
    make_repo(root)
    return root


def modify(old: bytes, new: bytes) -> str:
    o, n = old.decode().splitlines(), new.decode().splitlines()
    body = "".join(f"-{line}\n" for line in o) + "".join(f"+{line}\n" for line in n)
    return f"--- a/app.py\n+++ b/app.py\n@@ -1,{len(o)} +1,{len(n)} @@\n{body}"


def create(name: str) -> str:
    return f"--- /dev/null\n+++ b/{name}\n@@ -0,0 +1 @@\n+{name}\n"


def exclude_lines(root: Path) -> list[str]:
    return (root / ".git" / "info" / "exclude").read_text().splitlines()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def audit_records(api) -> list[dict]:
    """Every audit record, oldest first; asserts the chain verifies."""
    status, body = await api("audit", params={"limit": 1000})
    assert status == 200, body
    assert body["chain_ok"] is True
    return list(reversed(body["records"]))


async def test_git_clean_rebuilds_state_and_records_the_loss(api, workspace: Path, settle) -> None:
    # Hidden from git from the start, through an entry in .git/info/exclude (not .gitignore).
    assert exclude_lines(workspace).count("/.codeyard/") == 1
    assert not (workspace / ".gitignore").exists()
    first_new = b"def main():\n    return 2\n"
    status, first = await api("patch/apply", body={"diff": modify(OLD, first_new)})
    assert status == 200, first
    settle()
    assert git(workspace, "status", "--porcelain").splitlines() == [" M app.py"]

    git(workspace, "clean", "-fdx", "-q")  # the real command, as users run it
    assert not (workspace / ".codeyard").exists()

    status, second = await api("patch/apply", body={"diff": create("b.txt")})
    assert status == 200, second
    assert (workspace / "b.txt").read_bytes() == b"b.txt\n"
    assert (workspace / "app.py").read_bytes() == first_new
    settle()
    assert git(workspace, "status", "--porcelain").splitlines() == [" M app.py", "?? b.txt"]
    assert exclude_lines(workspace).count("/.codeyard/") == 1  # re-added, not doubled

    status, err = await api(f"patch/{first['patch_id']}/revert", body={})
    assert status == 410, err
    assert err["error"] == "revert_data_lost" and err["patch_id"] == first["patch_id"]
    assert ".codeyard" in err["message"] and "git clean" in err["message"]
    assert (workspace / "app.py").read_bytes() == first_new  # nothing was touched

    records = await audit_records(api)
    lost = records[0]
    assert (lost["seq"], lost["prev"], lost["action"]) == (1, GENESIS, "state_lost")
    assert lost["missing"] == [".codeyard"]
    assert lost["lost_patches"] == [first["patch_id"]]
    assert lost["lost_chain"]["seq"] == 1  # the apply record that is gone
    assert [r["action"] for r in records[1:]] == ["patch.apply"]
    assert records[1]["patch_id"] == second["patch_id"]

    # Patches applied after the loss have their revert data again.
    status, body = await api(f"patch/{second['patch_id']}/revert", body={})
    assert status == 200, body
    assert not (workspace / "b.txt").exists()
    assert [r["action"] for r in await audit_records(api)][-1] == "patch.revert"


@pytest.mark.parametrize(
    ("deleted", "missing", "new_chain"),
    [
        (".codeyard", [".codeyard"], True),
        (".codeyard/patches", [".codeyard/patches"], False),
        (".codeyard/tx", [".codeyard/tx"], False),
        (".codeyard/audit.jsonl", [".codeyard/audit.jsonl"], True),
    ],
)
async def test_rm_rf_of_state_or_a_part_of_it(
    api, workspace: Path, settle, deleted: str, missing: list[str], new_chain: bool
) -> None:
    status, first = await api("patch/apply", body={"diff": create("a.txt")})
    assert status == 200, first
    settle()
    target = workspace / deleted
    run("rm", "-rf", str(target))
    assert not target.exists()

    # Validation needs the scratch folder: it rebuilds and answers as well.
    status, body = await api("patch/validate", body={"diff": create("b.txt")})
    assert status == 200 and body["ok"] is True, body
    status, body = await api("patch/apply", body={"diff": create("b.txt")})
    assert status == 200, body
    records = await audit_records(api)
    lost = [r for r in records if r["action"] == "state_lost"]
    assert len(lost) == 1 and lost[0]["missing"] == missing
    if new_chain:
        assert records[0] is lost[0] and lost[0]["prev"] == GENESIS
        assert lost[0]["lost_chain"]["seq"] == 1
    else:
        assert records[0]["patch_id"] == first["patch_id"] and records[1] is lost[0]
    assert records[-1]["action"] == "patch.apply"
    status, err = await api(f"patch/{first['patch_id']}/revert", body={})
    if deleted in (".codeyard", ".codeyard/patches"):
        assert status == 410 and err["error"] == "revert_data_lost", err
        assert (workspace / "a.txt").exists()
    else:
        assert status == 200, err
        assert not (workspace / "a.txt").exists()


async def test_audit_read_right_after_deletion_records_the_loss(
    api, workspace: Path, settle
) -> None:
    assert (await api("patch/apply", body={"diff": create("a.txt")}))[0] == 200
    settle()  # the background retire would race the deletion, as it would `rm -rf` itself
    shutil.rmtree(workspace / ".codeyard")
    records = await audit_records(api)
    assert [r["action"] for r in records] == ["state_lost"]
    assert (workspace / ".codeyard" / "patches").is_dir()
    assert git(workspace, "status", "--porcelain").splitlines() == ["?? a.txt"]


def workspace_files(root: Path) -> dict[str, bytes]:
    """Every file outside `.git` and `.codeyard` (whatever `.codeyard` is now), with bytes."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and p.relative_to(root).parts[0] not in (".git", ".codeyard")
    }


async def expect_unwritable(api, workspace: Path, where: str, patch_id: str) -> None:
    """Apply, validate and revert all answer 507 naming `where`; the workspace is as it was."""
    before = workspace_files(workspace)
    new = b"def main():\n    return 3\n"
    for endpoint, body in (
        ("patch/apply", {"diff": modify(b"def main():\n    return 2\n", new)}),
        ("patch/validate", {"diff": create("c.txt")}),
        (f"patch/{patch_id}/revert", {}),
    ):
        status, err = await api(endpoint, body=body)
        assert status == 507, (endpoint, err)
        assert err["error"] == "state_unwritable" and err["path"] == where, err
        assert f" {where} " in err["message"] and "/root_dir" not in err["message"]
    assert workspace_files(workspace) == before  # compares bytes: no partial write
    assert (await api("audit"))[0] == 200


@pytest.mark.parametrize("part", [".codeyard", ".codeyard/tx", ".codeyard/patches"])
async def test_a_file_where_a_state_folder_belongs_gives_507(
    api, workspace: Path, settle, part: str
) -> None:
    """A regular file in place of the folder: every write below it fails, even for root."""
    status, first = await api(
        "patch/apply", body={"diff": modify(OLD, b"def main():\n    return 2\n")}
    )
    assert status == 200, first
    settle()
    target = workspace / part
    shutil.rmtree(target)
    target.write_bytes(b"not a folder\n")
    await expect_unwritable(api, workspace, part, first["patch_id"])
    assert (workspace / "app.py").read_bytes() == b"def main():\n    return 2\n"

    target.unlink()  # repaired: the next request rebuilds what is gone and records it
    status, body = await api("patch/apply", body={"diff": create("c.txt")})
    assert status == 200, body
    assert [r["action"] for r in await audit_records(api)][-2:] == ["state_lost", "patch.apply"]


@contextlib.contextmanager
def read_only_bind_mount(folder: Path) -> Iterator[None]:
    made = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {made.stderr.decode().strip()}")
    try:
        subprocess.run(
            ["mount", "-o", "remount,ro,bind", str(folder)], check=True, capture_output=True
        )
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@contextlib.contextmanager
def immutable(path: Path) -> Iterator[None]:
    made = subprocess.run(["chattr", "+i", str(path)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot set the immutable flag here: {made.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@pytest.mark.parametrize(
    ("how", "part"),
    [
        ("mount", ".codeyard"),
        ("chattr", ".codeyard/tx"),
        ("chattr", ".codeyard/audit.jsonl"),
    ],
)
async def test_read_only_or_immutable_state_gives_507(
    api, workspace: Path, settle, how: str, part: str
) -> None:
    """A read-only mount (EROFS) or the immutable flag (EPERM) stop root as well."""
    status, first = await api(
        "patch/apply", body={"diff": modify(OLD, b"def main():\n    return 2\n")}
    )
    assert status == 200, first
    settle()
    guard = read_only_bind_mount if how == "mount" else immutable
    with guard(workspace / part):
        await expect_unwritable(api, workspace, part, first["patch_id"])
    status, body = await api("patch/apply", body={"diff": create("c.txt")})
    assert status == 200, body
    status, body = await api(f"patch/{first['patch_id']}/revert", body={})
    assert status == 200, body
    assert (workspace / "app.py").read_bytes() == OLD
    assert [r["action"] for r in await audit_records(api)] == [
        "patch.apply",
        "patch.apply",
        "patch.revert",
    ]


# ---- start-up, without a server -------------------------------------------------------


def manager_for(root: Path) -> PatchManager:
    state = root / ".codeyard"
    return PatchManager(WorkspacePaths(root), state, AuditLog(state / "audit.jsonl"))


def test_a_state_folder_of_todays_layout_is_picked_up_as_it_is(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    make_repo(root)
    first = manager_for(root)
    applied = first.apply(modify(OLD, b"x = 1\n"))
    first.settle()
    again = manager_for(root)  # a restart on the same home
    again.recover()
    assert again.revert(applied["patch_id"])["patch_id"] == applied["patch_id"]
    again.settle()
    assert (root / "app.py").read_bytes() == OLD
    assert [r["action"] for r in again.audit.records()] == ["patch.apply", "patch.revert"]
    assert again.audit.verify()
    assert exclude_lines(root).count("/.codeyard/") == 1


def test_state_deleted_while_the_server_was_down_is_recorded_at_start(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    make_repo(root)
    first = manager_for(root)
    first.apply(create("a.txt"))
    first.settle()
    subprocess.run(["git", "-C", str(root), "clean", "-fdxq"], check=True)
    again = manager_for(root)
    records = again.audit.records()
    assert [(r["action"], r["missing"]) for r in records] == [("state_lost", [".codeyard"])]
    assert again.audit.verify()


def test_state_beside_the_tree_deleted_while_the_server_was_down_is_recorded(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    root = home / "work"
    make_repo(root)
    state = home / ".codeyard"

    def start() -> PatchManager:
        return PatchManager(WorkspacePaths(root), state, AuditLog(state / "audit.jsonl"))

    first = start()
    assert first.audit.records() == []  # a first start is no loss
    first.apply(create("a.txt"))
    first.settle()
    assert git(root, "status", "--porcelain", "--ignored") == "?? a.txt\n"  # no state in the tree
    shutil.rmtree(state)
    again = start()
    assert [(r["action"], r["missing"]) for r in again.audit.records()] == [
        ("state_lost", [str(state)])
    ]
    assert again.audit.verify()
    assert start().audit.records() == again.audit.records()  # a later start adds nothing


def test_first_start_records_nothing_and_a_non_git_workspace_gets_no_exclude(
    tmp_path: Path,
) -> None:
    root = tmp_path / "ws"
    make_repo(root)
    assert manager_for(root).audit.records() == []
    assert git(root, "status", "--porcelain") == ""
    plain = tmp_path / "plain"
    plain.mkdir()
    manager = manager_for(plain)
    assert manager.audit.records() == [] and not (plain / ".git").exists()
    manager.apply(create("a.txt"))
    manager.settle()  # the background retire would race the deletion
    shutil.rmtree(plain / ".codeyard")
    manager.apply(create("b.txt"))
    assert [r["action"] for r in manager.audit.records()] == ["state_lost", "patch.apply"]
    assert not (plain / ".git").exists()
