"""`llm/proposal_checks.py`: the parse and selection checks of a proposed change, as pure
functions (no server). The endpoint tests are in test_proposal_checks_api.py."""

from __future__ import annotations

import json

import pytest
from proposal_samples import BROKEN, UTILS

from codeyard.server_extension.errors import CodeyardError
from codeyard.server_extension.llm.proposal_checks import (
    apply_hunks,
    cell_python,
    check_diff,
    check_proposal,
    file_sections,
    outside_selection,
    parse_file,
    parse_selection,
)
from codeyard.server_extension.patches.difftext import unified_diff


def test_python_that_parses_passes() -> None:
    after = UTILS.replace("def echo(message):\n", 'def echo(message):\n    """Write."""\n')
    checks = check_proposal("src/click/utils.py", UTILS, after, 5, 6)
    assert checks == {
        "parses": True,
        "parser": "python-ast",
        "error": None,
        "parsed_before": True,
        "outside_selection": False,
    }


def test_future_import_mid_file_is_caught_although_ast_parse_accepts_it() -> None:
    checks = check_proposal("src/click/utils.py", UTILS, BROKEN, 9, 12)
    assert checks["parses"] is False
    assert checks["parsed_before"] is True
    assert checks["error"] == (
        "SyntaxError: from __future__ imports must occur at the beginning of the file (line 9)"
    )


def test_syntax_error_names_the_line_and_no_code() -> None:
    secretish = 'x = "token-abc123\nprint(x)\n'
    result = parse_file("m.py", secretish)
    assert result.parses is False and result.parser == "python-ast"
    assert result.error is not None and "line 1" in result.error
    assert "token" not in result.error and "abc123" not in result.error
    quoted = parse_file("m.py", "print 'hello world'\n")
    assert quoted.error is not None and "hello" not in quoted.error


def test_json_ok_and_broken() -> None:
    assert parse_file("package.json", '{"a": 1}\n').parses is True
    broken = parse_file("conf/package.json", '{"a": 1,\n "b": }\n')
    assert (broken.parses, broken.parser) == (False, "json")
    assert broken.error == "JSONDecodeError: Expecting value (line 2)"


def test_other_types_have_no_parser() -> None:
    checks = check_proposal("README.md", "a\n", "b\n", 1, 1)
    assert (checks["parses"], checks["parser"], checks["error"]) == (None, None, None)
    assert checks["outside_selection"] is False


def _nb(*sources: str, language: str = "python") -> str:
    cells = [
        {"cell_type": "code", "id": f"c{i}", "source": s, "metadata": {}, "outputs": []}
        for i, s in enumerate(sources)
    ]
    meta = {"kernelspec": {"language": language, "name": "k", "display_name": "k"}}
    return json.dumps({"cells": cells, "metadata": meta, "nbformat": 4, "nbformat_minor": 5})


def test_notebook_checks_json_then_changed_code_cells() -> None:
    before = _nb("x = 1", "y = (")  # a cell already broken and left alone is not blamed
    ok = parse_file("a.ipynb", _nb("x = 2", "y = ("), before)
    assert (ok.parses, ok.parser) == (True, "notebook")
    bad = parse_file("a.ipynb", _nb("x = (", "y = ("), before)
    assert bad.parses is False and bad.error is not None
    assert bad.error.startswith("cell c0: SyntaxError") and "line 1" in bad.error
    not_json = parse_file("a.ipynb", before[:-3], before)
    assert not_json.parses is False and not_json.error is not None
    assert not_json.error.startswith("JSONDecodeError")
    shapeless = parse_file("a.ipynb", "[]", before)
    assert shapeless.parses is False
    r_notebook = parse_file("a.ipynb", _nb("x <- (", language="R"), _nb("x <- 1", language="R"))
    assert r_notebook.parses is True, "only Python cells have a parser"


def test_notebook_cell_rewrite_checks_the_cell_source_with_magics() -> None:
    before = "%matplotlib inline\nimport os\n"
    fine = check_proposal(
        "nb.ipynb", before, before + "files = !ls\nprint(os.sep)\n", 2, 2, cell_language="python"
    )
    assert (fine["parses"], fine["parser"]) == (True, "python-ast")
    broken = check_proposal("nb.ipynb", before, before + "def f(:\n", 2, 2, cell_language="python")
    assert broken["parses"] is False and "line 3" in (broken["error"] or "")
    assert cell_python("%%bash\necho hi\n") is None
    magic = check_proposal(
        "nb.ipynb", "%%time\nx=1\n", "%%time\nx=(\n", 2, 2, cell_language="python"
    )
    assert magic["parses"] is None
    markdown = check_proposal("nb.ipynb", "# T", "# T (", 1, 1, cell_language="markdown")
    assert markdown["parses"] is None and markdown["parser"] is None


