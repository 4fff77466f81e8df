"""File-level helpers of the patch engine, written for a 100-file patch in tens of ms.

Why hard links: `git apply` never edits a file in place. For every file it changes it
removes the old name and creates a new file (`write_out_one_result` in git's apply.c, for
content, mode and rename changes alike), so a staging folder may share inodes with the
workspace and the workspace keeps its bytes. A link costs one metadata write where a copy
costs a create, a write and two reads per file, and copying would be the largest part of
an apply. `PatchManager.stage_links` turns linking off for an engine that edits in place,
and `digest` reports inodes so the manager can check the engine kept that promise.

Everything here works on `str` paths with `os` calls: pathlib built ~1,600 objects per
apply, which cost more than the system calls themselves.
"""

from __future__ import annotations

import errno
import hashlib
import os
import posixpath
import stat
from collections.abc import Callable

from ..errors import CodeyardError, bad_request, conflict
from .diffparse import FilePatch

Inode = tuple[int, int]  # (st_dev, st_ino)


def digest(path: str) -> tuple[str | None, Inode | None]:
    """sha256 of a file's bytes, or of a symlink's target text (as git hashes links).

    Returns `(None, None)` if nothing is there, and the file's inode (None for a link).
    One open with O_NOFOLLOW replaces the lstat-then-open pair: it fails with ELOOP on a link.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        return hashlib.sha256(os.fsencode(os.readlink(path))).hexdigest(), None
    try:
        info = os.fstat(fd)
        hasher = hashlib.sha256()
        while chunk := os.read(fd, 1 << 20):
            hasher.update(chunk)
    finally:
        os.close(fd)
    return hasher.hexdigest(), (info.st_dev, info.st_ino)


def copy_entry(src: str, dst: str) -> None:
    """Copy a file with its mode to a new name, or recreate a symlink as a symlink."""
    if os.path.islink(src):
        os.symlink(os.readlink(src), dst)
        return
    with open(src, "rb") as fin:
        mode = stat.S_IMODE(os.fstat(fin.fileno()).st_mode)
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with open(fd, "wb") as fout:
            while chunk := fin.read(1 << 20):
                fout.write(chunk)
            os.fchmod(fout.fileno(), mode)


def link_or_copy(src: str, dst: str) -> None:
    """Give `src`'s inode (a symlink stays a symlink) a second name, else copy it.

    Copying covers state on another file system (EXDEV) and kernels that refuse links to
    files the server does not own (`fs.protected_hardlinks`).
    """
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        copy_entry(src, dst)


class Folders:
    """`mkdir -p` below one root that remembers what it made, one syscall per folder.

    `remove_all` takes the made folders down deepest first (below `root`, or below the
    folder the tree was since renamed to), cheaper than `shutil.rmtree` re-listing each
    one; it returns False if any was not empty.
    """

    def __init__(self, root: str, mode: int = 0o700, *, inherited: int = 0) -> None:
        self.root = root
        self.mode = mode
        self.known: set[str] = {""}
        self.made: list[str] = []
        #: Folders the tree already had (a reused staging tree), for bounding its growth.
        self.inherited = inherited

    def ensure(self, rel_dir: str) -> None:
        if rel_dir in self.known:
            return
        self.ensure(posixpath.dirname(rel_dir))
        try:
            os.mkdir(os.path.join(self.root, rel_dir), self.mode)
            self.made.append(rel_dir)
        except FileExistsError:
            pass
        self.known.add(rel_dir)

    def ensure_parent(self, rel: str) -> None:
        self.ensure(posixpath.dirname(rel))

    def remove_all(self, root: str | None = None) -> bool:
        base = self.root if root is None else root
        clean = True
        for rel in sorted(self.made, key=len, reverse=True):
            try:
                os.rmdir(os.path.join(base, rel))
            except FileNotFoundError:
                pass
            except OSError:
                clean = False
        return clean


def scan(top: str) -> dict[str, bool]:
    """Every non-folder entry below `top` (files, symlinks of any kind) -> is it a symlink.

    A symlink to a folder counts as an entry and is not followed; empty folders are skipped.
    """
    found: dict[str, bool] = {}
    stack = [("", top)]
    while stack:
        rel, path = stack.pop()
        with os.scandir(path) as entries:
            for entry in entries:
                name = f"{rel}/{entry.name}" if rel else entry.name
                if entry.is_dir(follow_symlinks=False):
                    stack.append((name, entry.path))
                else:
                    found[name] = entry.is_symlink()
    return found


class Staged:
    """One staging folder and what was learnt filling it.

    `link_in` links each old file to `keep/<n>` (for an apply, the revert store) and
    from there into `work`, so the store, the hashes and git all see one inode.
    `hash_old` hashes the kept files; it may run while the engine works, which never
    touches `keep`. `check_new` reads the engine's result.
    """

    def __init__(self, work: str, keep: str, *, inherited: int = 0) -> None:
        self.work = work
        self.keep = keep
        self.folders = Folders(work, inherited=inherited)
        self.kept: list[tuple[str, str]] = []  # (workspace path, kept copy)
        self.before: dict[str, str] = {}
        self.inodes: dict[str, Inode] = {}
        self.after: dict[str, str | None] = {}

    def link_in(
        self, root: str, files: list[FilePatch], *, links: bool, only: list[int] | None = None
    ) -> None:
        """Stage the old files of `files` (or of the sections numbered in `only`)."""
        if any(fp.old_path is not None for fp in files):
            os.makedirs(self.keep, mode=0o700, exist_ok=True)
        place = link_or_copy if links else copy_entry
        for n in range(len(files)) if only is None else only:
            fp = files[n]
            if fp.old_path is None:
                continue
            kept = f"{self.keep}/{n}"  # f-strings: os.path.join was ~1,000 calls per apply
            link_or_copy(f"{root}/{fp.old_path}", kept)
            self.kept.append((fp.old_path, kept))
            self.folders.ensure_parent(fp.old_path)
            place(kept, f"{self.work}/{fp.old_path}")

    def hash_old(self) -> None:
        for rel, kept in self.kept:
            value, inode = digest(kept)
            if value is None:
                raise conflict("file_missing", f"{rel} does not exist", path=rel)
            self.before[rel] = value
            if inode is not None:
                self.inodes[rel] = inode

    def check_new(self, expected: set[str], check_link: Callable[[str, str], None]) -> None:
        """The result holds exactly `expected`, links pass `check_link`; hash each file.

        A result sharing an inode with the old file at its path is refused: the engine
        would have written through a staging link into the workspace.
        """
        found = scan(self.work)
        if found.keys() != expected:
            raise bad_request("the diff's file names could not be read consistently")
        for rel, is_link in found.items():
            full = f"{self.work}/{rel}"
            if is_link:
                check_link(rel, os.readlink(full))
            value, inode = digest(full)
            if inode is not None and self.inodes.get(rel) == inode:
                raise CodeyardError(
                    500, "engine_wrote_in_place", f"the patch engine edited {rel} in place"
                )
            self.after[rel] = value
