"""Revert: put back exactly the files a patch replaced, from the patch's revert data.

A mixin of `PatchManager`: it runs under the manager's lock and through the same staged,
journaled swap as an apply (`transactions`), so a revert is all or nothing as well.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from . import staging
from . import transactions as tx
from .errors import CodeyardError, conflict, not_found
from .journaled import Journaled
from .patchchecks import PatchChecks, sha256_of
from .patchreport import AppliedFile, PatchResult
from .revertstore import PATCH_ID

_INVERSE = {"create": "delete", "delete": "create", "modify": "modify", "rename": "rename"}


class Reverting(Journaled):
    """`revert(patch_id)`; `checks` comes from `PatchManager`, the rest from `Journaled`."""

    checks: PatchChecks

    def revert(self, patch_id: str, *, user: str = "anonymous") -> PatchResult:
        """Put back exactly the files as they were before `patch_id`; 409 if they changed."""
        if not PATCH_ID.match(patch_id):
            raise not_found("no such patch")
        store = self.store_root / patch_id
        tx_dir = self.tx_root / f"{patch_id}-revert"
        with self._locked():
            try:
                meta = json.loads((store / "meta.json").read_bytes())
            except FileNotFoundError:
                raise self._missing(patch_id) from None
            if meta["reverted"]:
                raise conflict("already_reverted", f"patch {patch_id} was already reverted")
            try:
                result = self._revert_locked(patch_id, store, tx_dir, meta, user)
            except BaseException:
                if tx.read_journal(tx_dir) is None:
                    tx.discard(tx_dir)
                else:
                    self._needs_recovery = True
                raise
        self._retire_later()
        return result

    def _missing(self, patch_id: str) -> CodeyardError:
        """Why a patch has no revert data: never applied (404), reverted or pruned."""
        actions = {r.get("action") for r in self.audit.find(patch_id)}
        if "patch.revert" in actions:
            return conflict("already_reverted", f"patch {patch_id} was already reverted")
        if "patch.apply" in actions:
            return CodeyardError(
                410,
                "revert_data_pruned",
                f"the revert data of patch {patch_id} was pruned (CodeyardApp.revert_keep, "
                "CodeyardApp.revert_max_age); the audit log still records the patch",
                patch_id=patch_id,
            )
        return not_found(f"no such patch: {patch_id}")

    def _revert_locked(
        self, patch_id: str, store: Path, tx_dir: Path, meta: dict[str, Any], user: str
    ) -> PatchResult:
        entries: list[tx.Entry] = []
        work = os.path.join(tx_dir, "work")
        folders = staging.Folders(work, inherited=self._take_work_tree(work))
        for item in meta["touched"]:
            rel = self.checks.check_path(item["path"])
            current = sha256_of(os.path.join(self.root, rel))
            if current != item["after"]:
                raise conflict(
                    "changed_since_patch",
                    f"{rel} changed since patch {patch_id}",
                    path=rel,
                    current=current,
                    expected=item["after"],
                )
            if item["before"] is None:
                entries.append({"path": rel, "staged": None})
                continue
            keep = os.path.join(store, item["keep"])
            if sha256_of(keep) != item["before"]:
                raise CodeyardError(500, "revert_data_damaged", f"revert data of {rel} is damaged")
            folders.ensure_parent(rel)
            staging.link_or_copy(keep, os.path.join(work, rel))
            entries.append({"path": rel, "staged": f"work/{rel}", "sha256": item["before"]})
        staged = [os.path.join(tx_dir, e["staged"]) for e in entries if e["staged"]]
        self.fault("staged")
        journal = {"kind": "revert", "patch_id": patch_id, "entries": entries, "user": user}
        self._commit(tx_dir, journal, staged, (tx_dir,))
        self.fault("committed")
        self._finish(tx_dir, journal, meta, folders)
        files: list[AppliedFile] = []
        for item in meta["files"]:
            op = _INVERSE[item["op"]]
            out: AppliedFile = {
                "path": item.get("from", item["path"]),
                "op": op,
                "sha256_before": item["sha256_after"],
                "sha256_after": item["sha256_before"],
            }
            if op == "rename":
                out["from"] = item["path"]
            files.append(out)
        self.log.info("codeyard patch %s reverted", patch_id)
        return {"patch_id": patch_id, "files": files}
