"""Checks of a proposed change before the user reviews it: does the changed file still parse,
and does the change stay inside the lines the user selected?

A small model's rewrite can look plausible in a diff and still break the file (an import
placed mid-file, an unclosed bracket), or the diff may reach past the selection. These
checks are pure functions over text, so `rewrite` and `patch/validate` answer the same
`checks` object and the panel can ask for an explicit confirmation before Apply.

What the parse check covers, per file type:

- Python (`.py`, `.pyi`, and Python notebook cells): `ast.parse` and then `compile` of the
  tree, which also catches errors the parser alone lets through (`from __future__` after
  other statements, `return` outside a function). Nothing is executed. Lines a notebook
  runs through IPython (`%magic`, `!shell`, `?help`) are blanked first; a cell that starts
  with a `%%` cell magic is not Python and is not checked.
- JSON (`.json`): `json.loads` of the whole file.
- Notebooks (`.ipynb`): `json.loads` of the whole file and its nbformat-4 shape (a `cells`
  list); then every code cell whose source changed, if the notebook's language is Python.
  A rewrite of one cell checks that cell's new source.
- Anything else: no parser, `parses` is None.

Error texts name the exception, the parser's message and the line, never code: quoted
fragments in the message are replaced by an ellipsis.
"""

from __future__ import annotations

import ast
import difflib
import json
import re
from dataclasses import dataclass
from typing import Any, TypedDict

from ..errors import bad_request

PYTHON_SUFFIXES = (".py", ".pyi")


class ProposalChecks(TypedDict):
    """The `checks` object of `rewrite` and `patch/validate` answers."""

    parses: bool | None  # None: no parser for this file type
    parser: str | None  # "python-ast" | "json" | "notebook" | None
    error: str | None  # "SyntaxError: invalid syntax (line 3)"; never code text
    parsed_before: bool | None  # the same check on the text before the change
    outside_selection: bool | None  # None: no selection was given


@dataclass(frozen=True)
class ParseResult:
    parses: bool | None
    parser: str | None
    error: str | None = None


_QUOTED = re.compile(r"'[^'\n]*'|\"[^\"\n]*\"")
_IPYTHON_LINE = re.compile(r"^(\s*)(?:[%!?]|\w+\s*=\s*[%!])")


def _no_code(message: str) -> str:
    """The parser's message without quoted source fragments (they can hold user code)."""
    return _QUOTED.sub("'…'", message).strip()


def _python_error(exc: SyntaxError, line_offset: int = 0) -> str:
    where = f" (line {exc.lineno + line_offset})" if exc.lineno else ""
    return f"{type(exc).__name__}: {_no_code(str(exc.msg))}{where}"


def parse_python(text: str, filename: str = "<proposal>") -> ParseResult:
    """`ast.parse`, then `compile` of the tree (future imports, `return` outside a function)."""
    try:
        tree = ast.parse(text, filename)
        compile(tree, filename, "exec", dont_inherit=True)
    except SyntaxError as exc:  # IndentationError and TabError are SyntaxErrors
        return ParseResult(False, "python-ast", _python_error(exc))
    except (ValueError, RecursionError, MemoryError) as exc:  # NUL bytes, absurd nesting
        return ParseResult(False, "python-ast", f"{type(exc).__name__}: the text cannot be parsed")
    return ParseResult(True, "python-ast")


def parse_json(text: str) -> ParseResult:
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        return ParseResult(
            False, "json", f"JSONDecodeError: {_no_code(exc.msg)} (line {exc.lineno})"
        )
    except RecursionError:
        return ParseResult(False, "json", "RecursionError: nested too deeply")
    return ParseResult(True, "json")


def cell_python(source: str) -> str | None:
    """A notebook cell's source as plain Python: IPython-only lines (`%line` magics, `!shell`,
    `x = !cmd`, `?help`) become `pass` at the same indentation, so line numbers hold. None for
    a cell magic (`%%time`, `%%bash`), whose body need not be Python at all."""
    if source.lstrip().startswith("%%"):
        return None
    out = []
    for line in source.split("\n"):
        match = _IPYTHON_LINE.match(line)
        out.append(f"{match.group(1)}pass" if match else line)
    return "\n".join(out)


