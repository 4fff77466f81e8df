"""Workspace start and stop events, recorded by the Hub into the central audit.

JupyterHub emits a `server-action` event (`start` or `stop`, with the user and server name)
through its `EventLogger` when a spawn has succeeded and when a stop has finished, whoever
asked (the home page, the REST API, the idle culler). `SpawnEventRecorder` is a logging
handler for that logger (`c.EventLogger.handlers`): each event becomes a record
`workspace.start` / `workspace.stop` in a chained local log in the Hub's state folder, and
goes to the central audit through the same spool and sender as a workspace's records
(`codeyard.server_extension.audit_forward`), as the service `codeyard-spawn-events`. The
usage page turns those pairs into workspace-hours.

The Hub's own record of a start is what counts, not the workspace's: a workspace user
controls their server and could stop it from reporting, but not the Hub.

A workspace can also end without a Hub stop: its container is killed, exits or is removed
behind the Hub's back. JupyterHub then notices it in its poll and cleans up, but emits no
event, so the start would count on for ever. The spawner's poll reports such a death
(`record_died`): a `workspace.stop` record with `reason` "died" and `last_seen`, the
time the poll last saw it running, which is where the usage page ends its hours.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import weakref
from pathlib import Path
from typing import Any

SCHEMA = "https://schema.jupyter.org/jupyterhub/events/server-action"
SERVICE = "codeyard-spawn-events"
ACTIONS = {"start": "workspace.start", "stop": "workspace.stop"}

log = logging.getLogger(__name__)

#: The recorders of this process (the Hub's config makes one), for `record_died`.
_recorders: weakref.WeakSet[SpawnEventRecorder] = weakref.WeakSet()


def record_died(username: str, servername: str, last_seen: float) -> int:
    """Record that a workspace stopped without a Hub stop, last seen running at
    `last_seen` (epoch seconds), with every recorder of this process; return how many
    recorded it (0 where no central audit is configured)."""
    done = 0
    for recorder in list(_recorders):
        done += recorder.record(
            username, servername, "workspace.stop", reason="died", last_seen=round(last_seen, 6)
        )
    return done


def ensure_token(path: str | os.PathLike[str]) -> str:
    """The recorder's Hub API token, made once (mode 0600) in the Hub's state folder."""
    file = Path(path)
    file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        return file.read_text().strip()
    except FileNotFoundError:
        token = secrets.token_hex(32)
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(token)
        return token


class SpawnEventRecorder(logging.Handler):
    """Writes JupyterHub's start/stop events as audit records and forwards them.

    Nothing starts until the first event: the Hub config is also loaded by processes that
    never spawn (config checks, tests), which must not start a sender thread.
    """

    def __init__(self, folder: str | os.PathLike[str], url: str, token: str) -> None:
        super().__init__(level=logging.INFO)
        self.folder = Path(folder)
        self.url = url
        self.token = token
        self._ready = threading.Lock()
        self._audit: Any = None
        self._forwarder: Any = None
        _recorders.add(self)

    @property
    def audit(self) -> Any:
        """The local log, with its forwarder started (made on first use)."""
        with self._ready:
            if self._audit is None:
                from codeyard.server_extension.audit import AuditLog
                from codeyard.server_extension.audit_forward import AuditForwarder

                self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
                audit = AuditLog(self.folder / "audit.jsonl")
                forwarder = AuditForwarder(
                    audit, self.folder / "audit-spool", self.url, self.token, log=log
                )
                audit.add_listener(forwarder.spool)
                forwarder.start()
                self._audit, self._forwarder = audit, forwarder
            return self._audit

    def emit(self, record: logging.LogRecord) -> None:
        event = record.msg
        if not isinstance(event, dict) or event.get("__schema__") != SCHEMA:
            return
        action = ACTIONS.get(str(event.get("action")))
        if action is None:
            return
        self.record(str(event.get("username") or ""), str(event.get("servername") or ""), action)

    def record(self, username: str, servername: str, action: str, **meta: Any) -> bool:
        """Append one start or stop record; return whether it was written."""
        try:
            self.audit.append(user=username, action=action, paths=[], workspace=servername, **meta)
        except Exception:  # a failed record must never fail the spawn or stop
            log.exception("codeyard could not record %s", action)
            return False
        return True

    def close(self) -> None:
        if self._forwarder is not None:
            self._forwarder.stop()
        super().close()
