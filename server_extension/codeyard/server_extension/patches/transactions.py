"""Crash-safe multi-file swaps: stage, commit a journal, then rename into place.

A transaction lives in `state/tx/<id>/`. New file versions are staged under `work/` on the
same file system as the workspace, and `journal.json` lists the swap with the hash of each
staged file. One flush then makes the staged files and the journal durable together: that
flush returning is the commit point. Only after it does anything in the workspace change,
so `recover()` finds either a journal whose staged files all match their hashes (and
finishes the swap, every step of which is idempotent), or an incomplete one from a flush
cut short, with the workspace untouched (and throws it away). Either way the workspace
holds all of the old files or all of the new ones.

The swap itself and the audit record are made durable by a second flush that nobody waits
for (`PatchManager` retires the transaction after answering): until then the journal stays,
and a crash in between is finished from it on restart.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypedDict

from .staging import digest

JOURNAL = "journal.json"


class Entry(TypedDict, total=False):
    """One path of a swap: `staged` (relative to the tx folder) replaces it, or None deletes it.

    `sha256` is the staged file's hash (git's for a symlink: its target text), which lets
    recovery tell a complete staging from one a crash cut short.
    """

    path: str
    staged: str | None
    sha256: str | None


def fsync_path(path: str | os.PathLike[str]) -> None:
    """fsync a file or folder (folders so that renames and new names are durable)."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if os.path.isdir(path) else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _load_syncfs() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        func: Callable[[int], int] = libc.syncfs
    except (OSError, AttributeError):
        return None
    return func


_SYNCFS = _load_syncfs()


FLUSH_MODES = ("syncfs", "fsync")


def flush(
    anchor: str | os.PathLike[str],
    paths: Iterable[str | os.PathLike[str]] = (),
    *,
    trees: Iterable[str | os.PathLike[str]] = (),
    mode: str = "syncfs",
) -> None:
    """Make the writes of one transaction step durable.

    `syncfs`: one `syncfs(2)` of `anchor`'s file system. About the cost of one or two
    fsyncs where a 100-file patch needs hundreds, but it writes back everything dirty on
    that file system, other writers' data included. `fsync` (also the fallback where
    syncfs is missing): fsync `anchor`, each of `paths`, and every file and folder below
    each of `trees`, in a small thread pool. On ext4 (data=ordered) each fsync commits
    the journal, so this is slower than syncfs and not isolated from other writers either.
    """
    if mode == "syncfs" and _SYNCFS is not None:
        fd = os.open(anchor, os.O_RDONLY)
        try:
            if _SYNCFS(fd) == 0:
                return
        finally:
            os.close(fd)
    targets = [os.fspath(p) for p in (*paths, anchor)]
    for tree in trees:
        for folder, _dirs, files in os.walk(tree):
            targets.append(folder)
            targets.extend(os.path.join(folder, f) for f in files)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(fsync_path, [p for p in dict.fromkeys(targets) if not os.path.islink(p)]))


def write_atomic(path: str | os.PathLike[str], data: bytes, *, durable: bool = True) -> None:
    """Replace `path` with `data` via a temporary file and a rename, then flush."""
    target = os.fspath(path)
    tmp = target + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)
    if durable:
        fsync_path(os.path.dirname(target))


def commit(
    tx_dir: str | os.PathLike[str], journal: dict[str, Any], *, durable: bool = True
) -> None:
    """Write the journal. `journal["entries"]` is a list of `Entry`.

    With `durable=False` the caller's next `flush` (which also covers the staged files)
    is the commit point.
    """
    os.makedirs(tx_dir, mode=0o700, exist_ok=True)
    data = json.dumps(journal, sort_keys=True).encode("utf-8")
    write_atomic(os.path.join(tx_dir, JOURNAL), data, durable=durable)


def staged_intact(tx_dir: str | os.PathLike[str], entries: list[Entry]) -> bool:
    """Does every staged file still in `tx_dir` match the hash its journal entry gives?

    A staged file that is gone was renamed into place, which only happens after the
    commit flush returned; a file with the wrong bytes means that flush never finished.
    """
    for entry in entries:
        staged = entry.get("staged")
        if staged is None or "sha256" not in entry:
            continue
        path = os.path.join(os.fspath(tx_dir), staged)
        if not os.path.lexists(path):
            continue
        if digest(path)[0] != entry["sha256"]:
            return False
    return True


def read_journal(tx_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    try:
        with open(os.path.join(tx_dir, JOURNAL), "rb") as fh:
            data = fh.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
    journal: dict[str, Any] = json.loads(data)
    return journal


def _prune_empty_parents(root: str, path: str) -> None:
    parent = os.path.dirname(path)
    while parent != root and parent.startswith(root + os.sep):
        try:
            os.rmdir(parent)
        except OSError:
            return
        parent = os.path.dirname(parent)


def _ensure_parents(root: str, target: str) -> None:
    """`mkdir -p` of `target`'s folder, only called when a rename found it missing."""
    parent = os.path.dirname(target)
    if parent != root:
        os.makedirs(parent, exist_ok=True)


def swap(
    root: str | os.PathLike[str],
    tx_dir: str | os.PathLike[str],
    entries: list[Entry],
    after_step: Callable[[int], None] | None = None,
    *,
    durable: bool = True,
) -> list[str]:
    """Apply the committed entries: deletions first, then renames of staged files.

    Returns the folders it changed. With `durable=False` the caller must `flush` them
    (it may first write more, e.g. the audit record, so one flush covers both).

    Safe to run again after an interruption: a staged file that is gone was already
    renamed into place, a deletion of a missing file is done. Folders left empty by a
    deletion are removed, as `git apply` does. The rename is tried first and its folder
    made only if missing, so the common case costs one system call per file.
    """
    base, tx_base = os.fspath(root), os.fspath(tx_dir)
    ordered = [e for e in entries if e["staged"] is None] + [
        e for e in entries if e["staged"] is not None
    ]
    touched_dirs: set[str] = set()
    for step, entry in enumerate(ordered):
        target = f"{base}/{entry['path']}"  # relative, checked paths
        staged = entry["staged"]
        if staged is None:
            try:
                os.unlink(target)
            except FileNotFoundError:
                pass
            else:
                touched_dirs.add(os.path.dirname(target))
                _prune_empty_parents(base, target)
        else:
            source = f"{tx_base}/{staged}"
            try:
                os.replace(source, target)
            except FileNotFoundError:
                if not os.path.lexists(source):
                    pass  # renamed into place before an interruption
                else:
                    _ensure_parents(base, target)
                    os.replace(source, target)
            touched_dirs.add(os.path.dirname(target))
        if after_step is not None:
            after_step(step)
    changed = [d for d in touched_dirs if os.path.isdir(d)]
    if durable:
        flush(tx_base, changed)
    return changed


def discard(tx_dir: str | os.PathLike[str]) -> None:
    shutil.rmtree(tx_dir, ignore_errors=True)
