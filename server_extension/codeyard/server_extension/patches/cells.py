"""Patches addressed to one notebook cell: `patch/cell/validate` and `patch/cell/apply`.

The browser never writes the notebook. It sends a unified diff of one cell's source; the
server applies that diff to the cell with `git apply` (the patch engine's own runner, in a
scratch folder), serialises the notebook the way Jupyter saves it, and turns the change
into an ordinary whole-file diff of the `.ipynb`. That diff goes through
`PatchManager.apply` with the notebook's hash as `base`, so locking, all-or-nothing
staging, crash recovery, revert (`patch/{id}/revert`) and the audit record are exactly
those of any other patch. A notebook that changes between reading it and applying gives
409, as a stale base does.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict

import nbformat

from ..errors import CodeyardError, bad_request, not_found
from ..files import FileReader, sha256_bytes
from . import transactions as tx
from .diffparse import FilePatch, parse_diff
from .difftext import unified_diff
from .gitapply import run_git_apply
from .manager import PatchManager
from .report import AppliedFile, FileReport, describe, raise_first_problem

# nbformat 4.5's rule for cell ids; checking it first keeps odd text out of messages.
CELL_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CELL_NAME = "cell"


class CellPatchRequest(TypedDict):
    """The body of `patch/cell/validate` and `patch/cell/apply`."""

    path: str  # the notebook, relative to the workspace root
    cell_id: str
    diff: str  # unified diff of the cell's source; its header names are ignored
    base: NotRequired[dict[str, str | None]]  # {path: sha256 of the notebook file}


class CellValidateResult(TypedDict):
    """`patch/validate`'s answer plus the cell: `files` has the notebook's one entry."""

    ok: bool
    cell_id: str
    files: list[FileReport]
    base_mismatch: NotRequired[dict[str, str | None]]


class CellPatchResult(TypedDict):
    """`patch/apply`'s answer plus the cell; revert it with `patch/{patch_id}/revert`."""

    patch_id: str
    cell_id: str
    files: list[AppliedFile]


class CellText(TypedDict):
    """One cell's source, for features that work on a cell (rewrite, explain, completion)."""

    path: str
    cell_id: str
    cell_type: str  # code | markdown | raw
    content: str
    language: str  # the kernel's language for code cells, "markdown" or "" otherwise
    sha256: str  # of the whole notebook file: the `base` of a later cell patch


@dataclass
class PreparedCell:
    """A cell diff applied in scratch space, as a whole-notebook change."""

    path: str  # the notebook, checked and normalised
    sha256: str  # of the notebook as read: the `base` of the notebook patch
    diff: str  # the notebook's diff; "" when the cell diff does not apply or changes nothing
    problems: dict[str, Any] | None  # `base`: the user's base hashes that do not match
    entry: FileReport  # the cell's file report


def parse_request(body: dict[str, Any]) -> CellPatchRequest:
    path, cell_id, diff = body.get("path"), body.get("cell_id"), body.get("diff")
    if not isinstance(path, str) or not path:
        raise bad_request("path is required")
    if not isinstance(cell_id, str) or not CELL_ID.match(cell_id):
        raise bad_request("cell_id is required: 1-64 letters, digits, '-' or '_'")
    if not isinstance(diff, str) or not diff:
        raise bad_request("diff must be a non-empty string")
    request: CellPatchRequest = {"path": path, "cell_id": cell_id, "diff": diff}
    if body.get("base") is not None:
        request["base"] = body["base"]
    return request


def notebook_text(nb: nbformat.NotebookNode) -> str:
    """The notebook as Jupyter's contents manager saves it, so untouched cells don't move."""
    text: str = nbformat.writes(nb, version=nbformat.NO_CONVERT)
    return text if text.endswith("\n") else text + "\n"


def _cell_patch(diff: str) -> FilePatch:
    """The one file section of a cell diff, re-addressed to a file named `cell`."""
    try:
        data = diff.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise bad_request("diff is not encodable text") from None
    files = parse_diff(data)
    if len(files) != 1:
        raise bad_request("a cell diff must contain exactly one file section")
    fp = files[0]
    if fp.op != "modify" or fp.binary or fp.new_mode is not None:
        raise bad_request("a cell diff may only modify the cell's text")
    body = fp.text[fp.text.index(b"\n@@") + 1 :] if not fp.text.startswith(b"@@") else fp.text
    head = f"diff --git a/{_CELL_NAME} b/{_CELL_NAME}\n--- a/{_CELL_NAME}\n+++ b/{_CELL_NAME}\n"
    return FilePatch(_CELL_NAME, _CELL_NAME, "modify", fp.hunks, text=head.encode() + body)


