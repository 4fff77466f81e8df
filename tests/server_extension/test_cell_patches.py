"""`patch/cell/validate` and `patch/cell/apply` against a real jupyter-server.

A cell diff changes one cell's source, found by cell id. It becomes an ordinary patch of
the `.ipynb`, so `patch/{id}/revert`, stale-base checks and the audit chain work as for
any file.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import nbformat
import pytest

from codeyard.server_extension.patches.difftext import unified_diff

MARKER = "zq_cell_marker_7f3a"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_notebook(root: Path, name: str = "nb.ipynb") -> bytes:
    """Three cells with fixed ids; the second has outputs that must survive a patch."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Title\n\nSome prose.", id="intro"),
        nbformat.v4.new_code_cell(
            "import math\n\ndef area(r):\n    return math.pi * r * r\n\narea(2)",
            id="calc",
            execution_count=3,
            outputs=[nbformat.v4.new_output("execute_result", {"text/plain": "12.56"})],
        ),
        nbformat.v4.new_code_cell("print('done')", id="tail-1"),
    ]
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, root / name)
    return (root / name).read_bytes()


def cell_source(root: Path, cell_id: str, name: str = "nb.ipynb") -> str:
    nb = nbformat.read(root / name, as_version=4)
    return next(c.source for c in nb.cells if c.id == cell_id)


def cell_diff(before: str, after: str) -> str:
    return unified_diff("cell", before, after)


CALC = "import math\n\ndef area(r):\n    return math.pi * r * r\n\narea(2)"
CALC_NEW = CALC.replace("r * r", "r ** 2")


async def test_apply_changes_only_that_cell_and_answers_like_patch_apply(
    api: Any, workspace: Path
) -> None:
    original = make_notebook(workspace)
    body = {"path": "nb.ipynb", "cell_id": "calc", "diff": cell_diff(CALC, CALC_NEW)}
    status, applied = await api("patch/cell/apply", body=body)
    assert status == 200, applied
    now = (workspace / "nb.ipynb").read_bytes()
    assert applied["cell_id"] == "calc"
    assert len(applied["patch_id"]) == 32
    assert applied["files"] == [
        {
            "path": "nb.ipynb",
            "op": "modify",
            "sha256_before": sha(original),
            "sha256_after": sha(now),
        }
    ]
    before_nb = nbformat.reads(original.decode(), as_version=4)
    after_nb = nbformat.reads(now.decode(), as_version=4)
    nbformat.validate(after_nb)
    assert after_nb.cells[1].source == CALC_NEW
    assert after_nb.cells[1].outputs == before_nb.cells[1].outputs
    assert after_nb.cells[1].execution_count == 3
    assert [c.source for c in after_nb.cells[::2]] == [c.source for c in before_nb.cells[::2]]
    # Saved as Jupyter saves it: a later save from JupyterLab shows no spurious diff.
    assert now.decode() == nbformat.writes(after_nb) + "\n"


async def test_header_names_of_the_cell_diff_do_not_matter(
    api: Any, workspace: Path, git_diff: Any
) -> None:
    make_notebook(workspace)
    diff = git_diff({"src/area.py": CALC.encode()}, {"src/area.py": CALC_NEW.encode()})
    status, applied = await api(
        "patch/cell/apply", body={"path": "nb.ipynb", "cell_id": "calc", "diff": diff}
    )
    assert status == 200, applied
    assert cell_source(workspace, "calc") == CALC_NEW
    assert not (workspace / "src").exists()


async def test_validate_reports_the_cell_and_writes_nothing(api: Any, workspace: Path) -> None:
    original = make_notebook(workspace)
    body = {
        "path": "nb.ipynb",
        "cell_id": "calc",
        "diff": cell_diff(CALC, CALC_NEW),
        "base": {"nb.ipynb": sha(original)},
    }
    status, verdict = await api("patch/cell/validate", body=body)
    assert status == 200, verdict
    assert verdict["ok"] is True
    assert verdict["cell_id"] == "calc"
    assert [(f["path"], f["op"], f["applies"]) for f in verdict["files"]] == [
        ("nb.ipynb", "modify", True)
    ]
    assert (workspace / "nb.ipynb").read_bytes() == original


