"""The gateway's audit trail: one record per model call, with digests and counts only, sent
to the central audit.

A record holds who asked, which model, the status, token counts, latency, and the sha256 of
the prompt and of the answer. The text itself is never written: a digest lets an investigator
confirm that a given prompt or answer was (or was not) sent, without the log becoming a copy
of everyone's code.

The records go through the same path as a workspace's (`codeyard.server_extension.audit` and
`audit_forward`): a hash-chained local log whose records carry `seq`, a spool folder beside
it, and a background sender that posts the spool to the central audit with the gateway's own
Hub token. The service is idempotent on (source, epoch, seq), so the spool survives the
service being down and a resend after a crash stores nothing twice. The gateway is one
source (`service/<name>`) with one chain; each record names the user it was for.

Several worker processes (`GatewayApp.processes`) keep that one chain: an append takes an
exclusive `flock` on `<log>.lock`, picks up the last link another worker wrote (reading the
file's tail only, not the whole log) and appends after it. One chain rather than one per
worker, because a chain per worker would make the number of sources the central audit and
an investigator see depend on the machine's core count and on restarts, and the log file
stays the one file tools and tests read. The lock is held for one short append (tens of
microseconds); the rows carry the `pid` of the worker that served the call. Every worker
spools its own records; one worker (`sender=True`) runs the sender thread and recovery,
and looks at the spool every `SPOOL_POLL_SECONDS` for records the others left there.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codeyard.server_extension.audit import GENESIS, AuditLog
from codeyard.server_extension.audit_forward import AuditForwarder

log = logging.getLogger(__name__)


@dataclass
class AuditRow:
    user: str
    model: str
    path: str
    status: int
    stream: bool
    prompt_tokens: int
    completion_tokens: int
    # What the call cost its user's budget: prompt plus completion tokens as vLLM reported
    # them, or the call's whole reservation when the answer was cut short (see accounting).
    charged_tokens: int
    latency_ms: float
    ttft_ms: float | None
    # The gateway's own cost. forward_ms: from reading the request to having sent it to vLLM
    # (parsing, auth, limits, body checks, connection). first_chunk_ms: from the HTTP client
    # handing over vLLM's first chunk to having written it to the caller's socket.
    forward_ms: float | None
    first_chunk_ms: float | None
    # vLLM's own time to first chunk as the gateway saw it: request sent to first chunk
    # received. A caller's time to first token minus this is what the hop through the
    # gateway added to it.
    upstream_ttft_ms: float | None
    # Whether this call had to open a new connection to vLLM (pooled ones are reused).
    upstream_new_connection: bool
    # The gateway worker process that served the call.
    pid: int
    prompt_sha256: str
    answer_sha256: str
    error: str | None = None


def spool_dir_for(log_path: str | os.PathLike[str]) -> Path:
    """The spool folder beside the log: `llm-audit.jsonl` -> `llm-audit-spool/`."""
    path = Path(log_path)
    return path.with_name(path.stem + "-spool")


# How often the sending worker looks for records other workers spooled.
SPOOL_POLL_SECONDS = 0.5
# Bytes read from the end of the log to find its last record (records are ~1 KB).
TAIL_BYTES = 16384


class SharedAuditLog(AuditLog):
    """An `AuditLog` that several processes append to as one chain (see the module doc)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._lock_path = Path(f"{path}.lock")
        self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            super().__init__(path)
        except BaseException:
            os.close(self._lock_fd)
            raise

    def _last_link(self) -> tuple[int, str]:
        try:
            with self.path.open("rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                span = TAIL_BYTES
                while True:
                    fh.seek(max(0, size - span))
                    lines = [line for line in fh.read().split(b"\n") if line.strip()]
                    # A partial first line is complete only if we read from the start.
                    if len(lines) > 1 or span >= size:
                        break
                    span *= 4
        except FileNotFoundError:
            return 0, GENESIS
        if not lines:
            return 0, GENESIS
        record = json.loads(lines[-1])
        return int(record["seq"]), str(record["hash"])

    def append(self, **fields: Any) -> dict[str, Any]:
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            return super().append(**fields)
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._lock_fd)


def _open_log(path: Path) -> SharedAuditLog:
    """The chained log at `path`; a file of unchained rows (written before the gateway kept
    a chain) is moved aside, so the new chain starts at seq 1 and the old rows are kept."""
    try:
        return SharedAuditLog(path)
    except (KeyError, TypeError, ValueError):
        aside = path.with_name(f"{path.name}.unchained-{int(time.time())}")
        os.rename(path, aside)
        log.warning("codeyard gateway: %s had rows without a chain; moved to %s", path, aside)
        return SharedAuditLog(path)


class _SpoolPoller(threading.Thread):
    """Wakes the sender regularly: other workers' spooled records do not wake it."""

    def __init__(self, wake: Callable[[], None]) -> None:
        super().__init__(name="codeyard-audit-spool-poll", daemon=True)
        self.wake = wake
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(SPOOL_POLL_SECONDS):
            self.wake()


class GatewayAudit:
    """The gateway's local chained log (mode 0600) and, with `central_url`, its forwarder.

    `write` runs on the event loop after the answer ended and before the handler finishes,
    so a call's record exists when its caller has the answer. It appends without an fsync:
    a flush per call would stall every stream the loop relays. A killed gateway loses
    nothing (the page cache holds the write, and at start every record after the last one
    the service acknowledged is spooled again); a power cut may lose the newest records.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        central_url: str = "",
        token: str = "",
        spool_dir: str | os.PathLike[str] | None = None,
        min_backoff: float = 0.5,
        max_backoff: float = 30.0,
        logger: logging.Logger | Any | None = None,
        sender: bool = True,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        self.log = _open_log(self.path)
        self.forwarder: AuditForwarder | None = None
        self._poller: _SpoolPoller | None = None
        if central_url:
            if not token:
                raise ValueError("the central audit needs the gateway's Hub token")
            spool = Path(spool_dir) if spool_dir else spool_dir_for(self.path)
            spool.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.forwarder = AuditForwarder(
                self.log,
                spool,
                central_url,
                token,
                min_backoff=min_backoff,
                max_backoff=max_backoff,
                log=logger,
            )
            self.log.add_listener(self.forwarder.spool)
            if sender:
                self.forwarder.start()
                self._poller = _SpoolPoller(self.forwarder._wake.set)
                self._poller.start()

    def write(self, row: AuditRow) -> dict[str, Any]:
        """Append the record of one call (action `llm.<path>`); return it."""
        # vars(), not asdict(): the fields are scalars, and asdict's deep copy costs ~13 us
        # a row on the event loop that relays everyone's tokens.
        fields = dict(vars(row))
        user = fields.pop("user")
        return self.log.append(
            user=user, action=f"llm.{row.path}", paths=[], durable=False, **fields
        )

    def close(self) -> None:
        if self._poller is not None:
            self._poller.stopped.set()
        if self.forwarder is not None:
            self.forwarder.stop()
        self.log.close()
