"""The gateway's audit trail: one JSON line per model call, with digests and counts only.

A row holds who asked, which model, the status, token counts, latency, and the sha256 of the
prompt and of the answer. The text itself is never written: a digest lets an investigator
confirm that a given prompt or answer was (or was not) sent, without the log becoming a copy
of everyone's code.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path


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
    # Whether this call had to open a new connection to vLLM (pooled ones are reused).
    upstream_new_connection: bool
    prompt_sha256: str
    answer_sha256: str
    error: str | None = None


class GatewayAudit:
    """Appends rows to a JSONL file (created mode 0600). Writes happen after the answer ends."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._fh = os.fdopen(fd, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, row: AuditRow) -> None:
        # vars(), not asdict(): the fields are scalars, and asdict's deep copy costs ~13 us
        # a row on the event loop that relays everyone's tokens.
        record = {"ts": round(time.time(), 3), **vars(row)}
        line = json.dumps(record, separators=(",", ":"), sort_keys=True)
        with self._lock:
            self._fh.write(line + "\n")
            self._fh.flush()

    def close(self) -> None:
        self._fh.close()