async def test_validate_of_a_hunk_that_does_not_fit_names_the_cell(
    api: Any, workspace: Path
) -> None:
    make_notebook(workspace)
    wrong = cell_diff("print('other')", "print('changed')")
    body = {"path": "nb.ipynb", "cell_id": "calc", "diff": wrong}
    status, verdict = await api("patch/cell/validate", body=body)
    assert status == 200, verdict
    assert verdict["ok"] is False
    (entry,) = verdict["files"]
    assert entry["applies"] is False
    assert entry["error"] == "hunk_failed"
    assert entry["hunk"] == 1
    assert "cell calc in nb.ipynb" in entry["message"]


async def test_a_hunk_that_does_not_fit_gives_409_and_writes_nothing(
    api: Any, workspace: Path
) -> None:
    original = make_notebook(workspace)
    # The diff of the *other* code cell, sent to the wrong cell.
    body = {"path": "nb.ipynb", "cell_id": "tail-1", "diff": cell_diff(CALC, CALC_NEW)}
    status, err = await api("patch/cell/apply", body=body)
    assert status == 409, err
    assert err["error"] == "hunk_failed"
    assert err["path"] == "nb.ipynb"
    assert "cell tail-1" in err["message"]
    assert (workspace / "nb.ipynb").read_bytes() == original


async def test_stale_base_gives_409_with_the_current_hash(api: Any, workspace: Path) -> None:
    original = make_notebook(workspace)
    stale = {"nb.ipynb": sha(original)}
    first = {"path": "nb.ipynb", "cell_id": "tail-1", "base": stale}
    first["diff"] = cell_diff("print('done')", "print('finished')")
    status, _ = await api("patch/cell/apply", body=first)
    assert status == 200
    current = (workspace / "nb.ipynb").read_bytes()
    second = {"path": "nb.ipynb", "cell_id": "calc", "diff": cell_diff(CALC, CALC_NEW)}
    status, err = await api("patch/cell/apply", body={**second, "base": stale})
    assert status == 409, err
    assert err["error"] == "base_mismatch"
    assert err["current"] == sha(current)
    assert (workspace / "nb.ipynb").read_bytes() == current
    status, verdict = await api("patch/cell/validate", body={**second, "base": stale})
    assert status == 200 and verdict["ok"] is False
    assert verdict["base_mismatch"] == {"nb.ipynb": sha(current)}


async def test_revert_restores_the_notebook_exactly(api: Any, workspace: Path) -> None:
    original = make_notebook(workspace)
    body = {"path": "nb.ipynb", "cell_id": "calc", "diff": cell_diff(CALC, CALC_NEW)}
    status, applied = await api("patch/cell/apply", body=body)
    assert status == 200, applied
    status, reverted = await api(f"patch/{applied['patch_id']}/revert", body={})
    assert status == 200, reverted
    assert (workspace / "nb.ipynb").read_bytes() == original
    assert reverted["files"][0]["sha256_after"] == sha(original)


async def test_audit_has_hashes_and_the_cell_id_but_no_code(
    api: Any, workspace: Path, settle: Any
) -> None:
    original = make_notebook(workspace)
    new = CALC.replace("area(2)", f"area(2)  # {MARKER}")
    body = {"path": "nb.ipynb", "cell_id": "calc", "diff": cell_diff(CALC, new)}
    status, applied = await api("patch/cell/apply", body=body)
    assert status == 200, applied
    status, audit = await api("audit", params={"limit": 10})
    assert status == 200 and audit["chain_ok"] is True
    cell_record, engine_record = audit["records"][:2]
    assert engine_record["action"] == "patch.apply"
    assert cell_record["action"] == "patch.cell"
    for record in (cell_record, engine_record):
        assert record["patch_id"] == applied["patch_id"]
        assert record["sha256_before"] == {"nb.ipynb": sha(original)}
        assert record["sha256_after"] == {"nb.ipynb": applied["files"][0]["sha256_after"]}
    assert cell_record["cell_id"] == "calc"
    settle()
    for path in (workspace / ".codeyard").rglob("*"):
        if path.is_file() and "patches" not in path.parts:
            assert MARKER.encode() not in path.read_bytes(), path


