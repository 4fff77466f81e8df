"""The patch engine behind `patch/validate`, `patch/apply` and `patch/{id}/revert`.

Flow of an apply, all under one lock so two patches never interleave:
  1. parse the diff headers (`diffparse`) and check every path (`WorkspacePaths`);
  2. check that the files exist (or not) as the patch expects;
  3. hard-link the old files into the revert store and from there into a staging folder
     under the state dir, hashing each once (`staging`), re-check `base` against those
     hashes, run `git apply` in the staging folder (`gitapply`), then check the names and
     symlinks the result holds;
  4. commit the journal and swap the new files in with renames (`transactions`);
  5. append an audit record (hashes only), then prune old revert data (`revertstore`).

Revert data (the old files) lives in `state/patches/<id>/`, never in the audit log.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from . import staging
from . import transactions as tx
from .audit import AuditLog
from .diffparse import FilePatch
from .errors import bad_request, forbidden_path
from .gitapply import EngineRun, FileOutcome, GitApplyRun, GitVerdict
from .patchchecks import PatchChecks
from .patchreport import PatchResult, ValidateResult, describe, raise_first_problem
from .paths import WorkspacePaths
from .revert import Reverting
from .revertstore import PATCH_ID, RevertStore
from .staging import Staged


def _dumps(value: Any) -> bytes:
    """JSON with sorted keys; orjson is ~10x faster than json for a 100-file meta."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _remove_trash(trash: str, folders: staging.Folders | None) -> None:
    """Remove a finished transaction folder renamed into scratch: empty folders, journal."""
    work = os.path.join(trash, "work")
    if folders is not None and folders.remove_all(work):
        with contextlib.suppress(OSError):
            os.rmdir(work)
            os.unlink(os.path.join(trash, tx.JOURNAL))
            os.rmdir(trash)
            return
    shutil.rmtree(trash, ignore_errors=True)