class CellPatcher:
    """Applies cell diffs to notebooks through one `PatchManager`.

    `prepare` is the part a subclass could change (e.g. to keep a notebook's own JSON
    layout); validate and apply only hand its whole-file diff to the patch engine.
    """

    def __init__(self, files: FileReader, patches: PatchManager) -> None:
        self.files = files
        self.patches = patches

    def _load(self, path: str, cell_id: str) -> tuple[dict[str, Any], nbformat.NotebookNode, int]:
        current = self.files.read(path)
        rel = current["path"]
        try:
            nb = nbformat.reads(current["content"], as_version=nbformat.NO_CONVERT)
        except Exception:  # nbformat raises several unrelated types for non-notebooks
            raise CodeyardError(400, "not_a_notebook", f"{rel} is not a Jupyter notebook") from None
        if nb.get("nbformat") != 4 or not isinstance(nb.get("cells"), list):
            raise CodeyardError(400, "not_a_notebook", f"{rel} is not an nbformat 4 notebook")
        for index, cell in enumerate(nb.cells):
            if cell.get("id") == cell_id:
                return current, nb, index
        raise not_found(f"no cell {cell_id} in {rel}", path=rel, cell_id=cell_id)

    def read_cell(self, path: str, cell_id: str) -> CellText:
        """The source of one cell and the notebook's hash; 404/400 as for a cell patch."""
        if not CELL_ID.match(cell_id):
            raise bad_request("cell_id must be 1-64 letters, digits, '-' or '_'")
        current, nb, index = self._load(path, cell_id)
        cell = nb.cells[index]
        kernel_language = (nb.metadata.get("language_info") or {}).get("name") or (
            nb.metadata.get("kernelspec") or {}
        ).get("language")
        language = {"code": str(kernel_language or "python"), "markdown": "markdown"}.get(
            cell.cell_type, ""
        )
        return {
            "path": current["path"],
            "cell_id": cell_id,
            "cell_type": cell.cell_type,
            "content": cell.source,
            "language": language,
            "sha256": current["sha256"],
        }

    def prepare(self, request: CellPatchRequest) -> PreparedCell:
        """Apply the cell diff in scratch space and turn it into a notebook diff."""
        checked = self.patches.checks.check_base(request.get("base"))
        wrong = self.patches.checks.base_errors(checked)
        cell_fp = _cell_patch(request["diff"])
        current, nb, index = self._load(request["path"], request["cell_id"])
        rel, cell_id = current["path"], request["cell_id"]
        source = nb.cells[index].source
        self.patches.state_folder.ensure()  # scratch lives there; it may have been deleted
        work = self.patches.scratch_root / uuid.uuid4().hex / "work"
        try:
            work.mkdir(parents=True)
            (work / _CELL_NAME).write_bytes(source.encode("utf-8"))
            verdict = run_git_apply(work, [cell_fp], cell_fp.text)
            new_source = (work / _CELL_NAME).read_bytes() if verdict.ok else None
        finally:
            tx.discard(work.parent)
        if verdict.malformed:
            where = f" at line {verdict.malformed_line}" if verdict.malformed_line else ""
            raise bad_request(f"git apply could not read the cell diff{where}")
        label = FilePatch(rel, rel, "modify", cell_fp.hunks)
        entry: Any = describe(label, verdict.files[0], None, allow_offset=self.patches.allow_offset)
        if "message" in entry:
            entry["message"] = entry["message"].replace(
                f" of {rel}", f" of cell {cell_id} in {rel}"
            )
        problems = {"base": wrong} if wrong else None
        if new_source is None or not entry["applies"]:
            return PreparedCell(rel, current["sha256"], "", problems, entry)
        try:
            patched = new_source.decode("utf-8")
        except UnicodeDecodeError:
            raise bad_request("the patched cell is not valid UTF-8") from None
        if patched == source:
            return PreparedCell(rel, current["sha256"], "", problems, entry)
        nb.cells[index].source = patched
        diff = unified_diff(rel, current["content"], notebook_text(nb))
        return PreparedCell(rel, current["sha256"], diff, problems, entry)

    def validate(self, request: CellPatchRequest) -> CellValidateResult:
        """Whether the cell diff applies to the cell now. Writes nothing."""
        prepared = self.prepare(request)
        cell_id, problems, entry = request["cell_id"], prepared.problems, prepared.entry
        if prepared.diff:
            verdict: Any = self.patches.validate(prepared.diff, {prepared.path: prepared.sha256})
            result: CellValidateResult = {
                "ok": verdict["ok"],
                "cell_id": cell_id,
                "files": verdict["files"],
            }
            if "base_mismatch" in verdict:
                result["base_mismatch"] = verdict["base_mismatch"]
        else:
            result = {"ok": entry["applies"], "cell_id": cell_id, "files": [entry]}
        if problems:
            result["ok"] = False
            result["base_mismatch"] = problems["base"]
        return result

    def apply(self, request: CellPatchRequest, *, user: str = "anonymous") -> CellPatchResult:
        """Apply the cell diff as one notebook patch; 409 on a stale base or failing hunk."""
        prepared = self.prepare(request)
        rel, diff = prepared.path, prepared.diff
        raise_first_problem([prepared.entry], prepared.problems or {})
        if not diff:
            raise CodeyardError(
                400, "cell_unchanged", f"the diff leaves cell {request['cell_id']} as it is"
            )
        applied = self.patches.apply(diff, {rel: prepared.sha256}, user=user)
        notebook = applied["files"][0]
        # The engine's own record has the hashes; this one ties its patch to the cell.
        self.patches.audit.append(
            user=user,
            action="patch.cell",
            paths=[rel],
            sha256_before={rel: notebook["sha256_before"]},
            sha256_after={rel: notebook["sha256_after"]},
            patch_sha256=sha256_bytes(diff.encode("utf-8")),
            patch_id=applied["patch_id"],
            cell_id=request["cell_id"],
        )
        return {"patch_id": applied["patch_id"], "cell_id": request["cell_id"], **applied}
