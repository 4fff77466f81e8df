"""The revert store, `state/patches/<id>/`: old files of each applied patch, pruned.

Without pruning it grows forever: every patch keeps the files it replaced. After each
apply, revert data beyond the newest `keep` patches or older than `max_age` seconds is
removed. The audit log still records the patch, which is how a revert of a pruned patch
gets a precise 410 instead of a 404 (see `PatchManager.revert`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

PATCH_ID = re.compile(r"^[0-9a-f]{32}$")


class RevertStore:
    """Knows the stored patches oldest first; read from disk once, then kept in memory.

    `added` records a patch after its apply; `prune` removes what is beyond the limits.
    Both run under the patch manager's lock.
    """

    def __init__(self, root: Path, trash: Path, *, keep: int = 0, max_age: float = 0.0) -> None:
        if keep < 0 or max_age < 0:
            raise ValueError("keep and max_age must be >= 0 (0: no limit)")
        self.root = root
        self.trash = trash  # emptied by recover(): a pruning cut short leaves nothing half-kept
        self.keep = keep
        self.max_age = max_age
        self._created: dict[str, float] | None = None  # patch id -> apply time, oldest first

    def _load(self) -> dict[str, float]:
        found: list[tuple[float, str]] = []
        with os.scandir(self.root) as entries:
            for entry in entries:
                if not (PATCH_ID.match(entry.name) and entry.is_dir(follow_symlinks=False)):
                    continue
                meta_path = os.path.join(entry.path, "meta.json")
                try:
                    with open(meta_path, "rb") as fh:
                        created = json.load(fh).get("created")
                    if not isinstance(created, int | float):
                        created = os.stat(meta_path).st_mtime  # written before `created` existed
                except (OSError, ValueError):
                    continue  # no meta: an apply that never committed; recover() removes it
                found.append((float(created), entry.name))
        return {patch_id: created for created, patch_id in sorted(found)}

    def added(self, patch_id: str, created: float) -> None:
        if self._created is None:
            self._created = self._load()
        self._created.pop(patch_id, None)
        self._created[patch_id] = created

    def forget(self) -> None:
        """Re-read the folder at the next prune (after recovery finished patches there)."""
        self._created = None

    def reload(self) -> None:
        """Read the folder now, so `known()` can name what a deletion of it loses."""
        try:
            self._created = self._load()
        except OSError:
            self._created = None

    def known(self) -> list[str]:
        """The patches this store believes it holds (as last read or added), oldest first."""
        return list(self._created or ())

    def holds(self, patch_id: str) -> bool:
        """Whether the store believes it holds `patch_id` (it did not prune it)."""
        return self._created is not None and patch_id in self._created

    def prune(self, now: float | None = None) -> list[str]:
        """Remove revert data beyond `keep` patches or older than `max_age`; return the ids."""
        if not self.keep and not self.max_age:
            return []
        if self._created is None:
            self._created = self._load()
        limit = (time.time() if now is None else now) - self.max_age
        pruned: list[str] = []
        while self._created:
            oldest, created = next(iter(self._created.items()))
            too_many = bool(self.keep) and len(self._created) > self.keep
            too_old = bool(self.max_age) and created < limit
            if not (too_many or too_old):
                break
            del self._created[oldest]
            gone = self.trash / f"pruned-{oldest}"
            try:
                os.rename(self.root / oldest, gone)  # atomic: whole revert data or none
            except FileNotFoundError:
                continue
            shutil.rmtree(gone, ignore_errors=True)
            pruned.append(oldest)
        return pruned
