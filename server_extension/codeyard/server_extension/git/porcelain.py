"""Parsing `git status --porcelain=v2 -z --branch`: git's stable, machine-readable status.

v2 with `-z` is the only status format whose fields are documented as stable and whose
paths come unquoted (any byte but NUL, spaces and newlines included); the original path of
a rename is the next NUL-separated field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: What git's one-letter states mean, for the panel's labels.
STATES = {
    ".": "unmodified",
    "M": "modified",
    "T": "type_changed",
    "A": "added",
    "D": "deleted",
    "R": "renamed",
    "C": "copied",
    "U": "unmerged",
    "?": "untracked",
}


@dataclass
class Branch:
    head: str | None = None  # the commit, None on an unborn branch
    name: str | None = None  # None when detached
    upstream: str | None = None
    ahead: int | None = None
    behind: int | None = None


@dataclass
class Status:
    branch: Branch = field(default_factory=Branch)
    files: list[dict[str, Any]] = field(default_factory=list)


def _entry(path: str, index: str, worktree: str, kind: str) -> dict[str, Any]:
    return {
        "path": path,
        "index": STATES.get(index, index),
        "worktree": STATES.get(worktree, worktree),
        "kind": kind,
        "staged": index not in ".?",
        "unstaged": worktree != ".",
    }


def parse_status(raw: str) -> Status:
    """The branch headers and one entry per changed path (ignored files are not asked for)."""
    status = Status()
    fields = raw.split("\0")
    i = 0
    while i < len(fields):
        item = fields[i]
        i += 1
        if not item:
            continue
        tag = item[0]
        if tag == "#":
            _header(status.branch, item)
        elif tag == "1":
            parts = item.split(" ", 8)
            status.files.append(_entry(parts[8], parts[1][0], parts[1][1], "changed"))
        elif tag == "2":
            parts = item.split(" ", 9)
            entry = _entry(parts[9], parts[1][0], parts[1][1], "renamed")
            if parts[8].startswith("C"):
                entry["kind"] = "copied"
            entry["from"] = fields[i] if i < len(fields) else ""
            i += 1
            status.files.append(entry)
        elif tag == "u":
            parts = item.split(" ", 10)
            entry = _entry(parts[10], "U", "U", "unmerged")
            entry["conflict"] = parts[1]  # e.g. UU, AA, DU: who changed what
            status.files.append(entry)
        elif tag == "?":
            status.files.append(_entry(item[2:], "?", "?", "untracked"))
    return status


def _header(branch: Branch, line: str) -> None:
    parts = line.split(" ", 2)
    if len(parts) < 3:
        return
    key, value = parts[1], parts[2]
    if key == "branch.oid":
        branch.head = None if value == "(initial)" else value
    elif key == "branch.head":
        branch.name = None if value == "(detached)" else value
    elif key == "branch.upstream":
        branch.upstream = value
    elif key == "branch.ab":
        ahead, behind = value.split(" ")
        branch.ahead, branch.behind = int(ahead.lstrip("+")), int(behind.lstrip("-"))