def parse_cell(source: str, language: str) -> ParseResult:
    """One code cell of a notebook; only Python cells have a parser."""
    if language != "python":
        return ParseResult(None, None)
    code = cell_python(source)
    if code is None:
        return ParseResult(None, None)
    result = parse_python(code, "<cell>")
    return ParseResult(result.parses, "python-ast", result.error)


def _notebook_cells(nb: Any) -> tuple[str, list[dict[str, Any]]] | None:
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        return None
    meta: dict[str, Any] = nb["metadata"] if isinstance(nb.get("metadata"), dict) else {}
    info, kernel = meta.get("language_info"), meta.get("kernelspec")
    language = (info.get("name") if isinstance(info, dict) else None) or (
        kernel.get("language") if isinstance(kernel, dict) else None
    )
    cells = [c for c in nb["cells"] if isinstance(c, dict)]
    return str(language or "python"), cells


def _source(cell: dict[str, Any]) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def parse_notebook(text: str, before: str | None = None) -> ParseResult:
    """The notebook's JSON and shape, then each code cell that differs from `before` (every
    code cell when `before` is None or unreadable)."""
    try:
        nb = json.loads(text)
    except json.JSONDecodeError as exc:
        return ParseResult(
            False, "notebook", f"JSONDecodeError: {_no_code(exc.msg)} (line {exc.lineno})"
        )
    found = _notebook_cells(nb)
    if found is None:
        return ParseResult(False, "notebook", "NotebookError: no cells list (not nbformat 4)")
    language, cells = found
    old: dict[str, str] = {}
    old_by_index: list[str] = []
    if before is not None:
        try:
            old_found = _notebook_cells(json.loads(before))
        except json.JSONDecodeError:
            old_found = None
        if old_found is not None:
            for cell in old_found[1]:
                old_by_index.append(_source(cell))
                if isinstance(cell.get("id"), str):
                    old[cell["id"]] = _source(cell)
    for index, cell in enumerate(cells, start=1):
        if cell.get("cell_type") != "code":
            continue
        source = _source(cell)
        cell_id = cell.get("id")
        previous = old.get(cell_id) if isinstance(cell_id, str) and old else None
        if previous is None and not old and index <= len(old_by_index):
            previous = old_by_index[index - 1]
        if before is not None and previous == source:
            continue
        result = parse_cell(source, language)
        if result.parses is False:
            name = f"cell {cell_id}" if isinstance(cell_id, str) else f"cell {index}"
            return ParseResult(False, "notebook", f"{name}: {result.error}")
    return ParseResult(True, "notebook")


def parse_file(path: str, text: str, before: str | None = None) -> ParseResult:
    """The parse check for a whole file, chosen by its name."""
    name = path.lower()
    if name.endswith(PYTHON_SUFFIXES):
        return parse_python(text, path.rsplit("/", 1)[-1])
    if name.endswith(".ipynb"):
        return parse_notebook(text, before)
    if name.endswith(".json"):
        return parse_json(text)
    return ParseResult(None, None)