async def test_notebook_in_a_folder_and_a_cell_without_final_newline(
    api: Any, workspace: Path
) -> None:
    make_notebook(workspace, "sub/dir/nb.ipynb")
    diff = cell_diff("print('done')", "print('done')\nprint('twice')\n")
    body = {"path": "sub/dir/nb.ipynb", "cell_id": "tail-1", "diff": diff}
    status, applied = await api("patch/cell/apply", body=body)
    assert status == 200, applied
    assert applied["files"][0]["path"] == "sub/dir/nb.ipynb"
    assert cell_source(workspace, "tail-1", "sub/dir/nb.ipynb") == "print('done')\nprint('twice')\n"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"path": "nb.ipynb", "cell_id": "nope"}, 404, "not_found"),
        ({"path": "missing.ipynb", "cell_id": "calc"}, 404, "not_found"),
        ({"path": "plain.py", "cell_id": "calc"}, 400, "not_a_notebook"),
        ({"path": "data.ipynb", "cell_id": "calc"}, 400, "not_a_notebook"),
        ({"path": "nb.ipynb", "cell_id": "bad id!"}, 400, "bad_request"),
        ({"path": "nb.ipynb"}, 400, "bad_request"),
        ({"cell_id": "calc"}, 400, "bad_request"),
        ({"path": "nb.ipynb", "cell_id": "calc", "diff": ""}, 400, "bad_request"),
        ({"path": "nb.ipynb", "cell_id": "calc", "diff": "not a diff"}, 400, "bad_request"),
        ({"path": "../nb.ipynb", "cell_id": "calc"}, 403, "path_forbidden"),
        ({"path": "/etc/nb.ipynb", "cell_id": "calc"}, 403, "path_forbidden"),
        ({"path": "nb.ipynb", "cell_id": "calc", "base": ["x"]}, 400, "bad_request"),
    ],
)
async def test_bad_requests_get_their_status(
    api: Any, workspace: Path, body: dict[str, Any], status: int, code: str
) -> None:
    original = make_notebook(workspace)
    (workspace / "plain.py").write_text(CALC)
    (workspace / "data.ipynb").write_text('{"not": "a notebook"}')
    body = {"diff": cell_diff(CALC, CALC_NEW), **body}
    for endpoint in ("patch/cell/validate", "patch/cell/apply"):
        got, err = await api(endpoint, body=body)
        assert (got, err["error"]) == (status, code), err
        assert set(err) >= {"error", "message"}
    assert (workspace / "nb.ipynb").read_bytes() == original


async def test_a_cell_diff_must_be_one_modification(api: Any, workspace: Path) -> None:
    make_notebook(workspace)
    two = cell_diff(CALC, CALC_NEW) + unified_diff("other", "a\n", "b\n")
    create = "--- /dev/null\n+++ b/cell\n@@ -0,0 +1 @@\n+x\n"
    for diff in (two, create):
        body = {"path": "nb.ipynb", "cell_id": "calc", "diff": diff}
        status, err = await api("patch/cell/apply", body=body)
        assert status == 400, err


async def test_a_diff_that_changes_nothing_is_refused(api: Any, workspace: Path) -> None:
    original = make_notebook(workspace)
    same = "--- a/cell\n+++ b/cell\n@@ -1,2 +1,2 @@\n-import math\n+import math\n \n"
    status, err = await api(
        "patch/cell/apply", body={"path": "nb.ipynb", "cell_id": "calc", "diff": same}
    )
    assert status == 400 and err["error"] == "cell_unchanged", err
    assert (workspace / "nb.ipynb").read_bytes() == original


