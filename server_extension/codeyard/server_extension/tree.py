"""Listing a workspace as a tree that honours `.gitignore` files at every level.

The walk uses `os.scandir` (one `stat` per entry, reused from the directory read) and
`pathspec`'s GitIgnoreSpec for matching, so ignore semantics are git's, not hand-written.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

import pathspec

from .errors import bad_request, not_found
from .paths import STATE_DIRNAME, WorkspacePaths

ALWAYS_HIDDEN = frozenset({".git", STATE_DIRNAME})
_BY_NAME = attrgetter("name")


def _prefilter(spec: pathspec.GitIgnoreSpec) -> re.Pattern[str] | None:
    """One regex that matches a path if any of the spec's own patterns could.

    Built from pathspec's compiled patterns (named groups made anonymous so they can be
    joined). Most paths match no pattern at all; for those one C-level regex call replaces
    pathspec's per-pattern loop. A path that does match still goes through
    `check_file`, so last-match and negation semantics stay pathspec's.
    """
    parts = [
        _NAMED_GROUP.sub("(?:", p.regex.pattern)
        for p in spec.patterns
        if p.include is not None and p.regex is not None
    ]
    if not parts:
        return None
    try:
        return re.compile("|".join(f"(?:{part})" for part in parts))
    except re.error:  # pragma: no cover - pathspec's regexes always join; be safe anyway
        return re.compile("")


_NAMED_GROUP = re.compile(r"\(\?P<[A-Za-z_][A-Za-z0-9_]*>")


@dataclass
class _Ignore:
    """The .gitignore specs in force in one directory, innermost last."""

    specs: list[tuple[str, pathspec.GitIgnoreSpec, re.Pattern[str] | None]] = field(
        default_factory=list
    )

    def ignored(self, rel: str, is_dir: bool) -> bool:
        # The innermost .gitignore with a matching pattern decides, as in git.
        if not self.specs:
            return False
        for base, spec, quick in reversed(self.specs):
            if quick is None:
                continue
            sub = rel[len(base) + 1 :] if base else rel
            if is_dir:
                sub += "/"
            if quick.match(sub) is None:
                continue
            result = spec.check_file(sub)
            if result.include is not None:
                return bool(result.include)
        return False

    def entering(self, dir_abs: str, dir_rel: str) -> _Ignore:
        path = os.path.join(dir_abs, ".gitignore")
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                spec = pathspec.GitIgnoreSpec.from_lines(fh)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError):
            return self
        return _Ignore([*self.specs, (dir_rel, spec, _prefilter(spec))])


#: Entries still allowed, shared down the walk (a list so the recursion can spend it).
Budget = list[int]
#: A folder's listing, as the endpoint answers it.
Entries = list[dict[str, Any]]


class TreeLister:
    """Lists entries below a workspace path, depth-first, capped at `limit` entries."""

    def __init__(self, paths: WorkspacePaths, *, allow_hidden: bool = False) -> None:
        self.paths = paths
        self.allow_hidden = allow_hidden

    def _ignore_for(self, rel: str) -> _Ignore:
        """Collect the .gitignore files of every ancestor of `rel`, root first."""
        ignore = _Ignore().entering(str(self.paths.root), "")
        parts = rel.split("/") if rel else []
        for i in range(len(parts)):
            sub = "/".join(parts[: i + 1])
            ignore = ignore.entering(str(self.paths.root / sub), sub)
        return ignore

    def list(self, path: str, *, depth: int, limit: int) -> dict[str, Any]:
        target = self.paths.resolve(path, allow_root=True)
        if not os.path.lexists(target.abs):
            raise not_found(f"no such directory: {target.rel or '.'}")
        if not target.abs.is_dir():
            raise bad_request(f"not a directory: {target.rel}")
        budget = [limit]
        entries = self._walk(
            str(target.abs), target.rel, depth, self._ignore_for(target.rel), budget
        )
        return {"path": target.rel, "entries": entries, "truncated": budget[0] < 0}

    def _walk(
        self, dir_abs: str, dir_rel: str, depth: int, ignore: _Ignore, budget: Budget
    ) -> Entries:
        try:
            with os.scandir(dir_abs) as it:
                items = sorted(it, key=_BY_NAME)
        except (PermissionError, FileNotFoundError, NotADirectoryError):
            return []
        out: Entries = []
        append = out.append
        ignored = ignore.ignored
        hide_dotfiles = not self.allow_hidden
        prefix = f"{dir_rel}/" if dir_rel else ""
        for item in items:
            name = item.name
            if name in ALWAYS_HIDDEN or (hide_dotfiles and name[0] == "."):
                continue
            rel = prefix + name
            try:
                st = item.stat(follow_symlinks=False)
            except OSError:
                continue
            fmt = stat.S_IFMT(st.st_mode)
            is_dir = fmt == stat.S_IFDIR
            if ignored(rel, is_dir):
                continue
            if budget[0] <= 0:
                budget[0] = -1
                break
            budget[0] -= 1
            entry: dict[str, Any] = {
                "name": name,
                "path": rel,
                "type": "directory" if is_dir else "symlink" if fmt == stat.S_IFLNK else "file",
                "size": st.st_size,
                "mtime": st.st_mtime,
            }
            append(entry)
            if is_dir and depth > 1:
                sub_abs = os.path.join(dir_abs, name)
                entry["children"] = self._walk(
                    sub_abs, rel, depth - 1, ignore.entering(sub_abs, rel), budget
                )
            if budget[0] < 0:
                break
        return out
