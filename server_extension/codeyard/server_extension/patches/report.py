"""The shapes of the patch API's answers, and how per-file results and errors are worded.

One source of truth for the contract: handlers return these, tests and clients can import
them. Messages carry paths, codes and numbers only, never diff text or file content.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NotRequired, TypedDict

from ..errors import conflict, forbidden_path
from .diffparse import FilePatch
from .gitapply import FileOutcome


class HunkOffset(TypedDict):
    """A hunk that applied `offset` lines away from where the diff said (`line` is 1-based)."""

    hunk: int
    line: int
    offset: int


# `from` is a Python keyword, hence the functional form for the two file entries.
FileReport = TypedDict(
    "FileReport",
    {
        "path": str,
        "op": str,  # modify | create | delete | rename
        "from": NotRequired[str],  # the source of a rename
        "hunks": int,
        "applies": bool,
        "offsets": NotRequired[list[HunkOffset]],  # only when a hunk moved
        "error": NotRequired[str],  # why the file does not apply, as a code ...
        "message": NotRequired[str],  # ... and in words (paths and numbers only)
        "hunk": NotRequired[int],  # the failing hunk, 1-based
    },
)
"""One file of `patch/validate`'s answer."""

AppliedFile = TypedDict(
    "AppliedFile",
    {
        "path": str,
        "op": str,
        "from": NotRequired[str],
        "sha256_before": str | None,
        "sha256_after": str | None,
        "offsets": NotRequired[list[HunkOffset]],
    },
)
"""One file of `patch/apply`'s and `patch/{id}/revert`'s answer."""


class PatchResult(TypedDict):
    """The answer of `patch/apply` and `patch/{id}/revert`."""

    patch_id: str
    files: list[AppliedFile]


class ValidateResult(TypedDict):
    """The answer of `patch/validate`."""

    ok: bool
    files: list[FileReport]


def describe(
    fp: FilePatch, outcome: FileOutcome, state_error: str | None, *, allow_offset: bool
) -> dict[str, Any]:
    """The `FileReport` of one file, from git's outcome and our own state checks."""
    entry: dict[str, Any] = {"path": fp.path, "op": fp.op, "hunks": len(fp.hunks)}
    if fp.op == "rename":
        entry["from"] = fp.old_path
    if outcome.offsets:
        entry["offsets"] = outcome.offsets
    code = state_error or outcome.code
    if code is None and outcome.offsets and not allow_offset:
        code = "hunk_offset"
        outcome.hunk = outcome.offsets[0]["hunk"]
    entry["applies"] = code is None
    if code is not None:
        entry["error"] = code
        entry["message"] = message(fp, code, outcome)
        if outcome.hunk is not None and code in ("hunk_failed", "hunk_offset"):
            entry["hunk"] = outcome.hunk
    return entry


def message(fp: FilePatch, code: str, outcome: FileOutcome) -> str:
    hunk = f"hunk #{outcome.hunk}" if outcome.hunk is not None else "a hunk"
    return {
        "hunk_failed": f"{hunk} of {fp.path} does not apply",
        "hunk_offset": f"{hunk} of {fp.path} applies only at another line "
        "(offsets are not allowed)",
        "file_missing": f"{fp.old_path} does not exist",
        "file_exists": f"{fp.new_path} already exists",
        "file_type": f"{fp.path} has a different file type than the diff expects",
        "path_forbidden": f"{fp.path} lies beyond a symlink",
    }.get(code, f"{fp.path} does not apply")


def raise_first_problem(report: Sequence[Mapping[str, Any]], problems: dict[str, Any]) -> None:
    """Raise the first problem of an apply: a stale base first, then the first bad file."""
    if problems.get("base"):
        rel, current = next(iter(problems["base"].items()))
        raise conflict(
            "base_mismatch",
            f"{rel} does not match the base hash",
            path=rel,
            current=current,
            mismatches=problems["base"],
        )
    for entry in report:
        if not entry["applies"]:
            extra = {k: entry[k] for k in ("hunk", "offsets") if k in entry}
            if entry["error"] == "path_forbidden":
                raise forbidden_path(entry["message"], path=entry["path"])
            raise conflict(entry["error"], entry["message"], path=entry["path"], **extra)
