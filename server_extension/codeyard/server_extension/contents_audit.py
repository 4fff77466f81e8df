"""Record every write through the Contents API (editor and notebook saves, uploads, new
files and folders, renames, deletes, checkpoint restores) as a hash-only audit record; with
`patch_only`, refuse them.

The hook wraps four methods of the server's contents manager *instance*: `save` (which
`new`, `new_untitled`, `copy` and uploads all end in), `rename_file`, `delete_file` and
`restore_checkpoint`. Wrapping the instance rather than shipping a `ContentsManager`
subclass works whatever class the site configured (the default `AsyncLargeFileManager`,
a sync `LargeFileManager`, or a third-party one built on `FileContentsManager`), and it needs
no `ServerApp.contents_manager_class` setting that a site's own config could override.

A record holds the path(s), `sha256_before`/`sha256_after` (None: no file), and
`size_before`/`size_after` and `lines_before`/`lines_after`, each keyed by path; never
content. Actions:

- `contents.save`: an existing file written (editor, notebook, RTC document);
- `contents.upload`: a new file from an upload (base64 content, or chunked: one record, at
  the last chunk, with the hashes before the first chunk and after the last);
- `contents.create`: a new file otherwise (New File, a copy, a text PUT);
- `contents.mkdir`: a new folder (`kind: directory`, no hashes);
- `contents.rename`, `contents.delete`: a file, or a folder (`kind: directory`);
- `contents.restore`: a checkpoint restored over the file ("Revert to checkpoint").

Notebook saves are hashed as the bytes the manager wrote, read back from disk.

The user is the one the request was authorised for: the authorizer instance is wrapped to
note it in a context variable for the rest of that request.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from tornado.web import HTTPError

from .audit import AuditLog
from .change_tracker import ChangeTracker, FileFacts, file_facts
from .errors import CodeyardError
from .state import StateFolder

PATCH_ONLY_MESSAGE = (
    "This workspace accepts changes only as patches (patch_only): use the AI panel's Apply "
    "or codeyard/api/patch/apply"
)

#: How long a chunked upload may take between its first and last chunk before its claim
#: lapses (the watcher then records the partial file as an external change).
UPLOAD_TTL = 600.0

log = logging.getLogger(__name__)

_REQUEST_USER: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "codeyard_request_user", default=None
)


def note_request_users(authorizer: Any) -> None:
    """Wrap `authorizer.is_authorized` to remember, per request, who is asking.

    jupyter_server authorises every Contents API call in the handler's own task before it
    calls the contents manager, so the variable set here is what that manager call sees.
    """
    original = authorizer.is_authorized

    @functools.wraps(original)
    def is_authorized(handler: Any, user: Any, action: str, resource: str) -> Any:
        name = getattr(user, "username", None) or getattr(user, "name", None)
        if name:
            _REQUEST_USER.set(str(name))
        return original(handler, user, action, resource)

    authorizer.is_authorized = is_authorized


class ContentsAudit:
    """Installs the wrappers on one contents manager; see the module docstring."""

    def __init__(
        self,
        manager: Any,
        audit: AuditLog,
        state: StateFolder,
        tracker: ChangeTracker,
        *,
        patch_only: bool,
        owner: str,
    ) -> None:
        self.manager = manager
        self.audit = audit
        self.state = state
        self.tracker = tracker
        self.patch_only = patch_only
        self.owner = owner
        # path -> (facts before the first chunk, claim token, started), one per upload.
        self._uploads: dict[str, tuple[FileFacts | None, int, float]] = {}

    def install(self) -> None:
        for name, step in (
            ("save", self._save_steps),
            ("rename_file", self._rename_steps),
            ("delete_file", self._delete_steps),
            ("restore_checkpoint", self._restore_steps),
        ):
            original = getattr(self.manager, name)
            setattr(self.manager, name, self._wrap(original, step))

    # -- wrapping ----------------------------------------------------------------------------

    def _wrap(self, original: Callable[..., Any], steps: Callable[..., Any]) -> Callable[..., Any]:
        """`steps(*args)` returns (before, after): `before()` runs ahead of the write (it may
        refuse), `after(result)` records it; both block, so async managers run them in a
        worker thread."""
        if inspect.iscoroutinefunction(original):

            @functools.wraps(original)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                user = _REQUEST_USER.get() or self.owner
                before, after, abort = steps(user, *args, **kwargs)
                await asyncio.to_thread(before)
                try:
                    result = await original(*args, **kwargs)
                except BaseException:
                    abort()
                    raise
                await asyncio.to_thread(after)
                return result

            return async_wrapper

        @functools.wraps(original)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            user = _REQUEST_USER.get() or self.owner
            before, after, abort = steps(user, *args, **kwargs)
            before()
            try:
                result = original(*args, **kwargs)
            except BaseException:
                abort()
                raise
            after()
            return result

        return sync_wrapper

    # -- shared pieces ------------------------------------------------------------------------

    def _refuse_if_patch_only(self) -> None:
        if self.patch_only:
            raise HTTPError(403, PATCH_ONLY_MESSAGE)

    def _os_path(self, rel: str) -> str:
        get = getattr(self.manager, "_get_os_path", None)
        if get is not None:
            return str(get(rel))
        return os.path.join(str(self.manager.root_dir), rel)

    def _ready(self) -> None:
        """The state folder must take the record before anything is written, so a write
        is never made that cannot be recorded."""
        try:
            self.state.ensure()
        except CodeyardError as exc:
            raise HTTPError(exc.status, exc.message) from None

    def _record(
        self,
        user: str,
        action: str,
        paths: list[str],
        before: dict[str, FileFacts | None] | None,
        after: dict[str, FileFacts | None] | None,
        **meta: Any,
    ) -> None:
        fields: dict[str, Any] = dict(meta)
        if before is not None:
            fields["sha256_before"] = {p: f.sha256 if f else None for p, f in before.items()}
            fields["size_before"] = {p: f.size if f else None for p, f in before.items()}
            fields["lines_before"] = {p: f.lines if f else None for p, f in before.items()}
        if after is not None:
            fields["sha256_after"] = {p: f.sha256 if f else None for p, f in after.items()}
            fields["size_after"] = {p: f.size if f else None for p, f in after.items()}
            fields["lines_after"] = {p: f.lines if f else None for p, f in after.items()}
        try:
            self.audit.append(user=user, action=action, paths=paths, **fields)
        except OSError as exc:  # the write is done; failing the request would hide it
            log.error("codeyard could not record %s of %s: %s", action, paths, exc.strerror)

    # -- the four operations ------------------------------------------------------------------

    def _save_steps(self, user: str, model: dict[str, Any], path: str = "", *_: Any) -> Any:
        rel = path.strip("/")
        chunk = model.get("chunk")
        is_dir = model.get("type") == "directory"
        state: dict[str, Any] = {}

        def before() -> None:
            self._refuse_if_patch_only()
            self._ready()
            if chunk is None or chunk == 1:
                state["os_path"] = os_path = self._os_path(rel)
                state["existed"] = os.path.lexists(os_path)
                state["facts"] = None if is_dir else file_facts(os_path)
                token = self.tracker.claim([rel], ttl=UPLOAD_TTL if chunk else 120.0)
                if chunk == 1:
                    self._drop_upload(rel)
                    self._uploads[rel] = (state["facts"], token, time.monotonic())
                state["token"] = token
            elif rel in self._uploads:
                state["token"] = self._uploads[rel][1]

        def after() -> None:
            token = state.get("token")
            if chunk not in (None, -1):
                return  # a middle chunk: the upload's claim stays until the last one
            if chunk == -1:
                upload = self._uploads.pop(rel, None)
                facts_before = upload[0] if upload else None
                existed = facts_before is not None
            else:
                facts_before, existed = state["facts"], state["existed"]
            try:
                if is_dir:
                    if not existed:
                        self._record(user, "contents.mkdir", [rel], None, None, kind="directory")
                    return
                facts_after = file_facts(self._os_path(rel))
                if existed:
                    action = "contents.save"
                elif chunk is not None or model.get("format") == "base64":
                    action = "contents.upload"
                else:
                    action = "contents.create"
                self._record(user, action, [rel], {rel: facts_before}, {rel: facts_after})
            finally:
                if token is not None:
                    self.tracker.release(token)

        def abort() -> None:
            if chunk is None:
                token = state.get("token")
                if token is not None:
                    self.tracker.release(token)
            else:
                self._drop_upload(rel)

        return before, after, abort

    def _drop_upload(self, rel: str) -> None:
        upload = self._uploads.pop(rel, None)
        if upload is not None:
            self.tracker.release(upload[1])
        # Uploads abandoned long ago would otherwise stay here for the server's life.
        cutoff = time.monotonic() - UPLOAD_TTL
        for stale in [p for p, u in self._uploads.items() if u[2] < cutoff]:
            self.tracker.release(self._uploads.pop(stale)[1])

    def _rename_steps(self, user: str, old_path: str, new_path: str, *_: Any) -> Any:
        old, new = old_path.strip("/"), new_path.strip("/")
        state: dict[str, Any] = {}

        def before() -> None:
            self._refuse_if_patch_only()
            self._ready()
            os_old = self._os_path(old)
            state["dir"] = os.path.isdir(os_old) and not os.path.islink(os_old)
            state["facts"] = None if state["dir"] else file_facts(os_old)
            state["token"] = self.tracker.claim([old, new], tree=state["dir"])

        def after() -> None:
            try:
                if state["dir"]:
                    self._record(user, "contents.rename", [old, new], None, None, kind="directory")
                else:
                    facts_new = file_facts(self._os_path(new))
                    self._record(
                        user,
                        "contents.rename",
                        [old, new],
                        {old: state["facts"], new: None},
                        {old: None, new: facts_new},
                    )
            finally:
                self.tracker.release(state["token"])

        def abort() -> None:
            if "token" in state:
                self.tracker.release(state["token"])

        return before, after, abort

    def _delete_steps(self, user: str, path: str, *_: Any) -> Any:
        rel = path.strip("/")
        state: dict[str, Any] = {}

        def before() -> None:
            self._refuse_if_patch_only()
            self._ready()
            os_path = self._os_path(rel)
            state["dir"] = os.path.isdir(os_path) and not os.path.islink(os_path)
            state["facts"] = None if state["dir"] else file_facts(os_path)
            state["token"] = self.tracker.claim([rel], tree=state["dir"])

        def after() -> None:
            try:
                if state["dir"]:
                    self._record(user, "contents.delete", [rel], None, None, kind="directory")
                else:
                    self._record(user, "contents.delete", [rel], {rel: state["facts"]}, {rel: None})
            finally:
                self.tracker.release(state["token"])

        def abort() -> None:
            if "token" in state:
                self.tracker.release(state["token"])

        return before, after, abort

    def _restore_steps(self, user: str, checkpoint_id: str, path: str, *_: Any) -> Any:
        rel = path.strip("/")
        state: dict[str, Any] = {}

        def before() -> None:
            self._refuse_if_patch_only()
            self._ready()
            state["facts"] = file_facts(self._os_path(rel))
            state["token"] = self.tracker.claim([rel])

        def after() -> None:
            try:
                facts_after = file_facts(self._os_path(rel))
                self._record(
                    user, "contents.restore", [rel], {rel: state["facts"]}, {rel: facts_after}
                )
            finally:
                self.tracker.release(state["token"])

        def abort() -> None:
            if "token" in state:
                self.tracker.release(state["token"])

        return before, after, abort