def test_read_cell_gives_the_source_the_language_and_the_notebook_hash(workspace: Path) -> None:
    from codeyard.server_extension.files import FileReader
    from codeyard.server_extension.patches.cells import CellPatcher
    from codeyard.server_extension.paths import WorkspacePaths

    original = make_notebook(workspace)
    reader = FileReader(WorkspacePaths(workspace), max_size=1 << 20)
    cells = CellPatcher(reader, patches=None)  # type: ignore[arg-type]  # reading needs none
    code = cells.read_cell("nb.ipynb", "calc")
    assert code == {
        "path": "nb.ipynb",
        "cell_id": "calc",
        "cell_type": "code",
        "content": CALC,
        "language": "python",
        "sha256": sha(original),
    }
    assert cells.read_cell("nb.ipynb", "intro")["language"] == "markdown"


@pytest.mark.parametrize("endpoint", ["patch/cell/validate", "patch/cell/apply"])
async def test_requests_without_a_token_get_403(
    without_token: Any, workspace: Path, endpoint: str
) -> None:
    original = make_notebook(workspace)
    body = {"path": "nb.ipynb", "cell_id": "calc", "diff": cell_diff(CALC, CALC_NEW)}
    assert (await without_token(endpoint, "POST", json.dumps(body))).code == 403
    assert (workspace / "nb.ipynb").read_bytes() == original


def test_cell_handlers_are_authenticated_and_scoped(jp_serverapp: Any) -> None:
    from codeyard.server_extension.patches.handlers import CellApplyHandler, CellValidateHandler

    for handler in (CellValidateHandler, CellApplyHandler):
        assert jp_serverapp.web_app._check_handler_auth("cells", handler) == []
        assert handler.auth_resource == "codeyard:cells"


async def test_a_notebook_not_saved_by_jupyter_still_patches_and_reverts_exactly(
    api: Any, workspace: Path
) -> None:
    make_notebook(workspace)
    raw = json.loads((workspace / "nb.ipynb").read_text())
    # Another tool's layout: indent 2, ASCII escapes, no final newline.
    odd = json.dumps(raw, indent=2, ensure_ascii=True).encode()
    (workspace / "nb.ipynb").write_bytes(odd)
    body = {"path": "nb.ipynb", "cell_id": "calc", "diff": cell_diff(CALC, CALC_NEW)}
    status, applied = await api("patch/cell/apply", body={**body, "base": {"nb.ipynb": sha(odd)}})
    assert status == 200, applied
    assert cell_source(workspace, "calc") == CALC_NEW
    assert cell_source(workspace, "intro") == "# Title\n\nSome prose."
    status, _ = await api(f"patch/{applied['patch_id']}/revert", body={})
    assert status == 200
    assert (workspace / "nb.ipynb").read_bytes() == odd


async def test_concurrent_cell_applies_never_lose_or_mix_an_edit(api: Any, workspace: Path) -> None:
    make_notebook(workspace)
    edits = {
        "calc": cell_diff(CALC, CALC_NEW),
        "tail-1": cell_diff("print('done')", "print('finished')"),
        "intro": cell_diff("# Title\n\nSome prose.", "# Title\n\nBetter prose."),
    }
    calls = [
        api("patch/cell/apply", body={"path": "nb.ipynb", "cell_id": cid, "diff": diff})
        for cid, diff in edits.items()
    ]
    results = dict(zip(edits, await asyncio.gather(*calls), strict=True))
    assert {status for status, _ in results.values()} <= {200, 409}, results
    assert any(status == 200 for status, _ in results.values())
    nb = nbformat.read(workspace / "nb.ipynb", as_version=4)
    nbformat.validate(nb)
    now = {c.id: c.source for c in nb.cells}
    expected = {
        "calc": CALC_NEW,
        "tail-1": "print('finished')",
        "intro": "# Title\n\nBetter prose.",
    }
    for cid, (status, err) in results.items():
        if status == 200:
            assert now[cid] == expected[cid]
        else:
            assert err["error"] == "base_mismatch", err
            assert now[cid] != expected[cid]
