"""Record writes that bypass the extension (kernels, terminals) as `external.change` records.

A background thread holds one inotify instance with a watch on every folder of the workspace,
added as folders appear. It notes which paths changed; once a path has been quiet for
`DEBOUNCE` seconds (or has kept changing for `MAX_DELAY`), it hashes the file and, unless the
extension itself wrote those bytes (`change_tracker.ChangeTracker`), appends one
`external.change` record for every path that settled together: paths, `sha256_after`
(None: the file is gone), `size_after`, `lines_after`, and `sha256_before` for paths whose
earlier hash the extension knows. Content never enters the record.

Not watched: the state folder (the extension's own files), and folders named in `exclude`
(`.git` internals, checkpoints, bytecode caches) anywhere in the tree.

While a patch transaction is in flight (its folder under `state/tx/` exists) settled paths
wait: the patch engine swaps files in before it writes its audit record, and the record's
hashes are what show that those writes were its own.

Limits: at most `max_watches` folders are watched. Past that, folders are left unwatched
(their changes are not recorded as they happen); the first time, the log says so and one
`watcher.limit` audit record notes how many folders are watched. A kernel queue overflow
(too many events at once) loses events; it is logged and recorded as `watcher.overflow`.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import threading
import time
from collections.abc import Iterable

from . import inotify
from .audit import AuditLog
from .change_tracker import ChangeTracker, file_facts
from .errors import CodeyardError
from .state import StateFolder

#: Seconds a path must be quiet before it is hashed and recorded.
DEBOUNCE = 0.25
#: Seconds after its first event that a path that keeps changing is recorded anyway.
MAX_DELAY = 2.0
#: Seconds a path waits for an in-flight patch transaction before it is checked anyway.
MAX_WAIT = 30.0
#: Paths per `external.change` record; more settled at once make several records.
PATHS_PER_RECORD = 500

DEFAULT_EXCLUDE = (".git", ".ipynb_checkpoints", "__pycache__")


class _Pending:
    __slots__ = ("first", "last")

    def __init__(self, now: float) -> None:
        self.first = now
        self.last = now


class ExternalChangeWatcher:
    """Watches `root` recursively in a daemon thread; `start()` / `stop()`."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        audit: AuditLog,
        state: StateFolder,
        tracker: ChangeTracker,
        *,
        state_dir: str | os.PathLike[str],
        user: str,
        exclude: Iterable[str] = DEFAULT_EXCLUDE,
        max_watches: int = 8192,
        log: logging.Logger | None = None,
    ) -> None:
        self.root = os.path.realpath(root)
        self.audit = audit
        self.state = state
        self.tracker = tracker
        self.user = user
        self.exclude = frozenset(exclude)
        self.max_watches = max_watches
        self.log = log or logging.getLogger(__name__)
        state_real = os.path.realpath(state_dir)
        rel = os.path.relpath(state_real, self.root)
        self._state_rel = None if rel.startswith("..") else rel.replace(os.sep, "/")
        self._tx_root = os.path.join(state_real, "tx")
        self._wds: dict[int, str] = {}  # watch descriptor -> folder, relative ("" is root)
        self._dirs: dict[str, int] = {}
        self._pending: dict[str, _Pending] = {}
        self._limit_noted = False
        self._git_appeared: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._notify: inotify.Inotify | None = None
        self.ready = threading.Event()

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._notify = inotify.Inotify()
        self._thread = threading.Thread(target=self._run, name="codeyard-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._notify is not None:
            self._notify.close()
            self._notify = None

    def _run(self) -> None:
        assert self._notify is not None
        try:
            self._watch_tree("", None)
        finally:
            self.ready.set()
        poller = select.poll()
        poller.register(self._notify.fd, select.POLLIN)
        while not self._stop.is_set():
            try:
                if poller.poll(100):
                    now = time.monotonic()
                    for event in self._notify.read():
                        self._on_event(event, now)
                self._flush(time.monotonic())
            except Exception:  # one bad moment must not end the watching for good
                self.log.exception("codeyard watcher failed on an event; watching on")
                time.sleep(0.5)

    # -- watches ---------------------------------------------------------------------------

    def _skipped(self, rel: str) -> bool:
        name = rel.rsplit("/", 1)[-1]
        if name in self.exclude:
            return True
        return self._state_rel is not None and (
            rel == self._state_rel or rel.startswith(self._state_rel + "/")
        )

    def _full(self, rel: str) -> str:
        return os.path.join(self.root, rel) if rel else self.root

    def _watch_tree(self, top: str, seen_at: float | None) -> None:
        """Watch `top` and every folder below it; with `seen_at`, the files found there are
        new to the watcher (a folder created or moved in) and are checked too."""
        stack = [top]
        while stack:
            rel = stack.pop()
            if rel and self._skipped(rel):
                continue
            if not self._add_watch(rel):
                continue
            try:
                entries = list(os.scandir(self._full(rel)))
            except OSError:
                continue
            for entry in entries:
                child = f"{rel}/{entry.name}" if rel else entry.name
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    continue
                if is_dir:
                    stack.append(child)
                elif seen_at is not None and not self._skipped(child):
                    self._touch(child, seen_at)

    def _add_watch(self, rel: str) -> bool:
        assert self._notify is not None
        if rel in self._dirs:
            return True
        if len(self._wds) >= self.max_watches:
            self._note_limit()
            return False
        try:
            wd = self._notify.add_watch(self._full(rel))
        except OSError as exc:
            if exc.errno == errno.ENOSPC:  # the kernel's own per-user watch limit
                self._note_limit()
            return False
        old = self._wds.get(wd)
        if old is not None and old != rel:
            self._dirs.pop(old, None)  # same folder, reached under a new name
        self._wds[wd] = rel
        self._dirs[rel] = wd
        return True

    def _forget_tree(self, top: str) -> None:
        assert self._notify is not None
        for rel in [d for d in self._dirs if d == top or d.startswith(top + "/")]:
            wd = self._dirs.pop(rel)
            if self._wds.get(wd) == rel:
                del self._wds[wd]
                self._notify.rm_watch(wd)

    def _note_limit(self) -> None:
        if self._limit_noted:
            return
        self._limit_noted = True
        self.log.warning(
            "codeyard watches %d folders, its limit: changes in further folders are not "
            "recorded as external changes (raise CodeyardApp.external_max_watches or the "
            "kernel's fs.inotify.max_user_watches)",
            len(self._wds),
        )
        self._append("watcher.limit", [], watched=len(self._wds), limit=self.max_watches)

    # -- events ----------------------------------------------------------------------------

    def _touch(self, rel: str, now: float) -> None:
        pending = self._pending.get(rel)
        if pending is None:
            self._pending[rel] = _Pending(now)
        else:
            pending.last = now

    def _on_event(self, event: inotify.Event, now: float) -> None:
        if event.mask & inotify.IN_Q_OVERFLOW:
            self.log.warning("codeyard watcher lost events (inotify queue overflow)")
            self._append("watcher.overflow", [])
            return
        folder = self._wds.get(event.wd)
        if folder is None:
            return
        if event.mask & inotify.IN_IGNORED:
            if self._dirs.get(folder) == event.wd:
                del self._dirs[folder]
            del self._wds[event.wd]
            return
        if not event.name:
            return  # an event on the watched folder itself: its parent reports the name
        rel = f"{folder}/{event.name}" if folder else event.name
        if rel == ".git" and event.mask & (inotify.IN_CREATE | inotify.IN_MOVED_TO):
            self._git_appeared = now
        if self._skipped(rel):
            return
        if event.mask & inotify.IN_ISDIR:
            if event.mask & (inotify.IN_CREATE | inotify.IN_MOVED_TO):
                self._watch_tree(rel, now)
            if event.mask & (inotify.IN_MOVED_FROM | inotify.IN_DELETE):
                self._forget_tree(rel)
                for known in self.tracker.known_under(rel):
                    self._touch(known, now)
            return
        self._touch(rel, now)

    # -- recording -------------------------------------------------------------------------

    def _transaction_in_flight(self) -> bool:
        try:
            with os.scandir(self._tx_root) as it:
                return any(True for _ in it)
        except OSError:
            return False

    def _flush(self, now: float) -> None:
        if self._git_appeared is not None and now - self._git_appeared >= DEBOUNCE:
            # `git init` (or a clone moved in) after the server started: hide the state
            # folder from `git status` now, before the next audit record lands in it.
            self._git_appeared = None
            self.state.hide_from_git()
        due = [
            rel
            for rel, p in self._pending.items()
            if now - p.last >= DEBOUNCE or now - p.first >= MAX_DELAY
        ]
        if not due:
            return
        in_flight = self._transaction_in_flight()
        changes: dict[str, tuple[str | None, int | None, int | None]] = {}
        before: dict[str, str | None] = {}
        for rel in due:
            pending = self._pending[rel]
            verdict = self.tracker.verdict(rel)
            if verdict == "wait" or (in_flight and now - pending.first < MAX_WAIT):
                continue
            del self._pending[rel]
            if verdict == "own":
                continue
            facts = file_facts(self._full(rel))
            digest = facts.sha256 if facts else None
            known, last = self.tracker.known(rel)
            if known and last == digest:
                continue
            if not known and facts is None:
                continue  # a file that came and went unseen (a temp file) changed nothing
            changes[rel] = (digest, facts.size if facts else None, facts.lines if facts else None)
            if known:
                before[rel] = last
        paths = sorted(changes)
        for i in range(0, len(paths), PATHS_PER_RECORD):
            part = paths[i : i + PATHS_PER_RECORD]
            self._append(
                "external.change",
                part,
                sha256_before={p: before[p] for p in part if p in before},
                sha256_after={p: changes[p][0] for p in part},
                size_after={p: changes[p][1] for p in part},
                lines_after={p: changes[p][2] for p in part},
            )

    def _append(self, action: str, paths: list[str], **fields: object) -> None:
        """One record, after the state folder is made usable (a deleted one is rebuilt and
        its loss recorded first, as for a request). A record that cannot be written is
        logged and dropped: the watcher has no one to answer an error to."""
        try:
            self.state.ensure()
            self.audit.append(user=self.user, action=action, paths=paths, **fields)  # type: ignore[arg-type]
        except (CodeyardError, OSError) as exc:
            reason = exc.message if isinstance(exc, CodeyardError) else exc.__class__.__name__
            self.log.error(
                "codeyard could not record %s for %d paths: %s", action, len(paths), reason
            )


def watcher_for(
    root: str | os.PathLike[str],
    audit: AuditLog,
    state: StateFolder,
    tracker: ChangeTracker,
    *,
    state_dir: str | os.PathLike[str],
    user: str,
    exclude: Iterable[str],
    max_watches: int,
    log: logging.Logger,
) -> ExternalChangeWatcher | None:
    """A started watcher, or None (logged) where inotify is unavailable."""
    watcher = ExternalChangeWatcher(
        root,
        audit,
        state,
        tracker,
        state_dir=state_dir,
        user=user,
        exclude=exclude,
        max_watches=max_watches,
        log=log,
    )
    try:
        watcher.start()
    except OSError as exc:
        log.error("codeyard cannot watch for external changes: %s", exc)
        return None
    return watcher
