"""Send every audit record to the Hub's central audit, through a spool that survives the
service being down and the server being killed.

When the local log writes a record, `spool` writes it, with its epoch (the log file's first
hash), as one file in the spool folder (`<state>/audit-spool/`). A background thread posts
the spooled records in batches to `<CODEYARD_AUDIT_URL>/api/records` with the server's own
`JUPYTERHUB_API_TOKEN`, and deletes each file once the service answered that it stored it
(or already had it). Failures back off, doubling up to `max_backoff`; at start, whatever is
spooled is sent again. A clean stop sends what is still spooled before the thread ends (for
at most `drain` seconds, one attempt if the service fails): a workspace stopped right after
a change still gets it to the central audit, not only at its next start. The service is
idempotent on (workspace, epoch, seq), so a resend after a crash in the middle of a send
stores nothing twice.

Spooling costs one small file write per record on the request path, without an fsync: an
apply's `syncfs` makes it durable with the rest, and at start every log record after the
last one the service acknowledged (`acked.cursor`) is spooled again in case its file was lost.
The HTTP send never runs on the request path or the event loop.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .audit import AuditLog

ACKED = "acked.cursor"
REJECTED = "rejected"


class AuditForwarder:
    """Spools the records of one `AuditLog` and sends them to the central audit."""

    def __init__(
        self,
        audit: AuditLog,
        spool_dir: str | os.PathLike[str],
        url: str,
        token: str,
        *,
        workspace: str = "",
        batch_size: int = 100,
        min_backoff: float = 0.5,
        max_backoff: float = 30.0,
        timeout: float = 15.0,
        log: logging.Logger | Any | None = None,
    ) -> None:
        self.audit = audit
        self.spool_dir = Path(spool_dir)
        self.endpoint = url.rstrip("/") + "/api/records"
        self.token = token
        self.workspace = workspace
        self.batch_size = batch_size
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.log = log or logging.getLogger(__name__)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._drain_until = 0.0
        self._counter = 0
        self._counter_lock = threading.Lock()
        #: Sends that failed since the last one that worked (for tests and status).
        self.failures = 0
        self.sent = 0

    # ---- spooling (on the request path: one small file) -------------------------------

    def spool(self, epoch: str, record: dict[str, Any]) -> None:
        """`AuditLog` listener: write the record to the spool and wake the sender."""
        entry = {"epoch": epoch, "seq": record["seq"], "hash": record["hash"], "record": record}
        with self._counter_lock:
            self._counter += 1
            n = self._counter
        name = f"{time.time_ns():020d}-{n:06d}-{record['seq']:012d}.json"
        data = json.dumps(entry, sort_keys=True).encode("utf-8")
        for attempt in (1, 2):
            try:
                tmp = self.spool_dir / f".{name}.tmp"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    os.write(fd, data)
                finally:
                    os.close(fd)
                os.rename(tmp, self.spool_dir / name)
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise
                self.spool_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._wake.set()

    def _acked(self) -> tuple[str, int]:
        try:
            data = json.loads((self.spool_dir / ACKED).read_text("utf-8"))
            return str(data["epoch"]), int(data["seq"])
        except (OSError, ValueError, KeyError, TypeError):
            return "", 0

    def _save_acked(self, epoch: str, seq: int) -> None:
        tmp = self.spool_dir / f".{ACKED}.tmp"
        tmp.write_text(json.dumps({"epoch": epoch, "seq": seq}), "utf-8")
        os.rename(tmp, self.spool_dir / ACKED)

    def _spooled(self) -> list[Path]:
        try:
            return sorted(p for p in self.spool_dir.iterdir() if p.name.endswith(".json"))
        except FileNotFoundError:
            return []

    def recover(self) -> int:
        """Spool again every log record after the last acknowledged one that is not spooled
        (a spool file lost in a crash); return how many.

        Makes nothing when the state folder is gone: its keeper must see that and record
        the loss (`state.StateFolder.start`).
        """
        if not self.spool_dir.parent.is_dir():
            return 0
        self.spool_dir.mkdir(mode=0o700, exist_ok=True)
        epoch, seq = self._acked()
        spooled: set[tuple[str, int]] = set()
        for path in self._spooled():
            if path.name == ACKED:
                continue
            try:
                entry = json.loads(path.read_bytes())
                spooled.add((entry["epoch"], int(entry["seq"])))
            except (OSError, ValueError, KeyError, TypeError):
                path.unlink(missing_ok=True)  # a torn write of a killed server
        records = self.audit.records()
        current = records[0]["hash"] if records and records[0].get("seq") == 1 else ""
        if not current:
            return 0
        after = seq if epoch == current else 0
        missing = [r for r in records if r["seq"] > after and (current, r["seq"]) not in spooled]
        for record in missing:
            self.spool(current, record)
        return len(missing)

    # ---- sending (a background thread) -------------------------------------------------

    def start(self) -> None:
        try:
            again = self.recover()
        except OSError as exc:
            self.log.warning("codeyard audit spool %s unusable: %s", self.spool_dir, exc)
            again = 0
        if again:
            self.log.info("codeyard: spooled %d audit records again for the central audit", again)
        self._thread = threading.Thread(
            target=self._run, name="codeyard-audit-forwarder", daemon=True
        )
        self._thread.start()

    def stop(self, drain: float = 5.0) -> None:
        """End the sender once it has sent what is spooled, for at most `drain` seconds.

        Whatever is left (the service is down or slow) stays in the spool for the next start.
        """
        self._drain_until = time.monotonic() + drain
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(drain + 0.5)

    def _run(self) -> None:
        backoff = self.min_backoff
        size = self.batch_size
        while True:
            stopping = self._stop.is_set()
            left = self._drain_until - time.monotonic()
            if stopping and left <= 0:
                break
            files = [p for p in self._spooled() if p.name != ACKED][:size]
            if not files:
                if stopping:
                    break
                self._wake.wait(60)
                self._wake.clear()
                continue
            try:
                done = self._send(files, min(self.timeout, left) if stopping else self.timeout)
            except BatchRefused:
                if len(files) == 1:
                    self._reject(files[0])
                size = 1  # find the entry the service refuses, one at a time
                continue
            except Exception as exc:
                self.failures += 1
                if stopping:
                    self.log.warning(
                        "codeyard: %d audit records stay spooled for the next start (%s)",
                        len(self._spooled()),
                        exc,
                    )
                    break
                self.log.warning(
                    "codeyard could not send %d audit records (%s); retrying in %.1fs",
                    len(files),
                    exc,
                    backoff,
                )
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            self.failures = 0
            self.sent += done
            backoff = self.min_backoff
            size = self.batch_size

    def _reject(self, path: Path) -> None:
        folder = self.spool_dir / REJECTED
        folder.mkdir(mode=0o700, exist_ok=True)
        os.rename(path, folder / path.name)
        self.log.error("codeyard: the central audit refuses %s; kept in %s", path.name, folder)

    def _send(self, files: list[Path], timeout: float) -> int:
        entries, by_key = [], {}
        for path in files:
            try:
                entry = json.loads(path.read_bytes())
            except (OSError, ValueError):
                path.unlink(missing_ok=True)
                continue
            entries.append(entry)
            by_key[(entry["epoch"], entry["seq"])] = path
        if not entries:
            return 0
        body = json.dumps({"workspace": self.workspace or None, "records": entries}).encode()
        request = urllib.request.Request(  # noqa: S310 (the URL is the Hub's service)
            self.endpoint,
            data=body,
            method="POST",
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310
                answer = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 400:
                raise BatchRefused(exc.read()[:200].decode("utf-8", "replace")) from None
            raise
        done = 0
        last: tuple[str, int] | None = None
        for result in answer.get("results", []):
            key = (result.get("epoch"), result.get("seq"))
            sent = by_key.get(key)
            if sent is not None and result.get("status") in ("stored", "duplicate", "conflict"):
                sent.unlink(missing_ok=True)
                done += 1
                if last is None or key[1] > last[1]:
                    last = key
        if last is not None and last[0] == self.audit.epoch:
            epoch, seq = self._acked()
            if epoch != last[0] or last[1] > seq:
                self._save_acked(*last)
        return done


class BatchRefused(Exception):
    """The service answered 400: an entry it will never take (sent alone, it is set aside)."""


def forwarder_from_env(
    audit: AuditLog, spool_dir: str | os.PathLike[str], url: str, log: Any = None
) -> AuditForwarder | None:
    """The forwarder of a workspace server, or None without a URL or a Hub token."""
    token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
    if not url or not token:
        return None
    forwarder = AuditForwarder(
        audit,
        spool_dir,
        url,
        token,
        workspace=os.environ.get("JUPYTERHUB_SERVER_NAME", ""),
        log=log,
    )
    audit.add_listener(forwarder.spool)
    forwarder.start()
    return forwarder
