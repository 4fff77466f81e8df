"""Wire "every change recorded" into a running server: the Contents hook and the watcher.

`start_change_records` is called once from `CodeyardApp.initialize_settings`, after the patch
engine's recovery (whose swaps are recorded by the engine itself, before anything watches).
See docs/change-records.md.
"""

from __future__ import annotations

import getpass
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .audit import AuditLog
from .change_tracker import ChangeTracker
from .contents_audit import ContentsAudit, note_request_users
from .state import StateFolder
from .watcher import ExternalChangeWatcher, watcher_for


def workspace_owner() -> str:
    """Who the workspace's own processes act for: the Hub user, else the OS user."""
    name = os.environ.get("JUPYTERHUB_USER")
    if name:
        return name
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@dataclass
class ChangeRecords:
    tracker: ChangeTracker
    contents: ContentsAudit | None
    watcher: ExternalChangeWatcher | None

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()


def start_change_records(
    serverapp: Any,
    root: str,
    audit: AuditLog,
    state: StateFolder,
    *,
    state_dir: str,
    patch_only: bool,
    watch: bool,
    exclude: Iterable[str],
    max_watches: int,
    log: logging.Logger,
) -> ChangeRecords:
    """Hook the server's contents manager and start the watcher (unless `watch` is off)."""
    tracker = ChangeTracker()
    audit.add_listener(tracker.note_record)
    owner = workspace_owner()
    contents = None
    manager = getattr(serverapp, "contents_manager", None)
    if manager is not None:
        contents = ContentsAudit(manager, audit, state, tracker, patch_only=patch_only, owner=owner)
        contents.install()
        authorizer = getattr(serverapp, "authorizer", None)
        if authorizer is not None:
            note_request_users(authorizer)
    watcher = None
    if watch:
        watcher = watcher_for(
            root,
            audit,
            state,
            tracker,
            state_dir=state_dir,
            user=owner,
            exclude=exclude,
            max_watches=max_watches,
            log=log,
        )
    return ChangeRecords(tracker, contents, watcher)
