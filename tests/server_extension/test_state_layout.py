"""The workspace layout where Codeyard's state is outside the user's git working tree.

A workspace home H holds the working tree in `H/work` (the server's root) and the state in
`H/.codeyard`, which the spawner names in CODEYARD_STATE_DIR: the state is on the same file
system (atomic renames, hard-linked revert data) but the user's tools in the tree never
reach it. Here the server is started the same way, with that variable, on a real git
repository; the deletions are the real commands users run. Homes of the older layout (the
home was the tree, with `.codeyard/` inside) are converted by the home helper's own script
(`clone.HELPER_SCRIPT`), run here with `sh` as the helper runs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from test_state_lost import OLD, audit_records, create, git, make_repo, modify, run

from codeyard.server_extension.audit import GENESIS, AuditLog
from codeyard.server_extension.patches.manager import PatchManager
from codeyard.server_extension.paths import STATE_DIR_ENV, WorkspacePaths
from codeyard.spawner.clone import HELPER_SCRIPT
from codeyard.spawner.homes import HOME_LAYOUT, LAYOUT_MARKER

NEW = b"def main():\n    return 2\n"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def jp_root_dir(home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """H/work, a git repository, and CODEYARD_STATE_DIR=H/.codeyard, as the spawner sets."""
    root = home / "work"
    make_repo(root)
    monkeypatch.setenv(STATE_DIR_ENV, str(home / ".codeyard"))
    return root


async def test_state_is_outside_the_tree_and_git_status_is_clean(
    api, jp_serverapp, workspace: Path, home: Path, settle
) -> None:
    state = home / ".codeyard"
    assert jp_serverapp.web_app.settings["codeyard_state"].path == state
    status, first = await api("patch/apply", body={"diff": modify(OLD, NEW)})
    assert status == 200, first
    settle()
    assert (state / "audit.jsonl").is_file() and (state / "patches" / first["patch_id"]).is_dir()
    assert not (workspace / ".codeyard").exists()
    # Nothing to hide from git: the tree holds only the user's files.
    assert git(workspace, "status", "--porcelain", "--ignored").splitlines() == [" M app.py"]
    exclude = workspace / ".git" / "info" / "exclude"
    assert ".codeyard" not in (exclude.read_text() if exclude.exists() else "")
    # The revert data shares the tree's file system: the old app.py is a hard link or copy
    # there, on the same device.
    assert os.stat(state).st_dev == os.stat(workspace).st_dev


async def test_git_clean_fdx_then_apply_and_revert_an_earlier_patch(
    api, workspace: Path, home: Path, settle
) -> None:
    status, first = await api("patch/apply", body={"diff": modify(OLD, NEW)})
    assert status == 200, first
    settle()
    (workspace / "build.log").write_text("ignored junk\n")
    git(workspace, "clean", "-fdx", "-q")  # the daily habit, for real
    assert not (workspace / "build.log").exists()
    assert (home / ".codeyard" / "audit.jsonl").is_file()

    status, second = await api("patch/apply", body={"diff": create("b.txt")})
    assert status == 200, second
    # The earlier patch's revert data survived the clean: it reverts.
    status, body = await api(f"patch/{first['patch_id']}/revert", body={})
    assert status == 200, body
    assert (workspace / "app.py").read_bytes() == OLD
    assert (workspace / "b.txt").read_bytes() == b"b.txt\n"
    records = await audit_records(api)
    assert [r["action"] for r in records] == ["patch.apply", "patch.apply", "patch.revert"]
    assert [r["seq"] for r in records] == [1, 2, 3]
    assert records[2]["patch_id"] == first["patch_id"]


async def test_rm_rf_of_the_state_folder_is_rebuilt_and_recorded(
    api, workspace: Path, home: Path, settle
) -> None:
    state = home / ".codeyard"
    status, first = await api("patch/apply", body={"diff": create("a.txt")})
    assert status == 200, first
    settle()
    run("rm", "-rf", str(state))  # the real command

    status, body = await api("patch/apply", body={"diff": create("b.txt")})
    assert status == 200, body
    assert (state / "patches").is_dir()
    records = await audit_records(api)
    assert [r["action"] for r in records] == ["state_lost", "patch.apply"]
    lost = records[0]
    assert (lost["seq"], lost["prev"]) == (1, GENESIS)
    assert lost["missing"] == [str(state)]  # outside the tree: named by its full path
    assert lost["lost_patches"] == [first["patch_id"]] and lost["lost_chain"]["seq"] == 1
    status, err = await api(f"patch/{first['patch_id']}/revert", body={})
    assert status == 410 and err["error"] == "revert_data_lost", err
    assert (workspace / "a.txt").exists()


async def test_an_unwritable_state_folder_gives_507_and_touches_nothing(
    api, workspace: Path, home: Path, settle
) -> None:
    """A file where the folder belongs stops every write below it, root's too."""
    state = home / ".codeyard"
    status, first = await api("patch/apply", body={"diff": modify(OLD, NEW)})
    assert status == 200, first
    settle()
    shutil.rmtree(state)
    state.write_bytes(b"not a folder\n")
    for endpoint, body in (
        ("patch/apply", {"diff": create("c.txt")}),
        ("patch/validate", {"diff": create("c.txt")}),
        (f"patch/{first['patch_id']}/revert", {}),
    ):
        status, err = await api(endpoint, body=body)
        assert status == 507, (endpoint, err)
        assert err["error"] == "state_unwritable" and err["path"] == str(state), err
    assert not (workspace / "c.txt").exists()
    assert (workspace / "app.py").read_bytes() == NEW
    state.unlink()
    status, body = await api("patch/apply", body={"diff": create("c.txt")})
    assert status == 200, body