class PatchManager(Reverting):
    """Validates, applies and reverts unified diffs in one workspace.

    Extension points, in the spirit of Spawner's: `start_engine` (swap `git apply` for
    another engine; set `stage_links = False` if it edits files in place), and
    `fault(point)`, a no-op called at the crash-relevant moments (`staged`, `committed`,
    `swapped:<n>`) so tests can inject failures there.
    """

    #: Stage by hard link instead of copy. Safe because `git apply` replaces every file it
    #: changes with a new inode (see `staging`); an apply whose engine wrote through a link
    #: is refused before commit.
    stage_links: bool = True

    def __init__(
        self,
        paths: WorkspacePaths,
        state_dir: str | os.PathLike[str],
        audit: AuditLog,
        *,
        allow_offset: bool = False,
        revert_keep: int = 0,
        revert_max_age: float = 0.0,
        flush_mode: str = "syncfs",
        log: logging.Logger | Any | None = None,
    ) -> None:
        if flush_mode not in tx.FLUSH_MODES:
            raise ValueError(f"flush_mode must be one of {tx.FLUSH_MODES}, not {flush_mode!r}")
        self.flush_mode = flush_mode
        self.paths = paths
        self.checks = PatchChecks(paths)
        self.state = Path(state_dir)
        self.audit = audit
        self.allow_offset = allow_offset
        self.log = log or logging.getLogger(__name__)
        self.root = str(paths.root)
        self.tx_root = self.state / "tx"
        self.scratch_root = self.state / "scratch"
        self.store_root = self.state / "patches"
        for folder in (self.tx_root, self.scratch_root, self.store_root):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.revert_store = RevertStore(
            self.store_root, self.scratch_root, keep=revert_keep, max_age=revert_max_age
        )
        self._lock = threading.Lock()
        # One helper thread hashes the old files while git runs (2 cores: real overlap).
        self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="codeyard-hash")
        self._needs_recovery = False
        #: Milliseconds per phase of the last apply (also logged at debug level).
        self.timings: dict[str, float] = {}
        self._last_mark = 0.0
        self._timing_thread = 0

    # ---- hooks -------------------------------------------------------------------------

    def fault(self, point: str) -> None:
        """Called at crash-relevant points; tests override it to inject failures."""

    def start_engine(self, work: Path) -> EngineRun:
        """Start the engine in the still empty staging folder `work` (see `GitApplyRun`)."""
        return GitApplyRun(work)

    def _mark(self, phase: str) -> None:
        """Record how long `phase` took since the previous mark: a few calls per apply."""
        if threading.get_ident() != self._timing_thread:
            return  # a validate running beside an apply
        now = time.perf_counter()
        self.timings[phase] = round((now - self._last_mark) * 1000, 3)
        self._last_mark = now

    # ---- locking -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Thread lock plus a file lock, so a second server on the same state also waits."""
        with self._lock:
            fd = os.open(self.state / "lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if self._needs_recovery:
                    self._recover_locked()
                yield
            finally:
                os.close(fd)

    # ---- staging and checking -----------------------------------------------------------

    def _evaluate(
        self, diff: Any, base: Any, work: str, keep: str
    ) -> tuple[bytes, list[FilePatch], list[dict[str, Any]], Staged | None, dict[str, Any]]:
        """Everything validate and apply share. Returns the per-file report and problems."""
        data, files = self.checks.parse(diff)
        self.checks.check_files(files)
        checked_base = self.checks.check_base(base)
        problems: dict[str, Any] = {}
        state_errors = self.checks.state_errors(files)
        self._mark("check")
        staged: Staged | None = None
        if state_errors:
            outcomes = [FileOutcome() for _ in files]
        else:
            staged = Staged(work, keep)
            verdict = self._run(staged, files)
            if verdict.malformed:
                where = f" at line {verdict.malformed_line}" if verdict.malformed_line else ""
                raise bad_request(f"git apply could not read the diff{where}")
            outcomes = verdict.files
            if verdict.ok:
                expected = {fp.new_path for fp in files if fp.new_path is not None}
                staged.check_new(expected, self.paths.check_symlink_target)
                self._mark("verify")
        known = staged.before if staged is not None else None
        wrong_base = self.checks.base_errors(checked_base, known)
        if wrong_base:
            problems["base"] = wrong_base
        report = [
            describe(fp, outcome, state_errors.get(i), allow_offset=self.allow_offset)
            for i, (fp, outcome) in enumerate(zip(files, outcomes, strict=True))
        ]
        for fp, entry in zip(files, report, strict=True):
            if fp.new_path in wrong_base or fp.old_path in wrong_base:
                entry.update(applies=False, error="base_mismatch")
                entry["message"] = f"{fp.path} changed since the base hash"
        return data, files, report, staged, problems

    def _run(self, staged: Staged, files: list[FilePatch]) -> GitVerdict:
        """Start the engine, stage while it starts up, hash the old files while it works."""
        os.makedirs(staged.work, mode=0o700)
        engine = self.start_engine(Path(staged.work))
        try:
            staged.link_in(self.root, files, links=self.stage_links)
        except BaseException:
            engine.cancel()
            raise
        self._mark("stage")
        hashing = self._hasher.submit(staged.hash_old)
        try:
            return engine.result(files, b"".join(fp.text for fp in files))
        finally:
            hashing.result()
            self._mark("engine")

    # ---- public API --------------------------------------------------------------------

    def validate(self, diff: Any, base: Any = None) -> ValidateResult:
        """Report whether and how each file of `diff` applies. Writes nothing in the workspace."""
        scratch = os.path.join(self.scratch_root, uuid.uuid4().hex)
        work, keep = os.path.join(scratch, "work"), os.path.join(scratch, "old")
        try:
            _, _, report, _, problems = self._evaluate(diff, base, work, keep)
        finally:
            tx.discard(scratch)
        for entry in report:
            if entry.get("error") == "path_forbidden":
                raise forbidden_path(entry["message"], path=entry["path"])
        result: Any = {"ok": all(f["applies"] for f in report), "files": report}
        if problems.get("base"):
            result["ok"] = False
            result["base_mismatch"] = problems["base"]
        return result

    def apply(self, diff: Any, base: Any = None, *, user: str = "anonymous") -> PatchResult:
        """Apply all of `diff` or nothing; 409 on a stale base, a failing hunk or a clash."""
        patch_id = uuid.uuid4().hex
        tx_dir = self.tx_root / patch_id
        keep = os.path.join(self.store_root, patch_id, "old")
        with self._locked():
            self.timings, self._last_mark = {}, time.perf_counter()
            self._timing_thread = threading.get_ident()
            try:
                data, files, report, staged, problems = self._evaluate(
                    diff, base, os.path.join(tx_dir, "work"), keep
                )
                raise_first_problem(report, problems)
                assert staged is not None  # no problems: the patch was staged
                return self._commit_apply(patch_id, tx_dir, data, files, report, staged, user)
            except BaseException:
                if tx.read_journal(tx_dir) is None:
                    tx.discard(tx_dir)
                    tx.discard(self.store_root / patch_id)
                else:
                    self._needs_recovery = True
                raise

    def _commit_apply(
        self,
        patch_id: str,
        tx_dir: Path,
        data: bytes,
        files: list[FilePatch],
        report: list[dict[str, Any]],
        staged: Staged,
        user: str,
    ) -> PatchResult:
        store = self.store_root / patch_id
        os.makedirs(store, mode=0o700, exist_ok=True)
        before, after = staged.before, staged.after
        # A path may leave in one section and come back in another (git's type changes).
        olds = [fp.old_path for fp in files if fp.old_path is not None]
        news = [fp.new_path for fp in files if fp.new_path is not None]
        keep = {fp.old_path: f"old/{n}" for n, fp in enumerate(files) if fp.old_path is not None}
        entries: list[tx.Entry] = [{"path": p, "staged": None} for p in olds if p not in after]
        entries += [{"path": p, "staged": f"work/{p}"} for p in news]
        touched = [
            {"path": p, "before": before.get(p), "after": after.get(p), "keep": keep.get(p)}
            for p in dict.fromkeys(olds + news)
        ]
        results = []
        for fp, entry in zip(files, report, strict=True):
            item = {
                "path": fp.path,
                "op": fp.op,
                "sha256_before": before.get(fp.old_path) if fp.old_path else None,
                "sha256_after": after.get(fp.new_path) if fp.new_path else None,
            }
            if fp.op == "rename":
                item["from"] = fp.old_path
            if "offsets" in entry:
                item["offsets"] = entry["offsets"]
            results.append(item)
        meta = {
            "patch_id": patch_id,
            "user": user,
            "patch_sha256": hashlib.sha256(data).hexdigest(),
            "touched": touched,
            "files": results,
            "reverted": False,
            "created": time.time(),
        }
        tx.write_atomic(store / "meta.json", _dumps(meta), durable=False)
        # Staged files, revert links and meta must be on disk before the commit point.
        # A generator: only the fsync fallback walks it, syncfs never does.
        tx.flush(
            tx_dir,
            # (fsync mode) the store folder's parent too: the new patch folder is a name in it.
            (*(f"{tx_dir}/{e['staged']}" for e in entries if e["staged"]), self.store_root),
            trees=(tx_dir, store),
            mode=self.flush_mode,
        )
        self._mark("prepare")
        self.fault("staged")
        journal = {"kind": "apply", "patch_id": patch_id, "entries": entries}
        tx.commit(tx_dir, journal)
        self._mark("commit")
        self.fault("committed")
        self._finish(tx_dir, journal, meta, staged.folders)
        self._mark("swap")
        self.revert_store.added(patch_id, meta["created"])
        pruned = self.revert_store.prune()
        if pruned:
            self.log.info("codeyard pruned the revert data of %d patches", len(pruned))
        self.log.info("codeyard patch %s applied to %d files", patch_id, len(files))
        self.log.debug("codeyard patch %s phases (ms): %s", patch_id, self.timings)
        return {"patch_id": patch_id, "files": results}

    def _finish(
        self,
        tx_dir: Path,
        journal: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
        folders: staging.Folders | None = None,
    ) -> None:
        """Swap a committed transaction in, record it, and drop its folder.

        A fresh apply passes what it holds in memory; recovery reads it back from disk.
        """
        if journal is None:
            journal = tx.read_journal(tx_dir)
        assert journal is not None
        patch_id = journal["patch_id"]
        changed = tx.swap(
            self.root,
            tx_dir,
            journal["entries"],
            lambda n: self.fault(f"swapped:{n}"),
            durable=False,
        )
        store = self.store_root / patch_id
        if meta is None:
            meta = json.loads((store / "meta.json").read_bytes())
        action = "patch.apply" if journal["kind"] == "apply" else "patch.revert"
        if journal["kind"] == "revert":
            meta["reverted"] = True
            tx.write_atomic(store / "meta.json", _dumps(meta))
            tx.discard(store / "old")
        if not self._audited(patch_id, action, journal.get("recovered", False)):
            t = meta["touched"]
            forward = journal["kind"] == "apply"
            self.audit.append(
                user=journal.get("user", meta["user"]),
                action=action,
                paths=[e["path"] for e in t],
                sha256_before={e["path"]: e["before" if forward else "after"] for e in t},
                sha256_after={e["path"]: e["after" if forward else "before"] for e in t},
                patch_sha256=meta["patch_sha256"],
                patch_id=patch_id,
                durable=False,
            )
        # One flush makes the renames and the audit record durable before the answer.
        tx.flush(tx_dir, [*changed, str(self.audit.path)], mode=self.flush_mode)
        self._drop(tx_dir, folders)

    def _drop(self, tx_dir: Path, folders: staging.Folders | None) -> None:
        """Remove a finished transaction folder.

        It is first renamed into scratch (which `recover()` empties): a half-removed folder
        left in `tx/` without its journal would read as uncommitted, and recovery would
        then throw away the revert data of a patch that was applied.
        """
        trash = os.path.join(self.scratch_root, uuid.uuid4().hex)
        try:
            os.rename(tx_dir, trash)
        except OSError:
            tx.discard(tx_dir)
            return
        _remove_trash(trash, folders)

    def _audited(self, patch_id: str, action: str, recovering: bool) -> bool:
        if not recovering:
            return False
        return any(
            r.get("patch_id") == patch_id and r.get("action") == action
            for r in self.audit.tail(1000)
        )

    def recover(self) -> list[str]:
        """At start-up: finish committed transactions, throw away uncommitted ones."""
        with self._locked():
            return self._recover_locked()

    def _recover_locked(self) -> list[str]:
        finished: list[str] = []
        tx.discard(self.scratch_root)
        self.scratch_root.mkdir(mode=0o700, exist_ok=True)
        for tx_dir in sorted(p for p in self.tx_root.iterdir() if p.is_dir()):
            journal = tx.read_journal(tx_dir)
            if journal is None:
                tx.discard(tx_dir)
                if PATCH_ID.match(tx_dir.name):
                    tx.discard(self.store_root / tx_dir.name)
                self.log.warning("codeyard discarded uncommitted transaction %s", tx_dir.name)
                continue
            journal["recovered"] = True
            tx.commit(tx_dir, journal)
            self._finish(tx_dir)
            finished.append(str(journal["patch_id"]))
            self.log.warning("codeyard finished interrupted transaction %s", tx_dir.name)
        self._needs_recovery = False
        self.revert_store.forget()
        return finished
