"""The patch engine behind `patch/validate`, `patch/apply` and `patch/{id}/revert`.

Flow of an apply, all under the journal's lock so two patches never interleave:
  1. parse the diff headers (`diffparse`) and check every path (`checks`);
  2. check that the files exist (or not) as the patch expects;
  3. hard-link the old files into the revert store and from there into a staging folder
     under the state dir, hashing each once (`staging`), re-check `base` against those
     hashes, run `git apply` in the staging folder (`gitapply`), then check the names and
     symlinks the result holds;
  4. write the journal and flush once: the commit point (`Journal.commit`);
  5. swap the new files in with renames, append an audit record (hashes only), answer;
  6. later, in the background: flush again so the swap and the record are durable, drop
     the transaction folder and prune old revert data (`revertstore`). Until then the
     journal stays, and a crash is finished from it at start-up.

A revert runs through the same journaled swap, so it is all or nothing as well. Revert data
(the old files) lives in `state/patches/<id>/`, never in the audit log.

The state folder may be deleted or made unwritable under a running server; `StateFolder`
(`state.py`) rebuilds it before each request or refuses with 507, and file-system errors
inside it become those clear answers too, never a bare 500.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..audit import AuditLog
from ..errors import CodeyardError, bad_request, conflict, forbidden_path, not_found
from ..paths import WorkspacePaths
from ..state import StateFolder
from . import staging
from . import transactions as tx
from .checks import PatchChecks, sha256_of
from .diffparse import FilePatch
from .gitapply import (
    MIN_FILES_PER_ENGINE,
    EngineRun,
    FileOutcome,
    GitApplyRun,
    GitVerdict,
    engine_shares,
    merge_verdicts,
)
from .journal import Journal, dumps
from .report import (
    AppliedFile,
    PatchResult,
    ValidateResult,
    describe,
    raise_first_problem,
)
from .revertstore import PATCH_ID, RevertStore
from .staging import Staged

_INVERSE = {"create": "delete", "delete": "create", "modify": "modify", "rename": "rename"}


@dataclass
class Timings:
    """Milliseconds per phase of one apply, in the order the phases ended.

    One per call, so a validate running beside an apply never writes into the apply's
    numbers. The handler adds its own phases and sends them as `Server-Timing`.
    """

    phases: dict[str, float] = field(default_factory=dict)
    _last: float = field(default_factory=time.perf_counter, repr=False)

    def start(self) -> None:
        """Count the first phase from now (an apply: once it holds the lock)."""
        self._last = time.perf_counter()

    def mark(self, phase: str) -> None:
        """Record how long `phase` took since the previous mark: a few calls per apply."""
        now = time.perf_counter()
        self.phases[phase] = round((now - self._last) * 1000, 3)
        self._last = now


@dataclass
class PreparedPatch:
    """What validate and apply share: a diff parsed, checked and (if it can be) staged."""

    data: bytes  # the diff's bytes, hashed for the audit record
    files: list[FilePatch]
    report: list[dict[str, Any]]  # one `FileReport` per file, in the diff's order
    staged: Staged | None  # None when a file's state already rules the patch out
    problems: dict[str, Any]  # `base`: paths whose current hash differs from the base


class PatchManager:
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
        engine_processes: int = 2,
        log: logging.Logger | Any | None = None,
    ) -> None:
        if flush_mode not in tx.FLUSH_MODES:
            raise ValueError(f"flush_mode must be one of {tx.FLUSH_MODES}, not {flush_mode!r}")
        if engine_processes < 1:
            raise ValueError("engine_processes must be >= 1")
        self.engine_processes = engine_processes
        self.paths = paths
        self.checks = PatchChecks(paths)
        self.state = Path(state_dir)
        self.audit = audit
        self.allow_offset = allow_offset
        self.log = log or logging.getLogger(__name__)
        self.root = str(paths.root)
        # Pruned revert data goes through scratch, which recovery empties: a pruning cut
        # short never leaves a patch's revert data half there.
        self.revert_store = RevertStore(
            self.state / "patches",
            self.state / "scratch",
            keep=revert_keep,
            max_age=revert_max_age,
        )
        self.journal = Journal(
            self.root,
            self.state,
            audit,
            self.revert_store,
            flush_mode=flush_mode,
            # Looked up at each call, so a test may replace `fault` on the instance.
            fault=lambda point: self.fault(point),
            ensure_state=lambda: self.state_folder.ensure(),
            log=self.log,
        )
        self.state_folder = StateFolder(
            self.root,
            self.state,
            audit,
            known_patches=self.revert_store.known,
            forget=self._forget_state,
            log=self.log,
        )
        # Made now if it can be (if not, each request answers why: 507), hidden from git.
        self.state_folder.start()
        # One helper thread hashes the old files while git runs (2 cores: real overlap).
        self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="codeyard-hash")

    def _forget_state(self) -> None:
        """The state folder was deleted: what was remembered about its contents is void."""
        self.revert_store.forget()
        self.journal.forget_spares()

    @contextlib.contextmanager
    def _state_errors(self) -> Iterator[None]:
        """Answer a file-system failure inside the state folder as 507 or 503, not 500."""
        try:
            yield
        except OSError as exc:
            clear = self.state_folder.translate(exc)
            if clear is None:
                raise
            raise clear from exc

    @property
    def scratch_root(self) -> Path:
        """Where throw-away work goes (a cell patch's scratch copy); emptied by recovery."""
        return self.journal.scratch_root

    # ---- hooks -------------------------------------------------------------------------

    def start_engine(self, work: Path) -> EngineRun:
        """Start the engine in the still empty staging folder `work` (see `GitApplyRun`)."""
        return GitApplyRun(work)

    def fault(self, point: str) -> None:
        """Called at crash-relevant points; tests override it to inject failures."""

    # ---- the transaction life cycle (see `Journal`) --------------------------------------

    def settle(self) -> None:
        """Retire every answered transaction now (shutdown and tests call this)."""
        self.journal.settle()

    def recover(self) -> list[str]:
        """At start-up: finish committed transactions, throw away uncommitted ones."""
        return self.journal.recover()

    def _retire_later(self) -> None:
        """Retire in the background, right after the answer: nobody waits for it."""
        self.journal.retire_later()

    # ---- staging and checking -----------------------------------------------------------

    def _evaluate(
        self, diff: Any, base: Any, work: str, keep: str, timings: Timings, inherited: int = 0
    ) -> PreparedPatch:
        """Everything validate and apply share: the per-file report and problems.

        The engines start in the helper thread while the diff is parsed and checked, so
        their start-up (fork, exec, git's own set-up) costs the answer nothing; those not
        needed in the end are stopped.
        """
        os.makedirs(work, mode=0o700, exist_ok=True)  # an apply's may be a reused tree
        spawning = self._hasher.submit(self._start_engines, work, self._guess_engines(diff))
        try:
            data, files = self.checks.parse(diff)
            walked = self.checks.check_files(files)
            checked_base = self.checks.check_base(base)
            problems: dict[str, Any] = {}
            state_errors = self.checks.state_errors(files, walked)
            timings.mark("check")
            staged: Staged | None = None
            if state_errors:
                outcomes = [FileOutcome() for _ in files]
            else:
                staged = Staged(work, keep, inherited=inherited)
                verdict = self._run(staged, files, spawning.result(), timings)
        finally:
            with contextlib.suppress(Exception):  # a failed start raised above already
                for engine in spawning.result():
                    engine.cancel()  # a no-op for each engine that reported
        if staged is not None:
            if verdict.malformed:
                where = f" at line {verdict.malformed_line}" if verdict.malformed_line else ""
                raise bad_request(f"git apply could not read the diff{where}")
            outcomes = verdict.files
            if verdict.ok:
                expected = {fp.new_path for fp in files if fp.new_path is not None}
                staged.check_new(expected, self.paths.check_symlink_target)
                timings.mark("verify")
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
        return PreparedPatch(data, files, report, staged, problems)

    def _guess_engines(self, diff: Any) -> int:
        """How many engines the diff will want, from a cheap count of its file sections."""
        if not isinstance(diff, str):
            return 1
        sections = max(diff.count("diff --git "), diff.count("\n+++ "))
        return max(1, min(self.engine_processes, sections // MIN_FILES_PER_ENGINE))

    def _start_engines(self, work: str, count: int) -> list[EngineRun]:
        engines: list[EngineRun] = []
        try:
            for _ in range(count):
                engines.append(self.start_engine(Path(work)))
        except BaseException:
            for engine in engines:
                engine.cancel()
            raise
        return engines

    def _run(
        self, staged: Staged, files: list[FilePatch], engines: list[EngineRun], timings: Timings
    ) -> GitVerdict:
        """Feed the started engines, staging share by share; hash the old files meanwhile.

        A large patch is shared out between `engine_processes` engines working in the same
        staging folder on disjoint files (see `engine_shares`); all or nothing still holds,
        because nothing is committed unless every one of them succeeded. Each engine is fed
        as soon as its own share is staged, so the next share is staged while it works.
        `engines` may hold more or fewer than the shares need: extra ones are stopped,
        missing ones started here (the caller stops every engine in the list at the end).
        """
        shares = engine_shares(files, self.engine_processes)
        while len(engines) < len(shares):
            engines.append(self.start_engine(Path(staged.work)))
        for extra in engines[len(shares) :]:
            extra.cancel()
        parts = [[files[i] for i in share] for share in shares]
        for engine, share, part in zip(engines, shares, parts, strict=False):
            staged.link_in(self.root, files, links=self.stage_links, only=share)
            engine.feed(b"".join(fp.text for fp in part))
        timings.mark("stage")
        hashing = self._hasher.submit(staged.hash_old)
        try:
            verdicts = [engine.result(part) for engine, part in zip(engines, parts, strict=False)]
            return verdicts[0] if len(verdicts) == 1 else merge_verdicts(files, shares, verdicts)
        finally:
            hashing.result()
            timings.mark("engine")

    # ---- public API --------------------------------------------------------------------

    def validate(self, diff: Any, base: Any = None) -> ValidateResult:
        """Report whether and how each file of `diff` applies. Writes nothing in the workspace."""
        with self._state_errors():
            self.state_folder.ensure()
            return self._validate(diff, base)

    def _validate(self, diff: Any, base: Any) -> ValidateResult:
        scratch = os.path.join(self.journal.scratch_root, uuid.uuid4().hex)
        work, keep = os.path.join(scratch, "work"), os.path.join(scratch, "old")
        try:
            prepared = self._evaluate(diff, base, work, keep, Timings())
        finally:
            tx.discard(scratch)
        report, problems = prepared.report, prepared.problems
        for entry in report:
            if entry.get("error") == "path_forbidden":
                raise forbidden_path(entry["message"], path=entry["path"])
        result: Any = {"ok": all(f["applies"] for f in report), "files": report}
        if problems.get("base"):
            result["ok"] = False
            result["base_mismatch"] = problems["base"]
        return result

    def apply(
        self,
        diff: Any,
        base: Any = None,
        *,
        user: str = "anonymous",
        timings: Timings | None = None,
    ) -> PatchResult:
        """Apply all of `diff` or nothing; 409 on a stale base, a failing hunk or a clash.

        `timings`, if given, is filled with milliseconds per phase (for `Server-Timing`).
        """
        with self._state_errors():
            return self._apply(diff, base, user, timings)

    def _apply(self, diff: Any, base: Any, user: str, timings: Timings | None) -> PatchResult:
        timings = timings if timings is not None else Timings()
        patch_id = uuid.uuid4().hex
        tx_dir = self.journal.tx_root / patch_id
        store = self.revert_store.root / patch_id
        keep = os.path.join(store, "old")
        with self.journal.locked():
            timings.start()
            try:
                work = os.path.join(tx_dir, "work")
                inherited = self.journal.take_work_tree(work)
                prepared = self._evaluate(diff, base, work, keep, timings, inherited)
                raise_first_problem(prepared.report, prepared.problems)
                result = self._commit_apply(patch_id, tx_dir, prepared, user, timings)
            except BaseException:
                self.journal.abandon(tx_dir, store)
                raise
        self._retire_later()
        return result

    def _commit_apply(
        self, patch_id: str, tx_dir: Path, prepared: PreparedPatch, user: str, timings: Timings
    ) -> PatchResult:
        files, report, staged = prepared.files, prepared.report, prepared.staged
        assert staged is not None  # no problems: the patch was staged
        store = self.revert_store.root / patch_id
        os.makedirs(store, mode=0o700, exist_ok=True)
        before, after = staged.before, staged.after
        # A path may leave in one section and come back in another (git's type changes).
        olds = [fp.old_path for fp in files if fp.old_path is not None]
        news = [fp.new_path for fp in files if fp.new_path is not None]
        keep = {fp.old_path: f"old/{n}" for n, fp in enumerate(files) if fp.old_path is not None}
        entries: list[tx.Entry] = [{"path": p, "staged": None} for p in olds if p not in after]
        entries += [{"path": p, "staged": f"work/{p}", "sha256": after[p]} for p in news]
        touched = [
            {"path": p, "before": before.get(p), "after": after.get(p), "keep": keep.get(p)}
            for p in dict.fromkeys(olds + news)
        ]
        results: list[AppliedFile] = []
        for fp, entry in zip(files, report, strict=True):
            item: AppliedFile = {
                "path": fp.path,
                "op": fp.op,
                "sha256_before": before.get(fp.old_path) if fp.old_path else None,
                "sha256_after": after.get(fp.new_path) if fp.new_path else None,
            }
            if fp.op == "rename" and fp.old_path is not None:
                item["from"] = fp.old_path
            if "offsets" in entry:
                item["offsets"] = entry["offsets"]
            results.append(item)
        created = time.time()
        meta: dict[str, Any] = {
            "patch_id": patch_id,
            "user": user,
            "patch_sha256": hashlib.sha256(prepared.data).hexdigest(),
            "touched": touched,
            "files": results,
            "reverted": False,
            "created": created,
        }
        tx.write_atomic(store / "meta.json", dumps(meta), durable=False)
        self.fault("staged")
        journal = {"kind": "apply", "patch_id": patch_id, "entries": entries}
        staged_paths = [f"{tx_dir}/{e['staged']}" for e in entries if e["staged"]]
        # (fsync mode) the store's folder too: the new patch folder is a name in it.
        self.journal.commit(
            tx_dir, journal, [*staged_paths, str(self.revert_store.root)], (tx_dir, store)
        )
        timings.mark("commit")
        self.fault("committed")
        self.journal.finish(tx_dir, journal, meta, staged.folders)
        timings.mark("swap")
        self.revert_store.added(patch_id, created)
        self.log.info("codeyard patch %s applied to %d files", patch_id, len(files))
        self.log.debug("codeyard patch %s phases (ms): %s", patch_id, timings.phases)
        return {"patch_id": patch_id, "files": results}

    # ---- revert ------------------------------------------------------------------------

    def revert(self, patch_id: str, *, user: str = "anonymous") -> PatchResult:
        """Put back exactly the files as they were before `patch_id`; 409 if they changed."""
        if not PATCH_ID.match(patch_id):
            raise not_found("no such patch")
        with self._state_errors():
            return self._revert(patch_id, user)

    def _revert(self, patch_id: str, user: str) -> PatchResult:
        store = self.revert_store.root / patch_id
        tx_dir = self.journal.tx_root / f"{patch_id}-revert"
        with self.journal.locked():
            try:
                meta = json.loads((store / "meta.json").read_bytes())
            except FileNotFoundError:
                raise self._missing(patch_id) from None
            if meta["reverted"]:
                raise conflict("already_reverted", f"patch {patch_id} was already reverted")
            try:
                result = self._revert_locked(patch_id, store, tx_dir, meta, user)
            except BaseException:
                self.journal.abandon(tx_dir)
                raise
        self._retire_later()
        return result

    def _missing(self, patch_id: str) -> CodeyardError:
        """Why a patch has no revert data: never applied (404), reverted, pruned or lost."""
        mentions = self.audit.mentioning(patch_id)
        actions = {r.get("action") for r in mentions if r.get("patch_id") == patch_id}
        lost = [
            r
            for r in mentions
            if r.get("action") == "state_lost" and patch_id in r.get("lost_patches", ())
        ]
        if "patch.revert" in actions:
            return conflict("already_reverted", f"patch {patch_id} was already reverted")
        if lost or self.revert_store.holds(patch_id):
            folder = self.state_folder.label(self.state)
            return CodeyardError(
                410,
                "revert_data_lost",
                f"the revert data of patch {patch_id} is gone: it was deleted from {folder} "
                "outside Codeyard (for example by git clean -fdx). The patch stays applied; "
                "undo it with a new patch",
                patch_id=patch_id,
            )
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
        folders = staging.Folders(work, inherited=self.journal.take_work_tree(work))
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
        self.journal.commit(tx_dir, journal, staged, (tx_dir,))
        self.fault("committed")
        self.journal.finish(tx_dir, journal, meta, folders)
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