# ---- a home of the older layout, converted by the home helper's script ----------------


def manager(root: Path, state: Path) -> PatchManager:
    return PatchManager(WorkspacePaths(root), state, AuditLog(state / "audit.jsonl"))


def run_helper_script(user_dir: Path, name: str) -> subprocess.CompletedProcess[str]:
    """The helper's script as the helper runs it, with `user_dir` for its /homes."""
    script = HELPER_SCRIPT.replace("cd /homes ", f"cd {user_dir} ", 1)
    assert script != HELPER_SCRIPT
    return subprocess.run(
        ["sh", "-c", script, "codeyard-home", "prepare", name, "", "", "1000", "work"],
        capture_output=True,
        text=True,
        check=False,
    )


def test_an_old_layout_home_is_converted_and_its_patch_still_reverts(tmp_path: Path) -> None:
    home = tmp_path / "homes" / "ws"
    make_repo(home)  # the old layout: the home is the tree, the state inside it
    old = manager(home, home / ".codeyard")
    applied = old.apply(modify(OLD, NEW))
    old.settle()
    assert (home / ".codeyard" / "patches" / applied["patch_id"]).is_dir()
    (home / "work").mkdir()  # the user's own `work` folder must not be taken for the new one
    (home / "work" / "notes.txt").write_text("mine\n")

    done = run_helper_script(home.parent, "ws")
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(home)) == [".codeyard", LAYOUT_MARKER, "work"]
    assert (home / LAYOUT_MARKER).read_text().strip() == str(HOME_LAYOUT)
    tree = home / "work"
    assert (tree / "app.py").read_bytes() == NEW and (tree / ".git").is_dir()
    assert (tree / "work" / "notes.txt").read_text() == "mine\n"
    assert git(tree, "status", "--porcelain").splitlines() == [" M app.py", "?? work/"]

    again = manager(tree, home / ".codeyard")  # the server of the new layout
    again.recover()
    assert again.revert(applied["patch_id"])["patch_id"] == applied["patch_id"]
    again.settle()
    assert (tree / "app.py").read_bytes() == OLD
    records = again.audit.records()
    assert [r["action"] for r in records] == ["patch.apply", "patch.revert"]
    assert [r["seq"] for r in records] == [1, 2]  # the same chain, continued
    assert again.audit.verify()

    # Run again (every start until the Hub remembers): nothing moves.
    before = sorted(p.relative_to(home).as_posix() for p in home.rglob("*"))
    done = run_helper_script(home.parent, "ws")
    assert done.returncode == 0, done.stderr
    assert sorted(p.relative_to(home).as_posix() for p in home.rglob("*")) == before


@pytest.mark.parametrize("stop_after", ["some_moved", "all_moved", "renamed"])
def test_a_conversion_stopped_half_way_finishes_on_the_next_start(
    tmp_path: Path, stop_after: str
) -> None:
    """The states a crash can leave, made by hand with the script's own names and steps."""
    home = tmp_path / "homes" / "ws"
    make_repo(home)
    (home / ".codeyard").mkdir()
    (home / ".codeyard" / "audit.jsonl").write_text("")
    (home / "b.txt").write_text("b\n")
    partial = home / f"{LAYOUT_MARKER}.work"
    partial.mkdir()
    os.rename(home / "app.py", partial / "app.py")
    if stop_after in ("all_moved", "renamed"):
        for name in (".git", "b.txt"):
            os.rename(home / name, partial / name)
        (home / f"{LAYOUT_MARKER}.moved").write_text("")
    if stop_after == "renamed":
        os.rename(partial, home / "work")

    done = run_helper_script(home.parent, "ws")
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(home)) == [".codeyard", LAYOUT_MARKER, "work"]
    assert sorted(os.listdir(home / "work")) == [".git", "app.py", "b.txt"]
    assert git(home / "work", "status", "--porcelain").splitlines() == ["?? b.txt"]
