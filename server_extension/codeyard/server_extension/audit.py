"""Append-only, hash-chained audit log in JSONL.

Records hold hashes and metadata only: never file content, diff text, prompts or answers.
Each record's `hash` covers its own fields and the previous record's hash, so editing or
dropping a line breaks the chain and `verify()` reports it.

The file lives in the workspace's state folder, which the user can delete (`git clean
-fdx`). An append notices a file that is gone and starts a new chain (seq 1, prev
`GENESIS`) instead of continuing one nobody can verify; `lost()` lets the state folder's
keeper write a `state_lost` record as that chain's first (see `state.StateFolder`).

The file's `epoch` is the hash of its first record: a new file after a loss starts a new
epoch at seq 1, so (epoch, seq) names a record for good. Listeners (`add_listener`) are told
of every record as it is written; the central audit's forwarder spools it from there
(`audit_forward.AuditForwarder`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Told `(epoch, record)` of every record written, under the log's lock: keep it short.
Listener = Callable[[str, dict[str, Any]], None]

GENESIS = "0" * 64


def _digest(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


class AuditLog:
    """One JSONL file; `append` is serialised by a lock and fsynced before it returns."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._seq, self._prev = self._last_link()
        self._epoch = self._first_hash()
        # The file as this object last saw it; a change means someone else wrote it.
        self._seen = self._identity()
        self._listeners: list[Listener] = []

    def add_listener(self, listener: Listener) -> None:
        """Call `listener(epoch, record)` after each record is written (its errors are logged,
        never raised: the record is already in the log)."""
        self._listeners.append(listener)

    @property
    def epoch(self) -> str:
        """The hash of the current file's first record (GENESIS while it has none)."""
        with self._lock:
            self._sync()
            return self._epoch

    def _first_hash(self) -> str:
        try:
            with self.path.open("rb") as fh:
                for line in fh:
                    if line.strip():
                        return str(json.loads(line).get("hash") or GENESIS)
        except (OSError, ValueError, AttributeError):
            pass
        return GENESIS

    def _identity(self) -> tuple[int, int, int] | None:
        """(device, inode, size) of the file, or None if it is not there."""
        try:
            st = os.stat(self.path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return st.st_dev, st.st_ino, st.st_size

    def _sync(self) -> None:
        """Pick up the chain as the file now holds it (under the lock, before a write).

        A file that is gone starts a new chain; one written by someone else (a second
        server on the same state, a restored backup) is re-read for its last link.
        """
        now = self._identity()
        if now == self._seen:
            return
        self._seq, self._prev = self._last_link() if now is not None else (0, GENESIS)
        self._epoch = self._first_hash() if now is not None else GENESIS
        self._seen = now

    def lost(self) -> tuple[int, str] | None:
        """`(seq, hash)` of the last record of a chain whose file is gone, else None."""
        with self._lock:
            if self._seq and self._identity() is None:
                return self._seq, self._prev
        return None

    def _last_link(self) -> tuple[int, str]:
        last = None
        if self.path.exists():
            with self.path.open("rb") as fh:
                for line in fh:
                    if line.strip():
                        last = line
        if last is None:
            return 0, GENESIS
        record = json.loads(last)
        return int(record["seq"]), str(record["hash"])

    def append(
        self,
        *,
        user: str,
        action: str,
        paths: list[str],
        sha256_before: dict[str, str | None] | None = None,
        sha256_after: dict[str, str | None] | None = None,
        patch_sha256: str | None = None,
        durable: bool = True,
        **meta: Any,
    ) -> dict[str, Any]:
        """Write one record. `meta` must be small metadata (ids, counts), never content.

        `durable=False` skips the fsync for a caller that makes the file system durable
        itself right after (the patch engine's one `syncfs` covers its swap and this).
        """
        with self._lock:
            self._sync()
            record: dict[str, Any] = {
                "seq": self._seq + 1,
                "ts": round(time.time(), 6),
                "user": user,
                "action": action,
                "paths": list(paths),
                "sha256_before": sha256_before or {},
                "sha256_after": sha256_after or {},
                "patch_sha256": patch_sha256,
                **meta,
                "prev": self._prev,
            }
            record["hash"] = _digest(record)
            line = json.dumps(record, sort_keys=True) + "\n"
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode("utf-8"))
                if durable:
                    os.fsync(fd)
                st = os.fstat(fd)
                self._seen = (st.st_dev, st.st_ino, st.st_size)
            finally:
                os.close(fd)
            self._seq, self._prev = record["seq"], record["hash"]
            if record["seq"] == 1:
                self._epoch = record["hash"]
            for listener in self._listeners:
                try:
                    listener(self._epoch, record)
                except Exception:  # the record is written; a listener cannot undo that
                    log.exception("codeyard audit listener %r failed", listener)
            return record

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as fh:
            return [json.loads(line) for line in fh if line.strip()]

    def tail(self, limit: int) -> list[dict[str, Any]]:
        """The newest `limit` records, newest first."""
        if limit <= 0 or not self.path.exists():
            return []
        with self.path.open("rb") as fh:
            newest = deque((line for line in fh if line.strip()), maxlen=limit)
        return [json.loads(line) for line in reversed(newest)]

    def mentioning(self, text: str) -> list[dict[str, Any]]:
        """Every record whose line contains `text`, oldest first (only those are parsed)."""
        if not self.path.exists():
            return []
        needle = text.encode("utf-8")
        with self.path.open("rb") as fh:
            return [json.loads(line) for line in fh if needle in line]

    def find(self, patch_id: str) -> list[dict[str, Any]]:
        """Every record of one patch, oldest first (only lines naming it are parsed)."""
        return [r for r in self.mentioning(patch_id) if r.get("patch_id") == patch_id]

    def verify(self) -> bool:
        """Walk the whole chain; False if any record was edited, dropped or reordered."""
        prev, seq = GENESIS, 0
        try:
            for record in self.records():
                seq += 1
                if record.get("seq") != seq or record.get("prev") != prev:
                    return False
                if record.get("hash") != _digest(record):
                    return False
                prev = record["hash"]
        except (ValueError, KeyError, TypeError):
            return False
        return True
