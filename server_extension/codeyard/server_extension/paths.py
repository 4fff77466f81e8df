"""Workspace path safety: every user-supplied path goes through `WorkspacePaths.resolve`.

A path is accepted only if it is relative, POSIX, free of NUL, `..` and percent-encoded
escapes, and if walking it component by component with realpath never leaves the root.
Writes are refused as well under `.git/` and under Codeyard's private state folder.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from .errors import bad_request, forbidden_path

# %2e, %2f, %5c, %00 (any case) and double-encoded %25xx: decoding them could smuggle an escape.
_ENCODED_ESCAPE = re.compile(r"%(?:2e|2f|5c|00|25[0-9a-f]{2})", re.IGNORECASE)
_DRIVE = re.compile(r"^[A-Za-z]:")

STATE_DIRNAME = ".codeyard"
#: The environment variable a spawner sets to the state folder's path when it keeps it
#: outside the working tree (the default `CodeyardApp.state_dir`).
STATE_DIR_ENV = "CODEYARD_STATE_DIR"


@dataclass(frozen=True)
class ResolvedPath:
    """A checked path: `rel` is normalised POSIX, `abs` is inside the root."""

    rel: str
    root: Path

    @property
    def abs(self) -> Path:
        # Built on demand: a patch resolves hundreds of paths and never needs a Path of them.
        return self.root / self.rel if self.rel else self.root


#: What `resolve` learnt of one path prefix: where it leads (real) and its lstat mode,
#: None if nothing is there.
Step = tuple[str, int | None]


class WorkspacePaths:
    """Resolves user paths against one workspace root, refusing anything that escapes."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(os.path.realpath(root))
        # String forms for `contains`: a 100-file patch resolves hundreds of paths, and
        # pathlib's `parents` walk was the largest part of the path checks.
        self._root_str = str(self.root)
        self._root_prefix = self._root_str.rstrip("/") + "/"

    def normalise(self, path: str, *, allow_root: bool = False) -> str:
        """Check the text of a path and return it normalised, without touching the disk."""
        if not isinstance(path, str):
            raise bad_request("path must be a string")
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            raise bad_request("path is not valid UTF-8") from None
        if "\x00" in path:
            raise forbidden_path("path contains a NUL byte")
        if _ENCODED_ESCAPE.search(path):
            raise forbidden_path("path contains a percent-encoded separator or dot")
        if "\\" in path:
            raise forbidden_path("path must use POSIX separators, not backslashes")
        if path.startswith("/") or _DRIVE.match(path):
            raise forbidden_path("path must be relative to the workspace root")
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if any(p == ".." for p in parts):
            raise forbidden_path("path must not contain '..'")
        rel = "/".join(parts)
        if not rel and not allow_root:
            raise bad_request("path must name a file inside the workspace")
        return rel

    def resolve(
        self,
        path: str,
        *,
        for_write: bool = False,
        allow_root: bool = False,
        walked: dict[str, Step] | None = None,
    ) -> ResolvedPath:
        """Normalise `path` and walk it with realpath, one component at a time.

        Every existing prefix is resolved through its symlinks and must stay under the root,
        so a symlink anywhere on the way that points outside is refused. The last component
        may not exist yet (a file being created). `walked`, shared by the paths of one
        request, remembers each prefix's step so a folder is looked at once, not once per
        file in it; it then also holds every prefix's lstat mode for the caller.
        """
        rel = self.normalise(path, allow_root=allow_root)
        parts = rel.split("/") if rel else []
        if for_write and parts:
            if parts[0] == ".git" or ".git" in parts[:-1] or parts[-1] == ".git":
                raise forbidden_path(f"writes under .git/ are refused: {rel}")
            if parts[0] == STATE_DIRNAME:
                raise forbidden_path(f"writes under {STATE_DIRNAME}/ are refused: {rel}")
        current = self._root_str
        prefix = ""
        for i, part in enumerate(parts):
            prefix = f"{prefix}/{part}" if prefix else part
            step = walked.get(prefix) if walked is not None else None
            if step is None:
                step = self._step(current, part, rel)
                if walked is not None:
                    walked[prefix] = step
            current, mode = step
            if mode is None:
                # Missing (or unreadable): nothing below it can be reached, so the rest is text.
                current = os.path.join(current, *parts[i + 1 :])
                break
        if not self.contains(current):
            raise forbidden_path(f"path leaves the workspace: {rel}")
        return ResolvedPath(rel=rel, root=self.root)

    def _step(self, current: str, part: str, rel: str) -> Step:
        """Go from the real folder `current` to its entry `part`, through a symlink if any."""
        candidate = f"{current}/{part}" if current != "/" else f"/{part}"
        try:
            mode = os.lstat(candidate).st_mode
        except OSError:
            return candidate, None
        if stat.S_ISLNK(mode):
            real = os.path.realpath(candidate)
            if not self.contains(real):
                raise forbidden_path(f"path leaves the workspace through a symlink: {rel}")
            return real, mode
        # `current` is already real, and a non-link name under it stays real.
        return candidate, mode

    def contains(self, real: str | os.PathLike[str]) -> bool:
        """True if the already-resolved, normalised `real` is the root or lies below it."""
        text = os.fspath(real)
        return text == self._root_str or text.startswith(self._root_prefix)

    def check_symlink_target(self, link_rel: str, target: str) -> None:
        """Refuse a symlink (e.g. one a patch creates) whose target would leave the root."""
        if "\x00" in target:
            raise forbidden_path("symlink target contains a NUL byte")
        if target.startswith("/"):
            raise forbidden_path(f"symlink {link_rel} points to an absolute path")
        joined = posixpath.normpath(posixpath.join(posixpath.dirname(link_rel), target))
        if joined == ".." or joined.startswith("../"):
            raise forbidden_path(f"symlink {link_rel} points outside the workspace")
        # The target may itself run through existing symlinks; resolve what exists.
        self.resolve(joined, allow_root=True)
