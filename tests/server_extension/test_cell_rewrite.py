"""rewrite and explain addressed to one notebook cell (`cell_id`), through the real server.

A cell rewrite answers a diff of the cell's source with the notebook's hash as `base`, ready
for `patch/cell/apply`. The model stack is the session fixture `model_stack` (conftest.py);
only two tests call the model, the rest use a canned answer or fail before the model call.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jpconfig import model_llm, server_config

RATE_CELL = "def apply_rate(total):\n    result = total * 0.2\n    return result"


@pytest.fixture
def jp_server_config(model_stack: dict[str, str]) -> dict[str, Any]:
    return server_config(
        CodeyardLLM=model_llm(
            model_stack, explain_max_tokens=48, explain_temperature=0.0, rewrite_max_tokens=96
        ),
    )


def write_notebook(root: Path, name: str = "nb.ipynb") -> bytes:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Rates\n\nHow totals are taxed.", id="intro"),
        nbformat.v4.new_code_cell(RATE_CELL, id="rate"),
        nbformat.v4.new_code_cell("print(apply_rate(10))", id="tail"),
    ]
    nbformat.write(nb, root / name)
    return (root / name).read_bytes()


def cells_of(data: bytes) -> dict[str, str]:
    return {c["id"]: "".join(c["source"]) for c in json.loads(data)["cells"]}


async def test_cell_rewrite_gives_a_cell_diff_that_applies_to_that_cell_only(
    api: Any, workspace: Path
) -> None:
    before = write_notebook(workspace)
    status, body = await api(
        "rewrite",
        body={
            "path": "nb.ipynb",
            "cell_id": "rate",
            "start_line": 2,
            "end_line": 3,
            "instruction": "Rename the variable result to value.",
        },
    )
    assert status == 200, body
    assert body["cell_id"] == "rate"
    assert body["base"] == {"nb.ipynb": hashlib.sha256(before).hexdigest()}
    assert body["usage"]["completion_tokens"] > 0
    assert (workspace / "nb.ipynb").read_bytes() == before, "rewrite must not write"
    if body["unchanged"]:
        assert body["diff"] == ""
        return
    assert "ipynb" not in body["diff"], "the diff is of the cell's source, not the notebook"
    request = {"path": "nb.ipynb", "cell_id": "rate", "diff": body["diff"], "base": body["base"]}
    status, applied = await api("patch/cell/apply", body=request)
    assert status == 200, applied
    old, new = cells_of(before), cells_of((workspace / "nb.ipynb").read_bytes())
    assert new["intro"] == old["intro"] and new["tail"] == old["tail"]
    assert new["rate"].splitlines()[0] == "def apply_rate(total):", "line 1 was not selected"


async def test_cell_explain_streams_about_the_cell(api: Any, workspace: Path) -> None:
    write_notebook(workspace)
    status, body = await api(
        "explain", body={"path": "nb.ipynb", "cell_id": "rate", "start_line": 1, "end_line": 3}
    )
    assert status == 200, body
    assert body["text"].strip()
    assert body["usage"]["completion_tokens"] > 0


async def test_cell_rewrite_from_a_canned_answer_is_validated_and_applies(
    api: Any, workspace: Path, jp_serverapp: Any
) -> None:
    """The result building without the model: the diff and base go straight to apply.

    A canned model answer stands in for the model here (and in the 409 test below):
    the small CPU model cannot be steered to one exact edit, and this test asserts the exact
    bytes that apply and revert produce. The real model path is covered by the two tests
    above.
    """
    before = write_notebook(workspace)
    settings = jp_serverapp.web_app.settings
    rewriter, cells = settings["codeyard_rewriter"], settings["codeyard_cells"]
    request = {
        "path": "nb.ipynb",
        "cell_id": "rate",
        "start_line": 2,
        "end_line": 2,
        "instruction": "use 0.25",
    }
    messages, ctx, current = rewriter.prepare(request, cells)
    assert ctx.language == "python"
    assert "result = total * 0.2" in messages[1]["content"]
    assert "print(apply_rate(10))" not in messages[1]["content"], "other cells are not context"
    answer = "```python\nresult = total * 0.25\n```"
    result = rewriter.build_result(ctx, current, answer, cells)
    assert result["cell_id"] == "rate" and not result["unchanged"]
    assert result["base"] == {"nb.ipynb": hashlib.sha256(before).hexdigest()}
    request = {
        "path": "nb.ipynb",
        "cell_id": "rate",
        "diff": result["diff"],
        "base": result["base"],
    }
    status, applied = await api("patch/cell/apply", body=request)
    assert status == 200, applied
    assert applied["cell_id"] == "rate"
    expected = RATE_CELL.replace("0.2\n", "0.25\n")
    assert cells_of((workspace / "nb.ipynb").read_bytes()) == {
        **cells_of(before),
        "rate": expected,
    }
    status, reverted = await api(f"patch/{applied['patch_id']}/revert", method="POST", body={})
    assert status == 200, reverted
    assert (workspace / "nb.ipynb").read_bytes() == before


@pytest.mark.parametrize(
    ("endpoint", "cell_id", "status", "error"),
    [
        ("rewrite", "nope", 404, None),
        ("explain", "nope", 404, None),
        ("rewrite", "bad id!", 400, None),
        ("rewrite", 7, 400, None),
    ],
)
async def test_cell_requests_fail_before_the_model_call(
    api: Any, workspace: Path, endpoint: str, cell_id: Any, status: int, error: str | None
) -> None:
    write_notebook(workspace)
    body = {"path": "nb.ipynb", "cell_id": cell_id, "start_line": 1, "end_line": 1}
    if endpoint == "rewrite":
        body["instruction"] = "Add a docstring."
    got, answer = await api(endpoint, body=body)
    assert got == status, answer


async def test_cell_id_on_a_file_that_is_not_a_notebook_gives_400(
    api: Any, workspace: Path
) -> None:
    (workspace / "calc.py").write_text("x = 1\n")
    body = {"path": "calc.py", "cell_id": "rate", "start_line": 1, "end_line": 1}
    status, answer = await api("rewrite", body={**body, "instruction": "Rename x to y."})
    assert status == 400, answer
    assert answer["error"] == "not_a_notebook"


async def test_stale_notebook_after_a_cell_rewrite_gives_409_on_apply(
    api: Any, workspace: Path, jp_serverapp: Any
) -> None:
    # A canned model answer, as above: the 409 must not depend on what the model writes.
    write_notebook(workspace)
    settings = jp_serverapp.web_app.settings
    rewriter, cells = settings["codeyard_rewriter"], settings["codeyard_cells"]
    request = {"path": "nb.ipynb", "cell_id": "rate", "start_line": 3, "end_line": 3}
    _, ctx, current = rewriter.prepare({**request, "instruction": "x"}, cells)
    result = rewriter.build_result(ctx, current, "```python\n    return result * 2\n```", cells)
    nb = nbformat.read(workspace / "nb.ipynb", as_version=4)
    nb.cells[2].source = "print(apply_rate(20))"
    nbformat.write(nb, workspace / "nb.ipynb")
    body = {"path": "nb.ipynb", "cell_id": "rate", "diff": result["diff"], "base": result["base"]}
    status, answer = await api("patch/cell/apply", body=body)
    assert status == 409, answer
    assert answer["error"] == "base_mismatch"
