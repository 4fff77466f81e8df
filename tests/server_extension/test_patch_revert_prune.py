"""Revert data is pruned after an apply (`CodeyardApp.revert_keep`, `revert_max_age`), and
reverting a pruned patch answers a precise error instead of 404.

The endpoint tests run on the real server with `revert_keep=2`; the age limit and the
re-reading of the store after a restart use `PatchManager` directly, with real time.
Pruning runs when answered transactions are retired (in the background), so each test
settles before it looks at the store.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from jpconfig import server_config

from codeyard.server_extension.audit import AuditLog
from codeyard.server_extension.errors import CodeyardError
from codeyard.server_extension.patches.manager import PatchManager
from codeyard.server_extension.paths import WorkspacePaths


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return server_config(CodeyardApp={"revert_keep": 2})


def create(name: str) -> str:
    return f"--- /dev/null\n+++ b/{name}\n@@ -0,0 +1 @@\n+{name}\n"


def stored(state: Path) -> set[str]:
    return {p.name for p in (state / "patches").iterdir()}


async def test_revert_keep_prunes_oldest_and_pruned_revert_answers_410(
    api, workspace: Path, jp_serverapp, settle
) -> None:
    assert jp_serverapp.web_app.settings["codeyard_patches"].revert_store.keep == 2
    ids = []
    for name in ("a.txt", "b.txt", "c.txt"):
        status, body = await api("patch/apply", body={"diff": create(name)})
        assert status == 200, body
        ids.append(body["patch_id"])
    state = workspace / ".codeyard"
    settle()
    assert stored(state) == set(ids[1:])
    status, err = await api(f"patch/{ids[0]}/revert", body={})
    assert status == 410, err
    assert err["error"] == "revert_data_pruned" and err["patch_id"] == ids[0]
    assert "revert_keep" in err["message"]
    assert (workspace / "a.txt").read_bytes() == b"a.txt\n"  # nothing was touched
    status, body = await api(f"patch/{ids[2]}/revert", body={})
    assert status == 200, body
    assert not (workspace / "c.txt").exists()
    status, audit = await api("audit", params={"limit": 10})
    assert audit["chain_ok"] is True
    assert [r["action"] for r in audit["records"]][:1] == ["patch.revert"]


async def test_reverted_then_pruned_answers_409_and_unknown_404(
    api, workspace: Path, settle
) -> None:
    status, first = await api("patch/apply", body={"diff": create("a.txt")})
    assert status == 200
    assert (await api(f"patch/{first['patch_id']}/revert", body={}))[0] == 200
    for name in ("b.txt", "c.txt"):
        assert (await api("patch/apply", body={"diff": create(name)}))[0] == 200
    settle()
    assert first["patch_id"] not in stored(workspace / ".codeyard")
    status, err = await api(f"patch/{first['patch_id']}/revert", body={})
    assert status == 409 and err["error"] == "already_reverted"
    status, err = await api(f"patch/{'0' * 32}/revert", body={})
    assert status == 404 and err["error"] == "not_found"


def manager_for(root: Path, **limits: Any) -> PatchManager:
    state = root / ".codeyard"
    state.mkdir(exist_ok=True)
    return PatchManager(WorkspacePaths(root), state, AuditLog(state / "audit.jsonl"), **limits)


def test_revert_max_age_prunes_by_age(tmp_path: Path) -> None:
    # Pruning runs when a transaction is retired, after its flush; the age limit leaves room
    # for a slow flush on a busy machine (a CI run once took over 0.5 s).
    manager = manager_for(tmp_path, revert_max_age=3.0)
    old = manager.apply(create("old.txt"))["patch_id"]
    young = manager.apply(create("young.txt"))["patch_id"]
    manager.settle()
    assert stored(tmp_path / ".codeyard") == {old, young}  # both younger than 3 s
    time.sleep(3.1)
    newest = manager.apply(create("new.txt"))["patch_id"]
    manager.settle()
    assert stored(tmp_path / ".codeyard") == {newest}
    with pytest.raises(CodeyardError) as info:
        manager.revert(old)
    assert (info.value.status, info.value.code) == (410, "revert_data_pruned")
    assert (tmp_path / "old.txt").exists()
    manager.revert(newest)
    assert not (tmp_path / "new.txt").exists()


def test_limits_apply_to_revert_data_left_by_an_earlier_server(tmp_path: Path) -> None:
    unlimited = manager_for(tmp_path)
    ids = [unlimited.apply(create(f"f{i}.txt"))["patch_id"] for i in range(4)]
    unlimited.settle()
    assert stored(tmp_path / ".codeyard") == set(ids)  # 0 = keep everything
    restarted = manager_for(tmp_path, revert_keep=2)
    restarted.recover()
    newest = restarted.apply(create("g.txt"))["patch_id"]
    restarted.settle()
    assert stored(tmp_path / ".codeyard") == {ids[3], newest}
    assert not list((tmp_path / ".codeyard" / "scratch").iterdir())  # nothing half-pruned


def test_negative_limits_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=">= 0"):
        manager_for(tmp_path, revert_keep=-1)


@pytest.mark.parametrize("trait", ["revert_keep", "revert_max_age"])
def test_traitlets_refuse_negative_limits(trait: str) -> None:
    from traitlets import TraitError

    from codeyard.server_extension.app import CodeyardApp

    app = CodeyardApp()
    with pytest.raises(TraitError, match=trait):
        setattr(app, trait, -1)