LINES = "".join(f"line{i}\n" for i in range(1, 11))


def _replace(text: str, first: int, last: int, new: list[str]) -> str:
    lines = text.splitlines(keepends=True)
    return "".join(lines[: first - 1] + [f"{n}\n" for n in new] + lines[last:])


def test_changes_inside_the_selection_growing_or_shrinking() -> None:
    assert not outside_selection(LINES, _replace(LINES, 4, 6, ["a", "b", "c", "d", "e"]), 4, 6)
    assert not outside_selection(LINES, _replace(LINES, 4, 6, ["only"]), 4, 6)
    assert not outside_selection(LINES, _replace(LINES, 4, 6, []), 4, 6)
    assert not outside_selection(LINES, LINES, 4, 6)


def test_insertions_at_the_boundary_are_the_selection_growing() -> None:
    before_first = _replace(LINES, 4, 3, ["new"])  # between lines 3 and 4
    after_last = _replace(LINES, 7, 6, ["new"])  # between lines 6 and 7
    assert not outside_selection(LINES, before_first, 4, 6)
    assert not outside_selection(LINES, after_last, 4, 6)
    one_further_up = _replace(LINES, 3, 2, ["new"])  # between lines 2 and 3
    one_further_down = _replace(LINES, 8, 7, ["new"])  # between lines 7 and 8
    assert outside_selection(LINES, one_further_up, 4, 6)
    assert outside_selection(LINES, one_further_down, 4, 6)


def test_changes_outside_the_selection_are_reported() -> None:
    assert outside_selection(LINES, _replace(LINES, 1, 1, ["import x"]), 4, 6)
    assert outside_selection(LINES, _replace(LINES, 6, 7, ["six", "seven"]), 4, 6)
    assert outside_selection(LINES, _replace(LINES, 9, 10, []), 4, 6)


def test_a_duplicated_line_drawn_outside_by_difflib_still_counts_as_inside() -> None:
    # Selecting 2-3 and writing "c" again before it: difflib may show the insertion after
    # line 4 (the original "c"), which is the same change as one inside the selection.
    text = "a\nb1\nb2\nc\nd\n"
    after = "a\nc\nx\nc\nd\n"  # lines 2-3 replaced by "c", "x"
    assert not outside_selection(text, after, 2, 3)
    doubled = "a\nb\nb\nc\n"
    assert not outside_selection(doubled, "a\nb\nb\nb\nc\n", 2, 2)
    assert outside_selection("a\nb\nc\nd\ne\n", "a\nb\nc\nd\nd\ne\n", 1, 2)


def test_apply_hunks_and_check_diff_match_the_server_diff() -> None:
    diff = unified_diff("src/m.py", UTILS, BROKEN)
    assert list(file_sections(diff)) == ["src/m.py"]
    assert apply_hunks(UTILS, file_sections(diff)["src/m.py"]) == BROKEN
    selection = parse_selection({"path": "src/m.py", "start_line": 9, "end_line": 12})
    checks = check_diff(diff, selection, UTILS)
    assert checks is not None and checks["parses"] is False
    assert checks["outside_selection"] is False
    narrow = parse_selection({"path": "src/m.py", "start_line": 11, "end_line": 12})
    got = check_diff(diff, narrow, UTILS)
    assert got is not None and got["outside_selection"] is True


def test_check_diff_without_final_newline_and_other_files() -> None:
    before, after = "a\nb", "a\nB"
    diff = unified_diff("t.json", before, after)
    assert "\\ No newline" in diff
    assert apply_hunks(before, file_sections(diff)["t.json"]) == after
    two = diff + unified_diff("other.txt", "x\n", "y\n")
    sel = parse_selection({"path": "t.json", "start_line": 2, "end_line": 2})
    checks = check_diff(two, sel, before)
    assert checks is not None and checks["outside_selection"] is True
    assert checks["parses"] is False  # "a\nB" is not JSON
    assert check_diff(diff, sel, "something else\n") is None, "hunks that do not fit"


def test_removed_line_that_looks_like_a_header_stays_in_its_hunk() -> None:
    before = "keep\n-- x\n"
    after = "keep\n"
    diff = unified_diff("f.txt", before, after)
    assert "\n--- x\n" in diff
    assert apply_hunks(before, file_sections(diff)["f.txt"]) == after


@pytest.mark.parametrize(
    "raw",
    [
        None,
        [],
        {"path": "a", "start_line": 0, "end_line": 1},
        {"path": "a", "start_line": 3, "end_line": 2},
        {"start_line": 1, "end_line": 1},
        {"path": "a", "start_line": True, "end_line": 1},
    ],
)
def test_bad_selection_is_a_400(raw: object) -> None:
    with pytest.raises(CodeyardError) as info:
        parse_selection(raw)
    assert info.value.status == 400