# ---- outside the selection -------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One run of removed and/or added lines. `at` is the 0-based index in the old text of
    the first removed line; a pure insertion sits between old lines `at` and `at + 1`
    (1-based), i.e. before old index `at`."""

    at: int
    removed: tuple[str, ...]
    added: tuple[str, ...]


def changes(before: str, after: str) -> list[Change]:
    """The changed runs between two texts, line by line."""
    old, new = before.splitlines(keepends=True), after.splitlines(keepends=True)
    out = []
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag != "equal":
            out.append(Change(i1, tuple(old[i1:i2]), tuple(new[j1:j2])))
    return out


def _positions(change: Change, old: list[str]) -> list[int]:
    """Where a pure insertion or deletion could equally sit: the same lines inserted next to
    an identical line can be drawn above or below it (git's "slider"). A change that both
    removes and adds lines has one position."""
    spots = [change.at]
    if change.removed and change.added:
        return spots
    k = len(change.removed)
    if not change.removed:
        block = list(change.added)
        at = change.at
        while at > 0 and old[at - 1] == block[-1]:
            block = [old[at - 1], *block[:-1]]
            at -= 1
            spots.append(at)
        block, at = list(change.added), change.at
        while at < len(old) and old[at] == block[0]:
            block = [*block[1:], old[at]]
            at += 1
            spots.append(at)
        return spots
    at = change.at
    while at > 0 and old[at - 1] == old[at + k - 1]:
        at -= 1
        spots.append(at)
    at = change.at
    while at + k < len(old) and old[at + k] == old[at]:
        at += 1
        spots.append(at)
    return spots


def _inside(change: Change, at: int, start_line: int, end_line: int) -> bool:
    if change.removed:
        # Removed (or replaced) old lines at+1 .. at+len(removed), 1-based.
        return start_line <= at + 1 and at + len(change.removed) <= end_line
    # An insertion right before the first or right after the last selected line is the
    # selection growing; one further away changes lines the user did not select.
    return start_line - 1 <= at <= end_line


def outside_selection(before: str, after: str, start_line: int, end_line: int) -> bool:
    """True when some change of `before` -> `after` removes, replaces or inserts lines
    outside `start_line..end_line` (1-based, inclusive, in `before`)."""
    old = before.splitlines(keepends=True)
    for change in changes(before, after):
        if not any(_inside(change, at, start_line, end_line) for at in _positions(change, old)):
            return True
    return False


def check_proposal(
    path: str,
    before: str,
    after: str,
    start_line: int | None = None,
    end_line: int | None = None,
    *,
    cell_language: str | None = None,
) -> ProposalChecks:
    """The `checks` of one proposed change of `path` (or of one notebook cell, when
    `cell_language` is given: `before`/`after` are then the cell's source)."""
    if cell_language is not None:
        now, then = parse_cell(after, cell_language), parse_cell(before, cell_language)
    else:
        now, then = parse_file(path, after, before), parse_file(path, before)
    outside = None
    if start_line is not None and end_line is not None:
        outside = outside_selection(before, after, start_line, end_line)
    return {
        "parses": now.parses,
        "parser": now.parser,
        "error": now.error,
        "parsed_before": then.parses,
        "outside_selection": outside,
    }


# ---- applying a diff to text, for checks of a diff a client sends ----------------------


class DiffNotApplicable(ValueError):
    """The diff's hunks do not fit the text (patch/validate reports why in its own words)."""


_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def file_sections(diff: str) -> dict[str, list[str]]:
    """The hunk lines of each file of a unified diff, by new path (old path for a deletion).
    Hunk bodies are read by their line counts, so a removed line that reads "--- x" is not
    taken for the next file's header."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    old_name = ""
    old_left = new_left = 0
    for line in diff.splitlines(keepends=True):
        if current is not None and (old_left > 0 or new_left > 0):
            if line in ("\n", "\r\n"):
                line = " " + line  # an empty context line some tools strip to nothing
            tag = line[:1]
            current.append(line)
            old_left -= tag in (" ", "-")
            new_left -= tag in (" ", "+")
            continue
        match = _HUNK.match(line)
        if match and current is not None:
            current.append(line)
            old_left = int(match.group(2) or 1)
            new_left = int(match.group(4) or 1)
        elif line.startswith("\\") and current is not None:
            current.append(line)
        elif line.startswith("diff --git "):
            current = None
        elif line.startswith("--- "):
            old_name, current = _strip(line[4:]), None
        elif line.startswith("+++ "):
            new_name = _strip(line[4:])
            current = sections.setdefault(new_name if new_name != "/dev/null" else old_name, [])
    return sections


def _strip(name: str) -> str:
    name = name.rstrip("\r\n").split("\t")[0]
    if name.startswith('"') and name.endswith('"'):
        name = name[1:-1]
    return name[2:] if name.startswith(("a/", "b/")) else name


def _drop_newline(lines: list[str]) -> None:
    if lines and lines[-1].endswith("\n"):
        lines[-1] = lines[-1][:-2] if lines[-1].endswith("\r\n") else lines[-1][:-1]


def apply_hunks(text: str, hunk_lines: list[str]) -> str:
    """`text` with one file's hunks applied strictly in order, each at its stated line or the
    nearest offset where its old lines match (as `git apply` does, without fuzz)."""
    hunks: list[tuple[int, list[str], list[str]]] = []
    kind = ""
    for line in hunk_lines:
        match = _HUNK.match(line)
        if match:
            hunks.append((int(match.group(1)), [], []))
            kind = ""
            continue
        if not hunks:
            continue
        _, want, give = hunks[-1]
        if line.startswith("\\"):  # "\ No newline at end of file" ends the previous line
            if kind in (" ", "-"):
                _drop_newline(want)
            if kind in (" ", "+"):
                _drop_newline(give)
            continue
        kind = line[0]
        if kind in (" ", "-"):
            want.append(line[1:])
        if kind in (" ", "+"):
            give.append(line[1:])
    old = text.splitlines(keepends=True)
    out: list[str] = []
    pos = 0
    for start, want, give in hunks:
        at = max(start - 1, 0) if want else start
        found = _find(old, want, at, pos)
        if found is None:
            raise DiffNotApplicable(f"a hunk at line {start} does not match")
        out.extend(old[pos:found])
        out.extend(give)
        pos = found + len(want)
    out.extend(old[pos:])
    return "".join(out)


def _find(old: list[str], want: list[str], at: int, floor: int) -> int | None:
    n = len(want)
    for delta in range(len(old) + 1):
        for spot in (at - delta, at + delta) if delta else (at,):
            if floor <= spot <= len(old) - n and old[spot : spot + n] == want:
                return spot
    return None


# ---- checks of a diff a client sends (`patch/validate`, `patch/cell/validate`) ----------


class Selection(TypedDict):
    path: str
    start_line: int
    end_line: int


def parse_selection(raw: Any, path: str | None = None) -> Selection:
    """A request's `selection` object: `{"path", "start_line", "end_line"}`, 1-based and
    inclusive. For a cell diff `path` is the notebook's and may be left out."""
    if not isinstance(raw, dict):
        raise bad_request("selection must be an object with path, start_line and end_line")
    name = raw.get("path", path)
    if not isinstance(name, str) or not name:
        raise bad_request("selection.path is required")
    lines = []
    for key in ("start_line", "end_line"):
        value = raw.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise bad_request(f"selection.{key} must be a positive integer")
        lines.append(value)
    if lines[0] > lines[1]:
        raise bad_request("selection.start_line is after selection.end_line")
    return {"path": name, "start_line": lines[0], "end_line": lines[1]}


def check_diff(
    diff: str,
    selection: Selection,
    before: str,
    *,
    cell_language: str | None = None,
) -> ProposalChecks | None:
    """The checks of `diff` as a change of `selection["path"]`, whose text now is `before`.
    A diff that also touches other files is outside the selection. None when the diff holds
    no section for that file or its hunks do not fit `before` (validate says why)."""
    sections = file_sections(diff)
    if cell_language is not None:
        hunks = next(iter(sections.values()), None) if len(sections) == 1 else None
        others = False
    else:
        hunks = sections.get(selection["path"])
        others = any(name != selection["path"] for name in sections)
    if hunks is None:
        return None
    try:
        after = apply_hunks(before, hunks)
    except DiffNotApplicable:
        return None
    checks = check_proposal(
        selection["path"],
        before,
        after,
        selection["start_line"],
        selection["end_line"],
        cell_language=cell_language,
    )
    if others:
        checks["outside_selection"] = True
    return checks


def checks_for_file(files: Any, diff: Any, raw_selection: Any) -> ProposalChecks | None:
    """`patch/validate`'s `checks`: the selection's file read through `files` (a
    `FileReader`), the diff applied to it in memory. None for a file that is not text."""
    selection = parse_selection(raw_selection)
    if not isinstance(diff, str):
        return None
    current = files.read(selection["path"])
    if current.get("encoding") not in (None, "utf-8"):
        return None
    selection["path"] = current["path"]  # normalised the way the diff names it
    return check_diff(diff, selection, current["content"])


def checks_for_cell(cells: Any, request: Any, raw_selection: Any) -> ProposalChecks | None:
    """`patch/cell/validate`'s `checks`: the cell's source read through `cells` (a
    `CellPatcher`), the cell diff applied to it in memory."""
    selection = parse_selection(raw_selection, request["path"])
    cell = cells.read_cell(request["path"], request["cell_id"])
    selection["path"] = cell["path"]
    return check_diff(request["diff"], selection, cell["content"], cell_language=cell["language"])
