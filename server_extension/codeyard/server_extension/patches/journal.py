"""The transaction life cycle shared by apply and revert: lock, commit, swap, retire, recover.

`transactions` holds the file-level steps; `Journal` holds the order they run in and the
state between them. A transaction is committed by one flush of its journal and staged
files (`commit`), swapped in and recorded (`finish`), answered, and retired later: a second
flush makes the swap and the audit record durable, then the journal is dropped. Every
locked step retires what is pending first, so a replay after a crash can never undo a
later transaction.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ..audit import AuditLog
from . import staging
from . import transactions as tx
from .revertstore import PATCH_ID, RevertStore


def dumps(value: Any) -> bytes:
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


@dataclass
class Unretired:
    """A swapped transaction whose swap and audit record are not yet known to be durable."""

    tx_dir: Path
    flush_paths: list[str]  # what fsync mode must flush: changed folders, a revert's meta
    folders: staging.Folders | None = field(default=None)


#: How many empty staging trees are kept for reuse, and the most folders one may hold.
SPARE_TREES = 2
SPARE_TREE_FOLDERS = 256


class Journal:
    """Runs the transactions of one workspace's state folder, one at a time.

    Its folders: `state/tx/<id>/` (one per transaction: journal and staging tree),
    `state/scratch/` (emptied by recovery: throw-away work and folders on their way out)
    and `state/spare/` (staging trees kept for reuse); old files live in the revert store.

    Staging trees are reused: after a swap a transaction's `work/` holds only empty
    folders, and it is kept in `spare/` for the next transaction instead of being taken
    down. Fresh folders cost a mkdir each and, worse, land wherever the file system
    places new folders, which on a busy ext4 made `git apply` in them two to three times
    slower than in long-lived folders.

    `fault(point)` is called at the crash-relevant moments of a swap (`swapped:<n>`); the
    patch manager passes its own hook so tests can inject failures there.
    """

    def __init__(
        self,
        root: str,
        state: Path,
        audit: AuditLog,
        revert_store: RevertStore,
        *,
        flush_mode: str = "syncfs",
        fault: Callable[[str], None] | None = None,
        ensure_state: Callable[[], object] | None = None,
        log: logging.Logger | Any | None = None,
    ) -> None:
        if flush_mode not in tx.FLUSH_MODES:
            raise ValueError(f"flush_mode must be one of {tx.FLUSH_MODES}, not {flush_mode!r}")
        self.root = root
        self.state = state
        self.audit = audit
        self.revert_store = revert_store
        self.flush_mode = flush_mode
        self.fault = fault or (lambda point: None)
        self.log = log or logging.getLogger(__name__)
        self.tx_root = state / "tx"
        self.scratch_root = state / "scratch"
        self.spare_root = state / "spare"
        self.store_root = revert_store.root
        # Makes the folders above (again, if someone deleted them) or refuses with a clear
        # error; the patch manager passes `StateFolder.ensure`.
        self.ensure_state = ensure_state or (lambda: None)
        self._lock = threading.Lock()
        self._needs_recovery = False
        # Transactions answered but not yet retired, and the thread that retires them.
        self._unretired: list[Unretired] = []
        self._retirer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="codeyard-retire")
        self._spares: list[tuple[str, int]] = []  # (path, folders in it)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Thread lock plus a file lock, so a second server on the same state also waits."""
        with self._lock:
            self.ensure_state()
            fd = os.open(self.state / "lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                # Before anything new: earlier swaps must be durable and their journals gone,
                # or a replay after a crash could undo what this transaction does.
                self._retire_locked()
                if self._needs_recovery:
                    self._recover_locked()
                yield
            finally:
                os.close(fd)

    def commit(
        self,
        tx_dir: Path,
        journal: dict[str, Any],
        paths: list[str],
        trees: tuple[str | os.PathLike[str], ...],
    ) -> None:
        """Write the journal and flush it with everything staged: the commit point.

        One flush for all of it (syncfs: one call). If it fails, nothing in the workspace
        has changed yet and the transaction is thrown away, so the caller's error is true.
        """
        try:
            tx.commit(tx_dir, journal, durable=False)
            # (fsync mode) tx/ too: this folder is a new name in it, an earlier one is gone.
            tx.flush(tx_dir, [*paths, str(self.tx_root)], trees=trees, mode=self.flush_mode)
        except BaseException:
            tx.discard(tx_dir)
            raise

    def finish(
        self,
        tx_dir: Path,
        journal: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
        folders: staging.Folders | None = None,
    ) -> None:
        """Swap a committed transaction in and record it; retiring it comes later.

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
            tx.write_atomic(store / "meta.json", dumps(meta), durable=False)
            tx.discard(store / "old")
            changed += [str(store / "meta.json"), str(store)]
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
        self._unretired.append(Unretired(tx_dir, changed, folders))

    def abandon(self, tx_dir: Path, *also: Path) -> None:
        """Clean up after a transaction failed, still under the lock.

        Uncommitted (no journal yet): the workspace is untouched, so `tx_dir` and `also`
        (e.g. the patch's revert data) are thrown away. Committed: it must be finished, so
        recovery runs before the next transaction.
        """
        if tx.read_journal(tx_dir) is None:
            tx.discard(tx_dir)
            for path in also:
                tx.discard(path)
        else:
            self._needs_recovery = True

    def _retire_locked(self) -> None:
        """Flush answered swaps and their audit records, then drop their journals.

        One flush covers every transaction answered since the last one. Pruning the revert
        store happens here too, off the path of the answer.
        """
        if not self._unretired:
            return
        pending, self._unretired = self._unretired, []
        paths = [p for u in pending for p in u.flush_paths]
        try:
            try:
                tx.flush(self.tx_root, [*paths, str(self.audit.path)], mode=self.flush_mode)
            except FileNotFoundError:
                # (fsync mode) the state folder was deleted and rebuilt since these swaps:
                # what is still there is flushed, what is gone needs no flush.
                alive = [p for p in [*paths, str(self.audit.path)] if os.path.lexists(p)]
                tx.flush(self.tx_root, alive, mode=self.flush_mode)
        except BaseException:
            self._unretired = pending + self._unretired
            raise
        for u in pending:
            self._drop(u.tx_dir, u.folders)
        pruned = self.revert_store.prune()
        if pruned:
            self.log.info("codeyard pruned the revert data of %d patches", len(pruned))

    def retire_later(self) -> None:
        """Retire in the background, right after the answer: nobody waits for it."""
        if self._unretired:
            self._retirer.submit(self._retire_quietly)

    def _retire_quietly(self) -> None:
        try:
            self.settle()
        except Exception as exc:  # the next transaction retries, under its lock
            self.log.error("codeyard could not retire transactions: %s", exc.__class__.__name__)

    def settle(self) -> None:
        """Retire every answered transaction now (shutdown and tests call this)."""
        with self.locked():
            pass

    def take_work_tree(self, work: str) -> int:
        """Put a spare staging tree at `work` (else a new folder); its folder count."""
        os.makedirs(os.path.dirname(work), mode=0o700, exist_ok=True)
        while self._spares:
            path, count = self._spares.pop()
            try:
                os.rename(path, work)
                return count
            except OSError:
                tx.discard(path)
        os.mkdir(work, 0o700)
        return 0

    def _keep_work_tree(self, work: str, folders: staging.Folders) -> bool:
        """Keep a swapped transaction's `work/` (empty folders only) as a spare tree."""
        count = folders.inherited + len(folders.made)
        if len(self._spares) >= SPARE_TREES or count > SPARE_TREE_FOLDERS:
            return False
        spare = os.path.join(self.spare_root, uuid.uuid4().hex)
        try:
            os.rename(work, spare)
        except OSError:
            return False
        self._spares.append((spare, count))
        return True

    def _drop(self, tx_dir: Path, folders: staging.Folders | None) -> None:
        """Remove a finished transaction folder, keeping its staging tree for reuse.

        It is first renamed into scratch (which `recover()` empties): a half-removed folder
        left in `tx/` without its journal would read as uncommitted, and recovery would
        then throw away the revert data of a patch that was applied.
        """
        kept = folders is not None and self._keep_work_tree(f"{tx_dir}/work", folders)
        trash = os.path.join(self.scratch_root, uuid.uuid4().hex)
        try:
            os.rename(tx_dir, trash)
        except OSError:
            tx.discard(tx_dir)
            return
        _remove_trash(trash, None if kept else folders)

    def _audited(self, patch_id: str, action: str, recovering: bool) -> bool:
        if not recovering:
            return False
        return any(
            r.get("patch_id") == patch_id and r.get("action") == action
            for r in self.audit.tail(1000)
        )

    def recover(self) -> list[str]:
        """At start-up: finish committed transactions, throw away uncommitted ones.

        If it cannot run now (an unwritable state folder), the next transaction runs it.
        """
        try:
            with self.locked():
                return self._recover_locked()
        except BaseException:
            self._needs_recovery = True
            raise

    def forget_spares(self) -> None:
        """Drop the spare staging trees from memory (their folder was deleted)."""
        self._spares = []

    def _recover_locked(self) -> list[str]:
        finished: list[str] = []
        for folder in (self.scratch_root, self.spare_root):
            tx.discard(folder)
            folder.mkdir(mode=0o700, exist_ok=True)
        self._spares = []
        for tx_dir in sorted(p for p in self.tx_root.iterdir() if p.is_dir()):
            journal = tx.read_journal(tx_dir)
            if journal is not None and not tx.staged_intact(tx_dir, journal["entries"]):
                journal = None  # its commit flush never finished; the workspace is untouched
            if journal is None:
                tx.discard(tx_dir)
                if PATCH_ID.match(tx_dir.name):
                    tx.discard(self.store_root / tx_dir.name)
                self.log.warning("codeyard discarded uncommitted transaction %s", tx_dir.name)
                continue
            journal["recovered"] = True
            tx.commit(tx_dir, journal)
            self.finish(tx_dir)
            finished.append(str(journal["patch_id"]))
            self.log.warning("codeyard finished interrupted transaction %s", tx_dir.name)
        self._needs_recovery = False
        self._retire_locked()
        self.revert_store.reload()
        return finished
