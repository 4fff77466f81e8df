"""The proposal checks through the real server: `patch/validate` and `patch/cell/validate`
with a `selection` answer `checks`; `rewrite`'s result carries `finish_reason`, `raw` and
`checks`; `status` names the `max_tokens` bound.

No model here: the diffs are written by the test (a model cannot be steered to one exact
bad proposal), and rewrite results are built from a canned answer with `build_result`.
The real model's answer shape is in test_rewrite_answer_model.py.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jpconfig import server_config
from proposal_samples import BROKEN, UTILS

from codeyard.server_extension.errors import CodeyardError
from codeyard.server_extension.patches.difftext import unified_diff


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    # No gateway: the status test wants the 503 body; nothing here calls the model.
    return server_config(CodeyardLLM={"url": "", "max_tokens_limit": 400})


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def test_validate_with_selection_marks_a_diff_that_breaks_python(
    api: Any, workspace: Path
) -> None:
    (workspace / "src" / "click").mkdir(parents=True)
    (workspace / "src/click/utils.py").write_text(UTILS)
    diff = unified_diff("src/click/utils.py", UTILS, BROKEN)
    body = {
        "diff": diff,
        "base": {"src/click/utils.py": sha(UTILS)},
        "selection": {"path": "src/click/utils.py", "start_line": 9, "end_line": 12},
    }
    status, answer = await api("patch/validate", body=body)
    assert status == 200, answer
    assert answer["ok"] is True, "git applies it: only the parse check sees the problem"
    checks = answer["checks"]
    assert checks["parses"] is False and checks["parsed_before"] is True
    assert checks["parser"] == "python-ast"
    assert checks["error"] == (
        "SyntaxError: from __future__ imports must occur at the beginning of the file (line 9)"
    )
    assert checks["outside_selection"] is False
    assert (workspace / "src/click/utils.py").read_text() == UTILS, "validate writes nothing"


async def test_validate_marks_hunks_outside_the_selection(api: Any, workspace: Path) -> None:
    (workspace / "m.py").write_text(UTILS)
    after = UTILS.replace("import os\n", "import os\nimport re\n").replace(
        "    return str(value)\n", "    return str(value).strip()\n"
    )
    body = {
        "diff": unified_diff("m.py", UTILS, after),
        "selection": {"path": "m.py", "start_line": 9, "end_line": 12},
    }
    status, answer = await api("patch/validate", body=body)
    assert status == 200, answer
    assert answer["checks"]["parses"] is True
    assert answer["checks"]["outside_selection"] is True
    inside = {**body, "selection": {"path": "m.py", "start_line": 1, "end_line": 12}}
    status, answer = await api("patch/validate", body=inside)
    assert answer["checks"]["outside_selection"] is False


async def test_validate_json_and_other_types(api: Any, workspace: Path) -> None:
    (workspace / "conf.json").write_text('{\n  "a": 1\n}\n')
    (workspace / "notes.txt").write_text("one\n")
    broken = unified_diff("conf.json", '{\n  "a": 1\n}\n', '{\n  "a": 1,\n}\n')
    sel = {"path": "conf.json", "start_line": 2, "end_line": 2}
    status, answer = await api("patch/validate", body={"diff": broken, "selection": sel})
    assert status == 200, answer
    assert answer["checks"]["parser"] == "json"
    assert answer["checks"]["parses"] is False
    assert answer["checks"]["error"].startswith("JSONDecodeError: ")
    text = unified_diff("notes.txt", "one\n", "two\n")
    sel = {"path": "notes.txt", "start_line": 1, "end_line": 1}
    status, answer = await api("patch/validate", body={"diff": text, "selection": sel})
    assert answer["checks"]["parses"] is None and answer["checks"]["parser"] is None


async def test_validate_without_selection_is_unchanged_and_bad_selection_is_400(
    api: Any, workspace: Path
) -> None:
    (workspace / "m.py").write_text(UTILS)
    diff = unified_diff("m.py", UTILS, BROKEN)
    status, answer = await api("patch/validate", body={"diff": diff})
    assert status == 200 and "checks" not in answer
    bad = {"diff": diff, "selection": {"path": "m.py", "start_line": 5, "end_line": 2}}
    status, answer = await api("patch/validate", body=bad)
    assert status == 400 and answer["error"] == "bad_request", answer
    stale = {"diff": diff, "selection": {"path": "m.py", "start_line": 1, "end_line": 2}}
    (workspace / "m.py").write_text("something else\n")
    status, answer = await api("patch/validate", body=stale)
    assert status == 200 and answer["ok"] is False
    assert answer["checks"] is None, "hunks that do not fit: nothing to check"


def write_notebook(root: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "P", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Rates", id="intro"),
        nbformat.v4.new_code_cell("def rate(t):\n    return t * 0.2", id="rate"),
    ]
    nbformat.write(nb, root / "nb.ipynb")


async def test_cell_validate_checks_the_cell_source(api: Any, workspace: Path) -> None:
    write_notebook(workspace)
    before = "def rate(t):\n    return t * 0.2"
    broken = unified_diff("cell", before, "def rate(t):\n    return (t * 0.2")
    body = {
        "path": "nb.ipynb",
        "cell_id": "rate",
        "diff": broken,
        "selection": {"start_line": 2, "end_line": 2},
    }
    status, answer = await api("patch/cell/validate", body=body)
    assert status == 200, answer
    assert answer["ok"] is True
    checks = answer["checks"]
    assert checks["parses"] is False and checks["parser"] == "python-ast"
    assert "line 2" in checks["error"]
    assert checks["outside_selection"] is False
    fine = unified_diff("cell", before, "def rate(total):\n    return t * 0.2")
    status, answer = await api("patch/cell/validate", body={**body, "diff": fine})
    assert answer["checks"]["parses"] is True
    assert answer["checks"]["outside_selection"] is True, "line 1 was not selected"


async def test_rewrite_result_carries_finish_reason_raw_and_checks(
    workspace: Path, jp_serverapp: Any
) -> None:
    from codeyard.server_extension.llm.client import Usage

    (workspace / "utils.py").write_text(UTILS)
    rewriter = jp_serverapp.web_app.settings["codeyard_rewriter"]
    request = {"path": "utils.py", "start_line": 9, "end_line": 9, "instruction": "docstring"}
    _, ctx, current = rewriter.prepare(request)
    answer = (
        "Here you go:\n```python\nfrom __future__ import annotations\n"
        'def make_str(value):\n    """Text of value."""\n```'
    )
    usage = Usage(10, 20, finish_reason="stop", max_tokens=200)
    result = rewriter.build_result(ctx, current, answer, None, usage)
    assert result["unchanged"] is False
    assert result["finish_reason"] == "stop"
    assert result["raw"] == answer
    assert result["checks"]["parses"] is False
    assert result["checks"]["outside_selection"] is False
    assert "__future__" in result["diff"]

    truncated = Usage(10, 200, finish_reason="length", max_tokens=200)
    with pytest.raises(CodeyardError) as info:
        rewriter.build_result(ctx, current, "Sure! Here is the", None, truncated)
    assert info.value.code == "answer_truncated"
    assert info.value.extra["raw"] == "Sure! Here is the"
    assert info.value.extra["finish_reason"] == "length"

    same = "```python\ndef make_str(value):\n```"
    unchanged = rewriter.build_result(ctx, current, same, None, usage)
    assert unchanged["unchanged"] is True and unchanged["raw"] == same
    assert unchanged["checks"]["parses"] is True


async def test_status_names_the_max_tokens_bound_even_when_down(api: Any) -> None:
    status, body = await api("status")
    assert status == 503, body
    assert body["max_tokens_limit"] == 400
    assert body["rewrite_max_tokens"] == 1024 and body["explain_max_tokens"] == 512


async def test_max_tokens_above_the_bound_is_refused(api: Any, workspace: Path) -> None:
    (workspace / "utils.py").write_text(UTILS)
    request = {"path": "utils.py", "start_line": 9, "end_line": 9, "instruction": "docstring"}
    status, body = await api("rewrite", body={**request, "max_tokens": 401})
    assert status == 400, body
    assert body["field"] == "max_tokens" and body["maximum"] == 400
