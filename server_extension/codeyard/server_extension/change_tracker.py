"""What the extension knows about its own writes, shared by the Contents hook and the watcher.

The watcher (`watcher.py`) sees every write in the workspace, including the ones the
extension made itself (a patch's swap, a Contents API save). Those are already in the
audit log, so recording them again as `external.change` would double them. Two things
tell them apart:

- **known hashes.** Every audit record's `sha256_after` is noted (the tracker listens to
  the log), so a file whose bytes are what the last record says is no change. This also
  covers a record written a moment after the watcher saw the write.
- **claims.** While the Contents hook writes a path (or a whole folder, for a rename or
  delete) it claims it: the watcher waits until the claim is released instead of hashing a
  half-written file. Events for a folder claim that arrive shortly after it is released
  belong to that operation (the folder's files moved or went with it) and are dropped.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import stat
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

#: How long after a folder claim's release its late events still count as its own.
TREE_GRACE = 1.0

#: How many paths' last known hashes are kept; the oldest are forgotten first.
KNOWN_LIMIT = 200_000


@dataclass(frozen=True)
class FileFacts:
    """A file's content hash, size and line count (a symlink: its target's text)."""

    sha256: str
    size: int
    lines: int


def file_facts(path: str) -> FileFacts | None:
    """Hash, size and line count of the file at `path`; None if there is no file there
    (a folder counts as no file: folders have no content to record)."""
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            target = os.fsencode(os.readlink(path))
            return FileFacts(hashlib.sha256(target).hexdigest(), len(target), 0)
        if not stat.S_ISREG(st.st_mode):
            return None
        digest = hashlib.sha256()
        size = lines = 0
        last = b""
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
                lines += chunk.count(b"\n")
                last = chunk[-1:]
    except (FileNotFoundError, NotADirectoryError):
        return None
    if size and last != b"\n":
        lines += 1
    return FileFacts(digest.hexdigest(), size, lines)


def is_under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/") or prefix == ""


@dataclass
class Claim:
    paths: tuple[str, ...]
    tree: bool
    expires: float
    released: float | None = None


class ChangeTracker:
    """Thread-safe: the watcher's thread, the event loop and worker threads all use it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: OrderedDict[str, str | None] = OrderedDict()
        self._claims: dict[int, Claim] = {}
        self._ids = itertools.count(1)

    def note_record(self, _epoch: str, record: dict[str, Any]) -> None:
        """Audit listener: remember every path's hash after the record (None: gone)."""
        after = record.get("sha256_after") or {}
        if isinstance(after, dict):
            self.note(after)

    def note(self, hashes: dict[str, str | None]) -> None:
        with self._lock:
            for path, digest in hashes.items():
                self._known[path] = digest
                self._known.move_to_end(path)
            while len(self._known) > KNOWN_LIMIT:
                self._known.popitem(last=False)

    def known(self, path: str) -> tuple[bool, str | None]:
        """(whether the extension knows this path's hash, that hash or None for absent)."""
        with self._lock:
            if path in self._known:
                return True, self._known[path]
        return False, None

    def known_under(self, prefix: str) -> list[str]:
        """Known paths under a folder (a folder moved or deleted takes them along)."""
        with self._lock:
            return [p for p in self._known if is_under(p, prefix) and p != prefix]

    def claim(self, paths: list[str], *, tree: bool = False, ttl: float = 120.0) -> int:
        """Mark `paths` as being written by the extension, for at most `ttl` seconds (a
        claim whose owner never comes back, such as an abandoned chunked upload, lapses)."""
        with self._lock:
            token = next(self._ids)
            self._claims[token] = Claim(tuple(paths), tree, time.monotonic() + ttl)
            return token

    def release(self, token: int) -> None:
        with self._lock:
            claim = self._claims.get(token)
            if claim is None:
                return
            if claim.tree:
                claim.released = time.monotonic()
                claim.expires = claim.released + TREE_GRACE
            else:
                del self._claims[token]

    def verdict(self, path: str) -> str:
        """`wait` while a claim covers `path`, `own` for a folder claim's late events,
        else `check` (hash it and compare with what is known)."""
        now = time.monotonic()
        with self._lock:
            for token, claim in list(self._claims.items()):
                if claim.expires < now:
                    del self._claims[token]
                    continue
                covers = any(is_under(path, p) if claim.tree else path == p for p in claim.paths)
                if covers:
                    return "wait" if claim.released is None else "own"
        return "check"
