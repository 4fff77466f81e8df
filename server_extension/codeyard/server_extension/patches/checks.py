"""Checks a patch must pass before git sees it: its text, its paths, `base`, and file state.

Kept apart from the manager so each rule can be read (and tested) on its own; every one of
them raises `CodeyardError` or returns per-file error codes, never file content.
"""

from __future__ import annotations

import os
import re
import stat
from typing import Any

from ..errors import bad_request, forbidden_path
from ..paths import Step, WorkspacePaths
from .diffparse import FilePatch, parse_diff
from .staging import digest as _digest


def sha256_of(path: str | os.PathLike[str]) -> str | None:
    """Hash of a file's bytes, or of a symlink's target text (as git hashes links)."""
    return _digest(os.fspath(path))[0]


class PatchChecks:
    """The pre-flight rules of one workspace."""

    def __init__(self, paths: WorkspacePaths) -> None:
        self.paths = paths

    def parse(self, diff: Any) -> tuple[bytes, list[FilePatch]]:
        if not isinstance(diff, str) or not diff:
            raise bad_request("diff must be a non-empty string")
        try:
            data = diff.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise bad_request("diff is not encodable text") from None
        return data, parse_diff(data)

    def check_path(self, rel: str, walked: dict[str, Step] | None = None) -> str:
        """`WorkspacePaths.resolve` for writing, plus git's rule against symlinked folders.

        `walked` carries what the walk learnt of each prefix across the files of one patch.
        """
        cache: dict[str, Step] = {} if walked is None else walked
        resolved = self.paths.resolve(rel, for_write=True, walked=cache)
        parts = resolved.rel.split("/")
        for depth in range(1, len(parts)):
            step = cache.get("/".join(parts[:depth]))
            if step is None or step[1] is None:
                break  # missing: nothing below it exists either
            if stat.S_ISLNK(step[1]):
                raise forbidden_path(f"path runs through a symlink: {resolved.rel}")
        return resolved.rel

    def check_files(self, files: list[FilePatch]) -> dict[str, Step]:
        """Check every path of `files`; returns the walk, for `state_errors`."""
        walked: dict[str, Step] = {}
        for fp in files:
            if fp.old_path is not None:
                fp.old_path = self.check_path(fp.old_path, walked)
            if fp.new_path is not None:
                same = fp.new_path == fp.old_path
                fp.new_path = fp.old_path if same else self.check_path(fp.new_path, walked)
        return walked

    def check_base(self, base: Any) -> dict[str, str | None]:
        if base is None:
            return {}
        if not isinstance(base, dict):
            raise bad_request("base must be an object of path: sha256")
        checked: dict[str, str | None] = {}
        for rel, digest in base.items():
            if digest is not None and not (
                isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)
            ):
                raise bad_request(f"base hash for {rel} must be a sha256 hex digest or null")
            checked[self.paths.resolve(rel).rel] = digest
        return checked

    def base_errors(
        self, base: dict[str, str | None], known: dict[str, str] | None = None
    ) -> dict[str, str | None]:
        """Paths whose current hash differs from `base`, mapped to the current hash.

        `known` holds hashes already taken of the staged files, so each is read once and
        `base` is compared with exactly the bytes the patch was applied to.
        """
        wrong: dict[str, str | None] = {}
        root = str(self.paths.root)
        for rel, expected in base.items():
            if known is not None and rel in known:
                current: str | None = known[rel]
            else:
                current = sha256_of(os.path.join(root, rel))
            if current != expected:
                wrong[rel] = current
        return wrong

    def state_errors(
        self, files: list[FilePatch], walked: dict[str, Step] | None = None
    ) -> dict[int, str]:
        """Files the patch expects to exist that don't, and ones it creates that do.

        `walked` (from `check_files`) holds the lstat mode of the paths already looked at.
        """
        freed = {fp.old_path for fp in files if fp.op in ("delete", "rename")}
        errors: dict[int, str] = {}
        root = str(self.paths.root)
        known = {} if walked is None else walked

        def mode_of(rel: str) -> int | None:
            step = known.get(rel)
            if step is not None:
                return step[1]
            try:
                return os.lstat(f"{root}/{rel}").st_mode
            except OSError:  # as os.path.lexists: any failure means "not there"
                return None

        for i, fp in enumerate(files):
            if fp.old_path is not None:
                mode = mode_of(fp.old_path)
                if mode is None or stat.S_ISDIR(mode):
                    errors[i] = "file_missing"
                    continue
            if fp.op in ("create", "rename"):
                assert fp.new_path is not None
                parts = fp.new_path.split("/")
                for depth in range(1, len(parts) + 1):
                    prefix = "/".join(parts[:depth])
                    if prefix in freed:
                        continue
                    mode = mode_of(prefix)
                    if mode is None:
                        continue
                    last = depth == len(parts)
                    is_dir = stat.S_ISDIR(mode) or (
                        stat.S_ISLNK(mode) and os.path.isdir(f"{root}/{prefix}")
                    )
                    if last or not is_dir:
                        errors[i] = "file_exists"
                        break
        return errors
