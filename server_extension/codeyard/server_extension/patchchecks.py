"""Checks a patch must pass before git sees it: its text, its paths, `base`, and file state.

Kept apart from `patching` so each rule can be read (and tested) on its own; every one of
them raises `CodeyardError` or returns per-file error codes, never file content.
"""

from __future__ import annotations

import os
import re
import stat
from typing import Any

from .diffparse import FilePatch, parse_diff
from .errors import bad_request, forbidden_path
from .paths import WorkspacePaths
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

    def check_path(self, rel: str, linked: dict[str, bool] | None = None) -> str:
        """`WorkspacePaths.resolve` for writing, plus git's rule against symlinked folders.

        `linked` caches per-folder answers across the files of one patch.
        """
        resolved = self.paths.resolve(rel, for_write=True)
        cache = {} if linked is None else linked
        parts = resolved.rel.split("/")
        for depth in range(1, len(parts)):
            prefix = "/".join(parts[:depth])
            if prefix not in cache:
                cache[prefix] = os.path.islink(os.path.join(self.paths.root, prefix))
            if cache[prefix]:
                raise forbidden_path(f"path runs through a symlink: {resolved.rel}")
        return resolved.rel

    def check_files(self, files: list[FilePatch]) -> None:
        linked: dict[str, bool] = {}
        for fp in files:
            if fp.old_path is not None:
                fp.old_path = self.check_path(fp.old_path, linked)
            if fp.new_path is not None:
                same = fp.new_path == fp.old_path
                fp.new_path = fp.old_path if same else self.check_path(fp.new_path, linked)

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

    def state_errors(self, files: list[FilePatch]) -> dict[int, str]:
        """Files the patch expects to exist that don't, and ones it creates that do."""
        freed = {fp.old_path for fp in files if fp.op in ("delete", "rename")}
        errors: dict[int, str] = {}
        root = str(self.paths.root)
        for i, fp in enumerate(files):
            if fp.old_path is not None:
                try:
                    missing = stat.S_ISDIR(os.lstat(f"{root}/{fp.old_path}").st_mode)
                except OSError:  # as os.path.lexists: any failure means "not there"
                    missing = True
                if missing:
                    errors[i] = "file_missing"
                    continue
            if fp.op in ("create", "rename"):
                assert fp.new_path is not None
                parts = fp.new_path.split("/")
                for depth in range(1, len(parts) + 1):
                    prefix = "/".join(parts[:depth])
                    full = os.path.join(root, prefix)
                    last = depth == len(parts)
                    if prefix in freed or not os.path.lexists(full):
                        continue
                    if last or not os.path.isdir(full):
                        errors[i] = "file_exists"
                        break
        return errors
