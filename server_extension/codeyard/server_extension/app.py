"""The `codeyard` ExtensionApp: settings as traitlets, managers built once, handlers wired."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Float, Int, List, TraitError, Unicode, default, validate

from .audit import AuditLog
from .audit_forward import forwarder_from_env
from .change_records import start_change_records
from .errors import CodeyardError
from .events import events_routes, events_settings
from .exec.handlers import exec_routes, exec_settings
from .files import FileReader
from .git.handlers import git_routes, git_settings
from .handlers import AuditHandler, FilesHandler, TreeHandler
from .llm.client import CodeyardLLM
from .llm.completion import CodeyardCompleter
from .llm.context import ContextBuilder
from .llm.explain import Explainer
from .llm.handlers import CompleteHandler, ExplainHandler, RewriteHandler, StatusHandler
from .llm.rewrite import Rewriter
from .llm.tokens import TokenCounter
from .patches.cells import CellPatcher
from .patches.handlers import (
    CellApplyHandler,
    CellValidateHandler,
    PatchApplyHandler,
    PatchRevertHandler,
    PatchValidateHandler,
)
from .patches.manager import PatchManager
from .patches.transactions import FLUSH_MODES
from .paths import STATE_DIR_ENV, STATE_DIRNAME, WorkspacePaths
from .tree import TreeLister
from .watcher import DEFAULT_EXCLUDE


class CodeyardApp(ExtensionApp):
    """Serves the workspace API under `{base_url}codeyard/api/`.

    Managers (`TreeLister`, `FileReader`, `PatchManager`, `AuditLog`) hold the logic and
    are built once in `initialize_settings`; handlers only translate HTTP.
    """

    name = "codeyard"
    load_other_extensions = True

    max_file_size = Int(
        2 * 1024 * 1024,
        help="""Largest file, in bytes, that `GET files` returns. Larger files answer 413.

        Keeps one request from pulling a huge log or dataset into the browser or a prompt.
        """,
    ).tag(config=True)

    @validate("max_file_size")
    def _check_max_file_size(self, proposal: dict[str, Any]) -> int:
        value = int(proposal["value"])
        if value <= 0:
            raise ValueError("max_file_size must be positive")
        return value

    tree_max_entries = Int(
        100_000,
        help="""Upper bound on `limit` for `GET tree`; a request asking for more gets 400.""",
    ).tag(config=True)

    allow_offset = Bool(
        False,
        help="""Accept hunks that apply at a different line than the diff says.

        Off by default: a hunk must apply exactly where it claims. When on, each moved
        hunk's offset is reported in the response so the user sees what happened.
        """,
    ).tag(config=True)

    revert_keep = Int(
        1000,
        help="""How many of the newest applied patches keep their revert data.

        Revert data is the old version of every file a patch replaced, kept (hard-linked
        or copied) under `state_dir/patches/<id>/` so `patch/{id}/revert` can put it back.
        After each apply, revert data beyond this count is pruned, oldest first; reverting
        a pruned patch answers 410 `revert_data_pruned` (the audit log still records it).
        0 keeps revert data of every patch.
        """,
    ).tag(config=True)

    revert_max_age = Float(
        30 * 24 * 3600.0,
        help="""Seconds after its apply that a patch's revert data is kept.

        Checked after each apply: older revert data is pruned, and reverting that patch
        answers 410 `revert_data_pruned`. 0 keeps revert data regardless of age.
        """,
    ).tag(config=True)

    flush_mode = Unicode(
        "syncfs",
        help="""How an apply or revert makes its writes durable before it answers.

        `syncfs` (default): one syncfs(2) before the answer (the commit point) and one
        after it, in the background, that makes the swap durable. It also writes back
        whatever else is dirty on that file system, so where many workspaces share one, an
        apply pays for its neighbours' unflushed writes. `fsync`: every staged file, revert link and
        folder the step wrote is fsynced, in a small thread pool; for file systems where
        syncfs is missing or unwanted (it is also the fallback when syncfs fails). On
        ext4 it is slower, not better isolated: each fsync commits the journal, which
        carries other dirty data too (`make bench` prints both). Both give the same
        all-or-nothing guarantee after a crash.
        """,
    ).tag(config=True)

    @validate("flush_mode")
    def _check_flush_mode(self, proposal: dict[str, Any]) -> Any:
        if proposal["value"] not in FLUSH_MODES:
            raise TraitError(f"flush_mode must be one of {FLUSH_MODES}, not {proposal['value']!r}")
        return proposal["value"]

    patch_engine_processes = Int(
        help="""How many `git apply` processes share one large patch.

        A patch of at least 16 files per process that only modifies or creates files is
        split into that many contiguous parts, each applied by its own `git apply` in the
        same staging folder; the apply still commits only if every part succeeded. Patches
        with deletions or renames always use one process (git removes folders it empties,
        which would race with another process). Defaults to 2, or 1 on a one-core machine.
        """,
    ).tag(config=True)

    @default("patch_engine_processes")
    def _default_engine_processes(self) -> int:
        return min(2, os.cpu_count() or 1)

    @validate("patch_engine_processes")
    def _check_engine_processes(self, proposal: dict[str, Any]) -> Any:
        if not 1 <= proposal["value"] <= 16:
            raise TraitError("patch_engine_processes must be between 1 and 16")
        return proposal["value"]

    @validate("revert_keep", "revert_max_age")
    def _check_revert_limits(self, proposal: dict[str, Any]) -> Any:
        if proposal["value"] < 0:
            raise TraitError(f"{proposal['trait'].name} must be >= 0 (0 means no limit)")
        return proposal["value"]

    state_dir = Unicode(
        help="""Folder for Codeyard's private state: the audit log, revert data, staging.

        It must be on the workspace's file system (swaps are atomic renames and revert data
        is hard-linked), and should be outside the user's git working tree, where the
        user's own tools (`git clean -fdx`, `rm -rf`) do not reach it. A Codeyard
        workspace mounts its persistent folder at the image user's HOME with the working
        tree in `work/` below it, and the spawner names `$HOME/.codeyard` in the
        CODEYARD_STATE_DIR environment variable, which is the default here. Without that
        variable (a plain `jupyter server`), `.codeyard/` under the workspace root. Patches
        may never write here. If it is inside a git working tree it is added to
        `.git/info/exclude`. If it is deleted anyway, the next request rebuilds it and
        records a `state_lost` audit record; if it cannot be written, patch requests answer
        507 `state_unwritable`.
        """,
    ).tag(config=True)

    @default("state_dir")
    def _default_state_dir(self) -> str:
        configured = os.environ.get(STATE_DIR_ENV, "").strip()
        if configured:
            return configured
        return str(Path(self.workspace_root) / STATE_DIRNAME)

    audit_url = Unicode(
        help="""Base URL of the Hub's central audit service; every audit record is spooled
        under `state_dir/audit-spool/` and sent there in the background with the server's
        JUPYTERHUB_API_TOKEN (`audit_forward`). Empty: records stay local only.
        Default: the CODEYARD_AUDIT_URL environment variable the Hub gives workspaces.""",
    ).tag(config=True)

    @default("audit_url")
    def _default_audit_url(self) -> str:
        return os.environ.get("CODEYARD_AUDIT_URL", "")

    patch_only = Bool(
        help="""Refuse every write through the Contents API, so files change only by patches.

        When True, saves, uploads, new files and folders, renames, deletes and checkpoint
        restores through `/api/contents` answer 403 with a message that points to the AI
        panel's Apply and `codeyard/api/patch/apply`, and terminals are turned off (no
        terminal handlers are registered: `/api/terminals` answers 404). Kernels still run;
        what they write is recorded as `external.change`. Default: the
        CODEYARD_PATCH_ONLY environment variable the Hub gives workspaces (`1`, `true` or
        `yes` turn it on), else False. See docs/change-records.md.
        """,
    ).tag(config=True)

    @default("patch_only")
    def _default_patch_only(self) -> bool:
        return os.environ.get("CODEYARD_PATCH_ONLY", "").strip().lower() in {"1", "true", "yes"}

    external_changes = Bool(
        True,
        help="""Watch the workspace with inotify and record writes the extension did not make
        (kernels, terminals, other processes) as `external.change` audit records, within
        about a second. The state folder and `external_exclude` folders are not watched.
        """,
    ).tag(config=True)

    external_max_watches = Int(
        8192,
        help="""Most folders the external-change watcher watches (one inotify watch each).

        Past it, further folders are not watched and their changes are not recorded as they
        happen; the log says so once and one `watcher.limit` audit record notes it. The
        kernel's `fs.inotify.max_user_watches` (shared by the user's processes) caps it too.
        """,
    ).tag(config=True)

    external_exclude = List(
        Unicode(),
        default_value=list(DEFAULT_EXCLUDE),
        help="""Folder names the watcher skips wherever they are in the tree: git's own
        files, notebook checkpoints (the Contents API's copies) and bytecode caches.""",
    ).tag(config=True)

    def _link_jupyter_server_extension(self, serverapp: Any) -> None:
        """Turn terminals off for `patch_only` while the server is still being configured:
        the terminals extension reads `terminals_enabled` when it loads, after every
        extension is linked, so no terminal handler is ever registered."""
        super()._link_jupyter_server_extension(serverapp)
        if self.patch_only:
            serverapp.terminals_enabled = False

    @property
    def workspace_root(self) -> str:
        return str(self.serverapp.root_dir) if self.serverapp else "."

    def initialize_settings(self) -> None:
        stop_cleanly_on_sigint(self.serverapp)
        paths = WorkspacePaths(self.workspace_root)
        state = Path(self.state_dir)
        audit = AuditLog(state / "audit.jsonl")
        self.audit_forwarder = forwarder_from_env(
            audit, state / "audit-spool", self.audit_url, log=self.log
        )
        contents_manager = self.serverapp.contents_manager if self.serverapp else None
        allow_hidden = bool(getattr(contents_manager, "allow_hidden", False))
        patches = PatchManager(
            paths,
            state,
            audit,
            allow_offset=self.allow_offset,
            revert_keep=self.revert_keep,
            revert_max_age=self.revert_max_age,
            flush_mode=self.flush_mode,
            engine_processes=self.patch_engine_processes,
            log=self.log,
        )
        try:
            patches.recover()
        except CodeyardError as exc:  # an unwritable state folder: patches answer 507
            self.log.error("codeyard could not recover patch transactions: %s", exc.message)
        llm = CodeyardLLM(parent=self)
        builder = ContextBuilder(
            paths,
            TokenCounter(llm.tokenizer_file),
            budget=llm.context_token_budget,
            surrounding_lines=llm.surrounding_lines,
        )
        llm_files = FileReader(paths, max_size=self.max_file_size)
        self.settings.update(
            codeyard_paths=paths,
            codeyard_audit=audit,
            codeyard_state=patches.state_folder,
            codeyard_tree=TreeLister(paths, allow_hidden=allow_hidden),
            codeyard_files=FileReader(paths, max_size=self.max_file_size),
            codeyard_patches=patches,
            codeyard_tree_max=self.tree_max_entries,
            codeyard_explainer=Explainer(llm_files, builder, llm),
            codeyard_rewriter=Rewriter(llm_files, builder, llm, patches),
            codeyard_cells=CellPatcher(llm_files, patches),
            codeyard_completer=CodeyardCompleter(llm, paths, parent=self),
            **git_settings(self, audit=audit, patches=patches, llm=llm, counter=builder.counter),
            **events_settings(self, audit=audit),
            **exec_settings(self, audit=audit, paths=paths, state=patches.state_folder),
        )
        self.change_records = start_change_records(
            self.serverapp,
            str(paths.root),
            audit,
            patches.state_folder,
            state_dir=str(state),
            patch_only=self.patch_only,
            watch=self.external_changes,
            exclude=self.external_exclude,
            max_watches=self.external_max_watches,
            log=self.log,
        )

    def initialize_handlers(self) -> None:
        api = r"/codeyard/api"
        self.handlers.extend(
            [
                (rf"{api}/tree", TreeHandler),
                (rf"{api}/files", FilesHandler),
                (rf"{api}/patch/validate", PatchValidateHandler),
                (rf"{api}/patch/apply", PatchApplyHandler),
                (rf"{api}/patch/cell/validate", CellValidateHandler),
                (rf"{api}/patch/cell/apply", CellApplyHandler),
                (rf"{api}/patch/(?P<patch_id>[A-Za-z0-9_-]+)/revert", PatchRevertHandler),
                (rf"{api}/audit", AuditHandler),
                (rf"{api}/explain", ExplainHandler),
                (rf"{api}/rewrite", RewriteHandler),
                (rf"{api}/complete", CompleteHandler),
                (rf"{api}/status", StatusHandler),
            ]
        )
        self.handlers.extend(git_routes(api))
        self.handlers.extend(events_routes(api))
        self.handlers.extend(exec_routes(api))

    async def stop_extension(self) -> None:
        """Stop what writes audit records, retire answered patch transactions (a clean
        stop leaves no journal behind), then send what the audit spooled."""
        runs = self.settings.get("codeyard_exec")
        if runs is not None:  # stop every command first: their end records go to the audit
            await runs.shutdown()
        records = getattr(self, "change_records", None)
        if records is not None:
            await asyncio.to_thread(records.stop)
        patches = self.settings.get("codeyard_patches")
        if isinstance(patches, PatchManager):
            try:
                await asyncio.to_thread(patches.settle)
            except CodeyardError as exc:  # the state folder is unwritable; nothing to retire
                self.log.error("codeyard could not retire transactions: %s", exc.message)
        forwarder = getattr(self, "audit_forwarder", None)
        if forwarder is not None:  # last: the records of everything above go with it
            await asyncio.to_thread(forwarder.stop)


def stop_cleanly_on_sigint(serverapp: Any) -> bool:
    """Under a Hub, make SIGINT a clean stop, as SIGTERM is; return whether it was set.

    JupyterHub's local-process spawners stop a server with SIGINT (then SIGTERM 10 s later).
    A server without a terminal keeps Python's default for it, a `KeyboardInterrupt` that
    ends the event loop without `stop_extension`: running commands are not ended, spooled
    audit records are not sent, answered patch transactions are not retired. JupyterHub's
    own (non-extension) single-user app maps SIGINT to the clean stop for that reason; this
    does the same in extension mode. With a terminal, jupyter_server's prompt stays.
    """
    if serverapp is None or not os.environ.get("JUPYTERHUB_API_TOKEN"):
        return False
    if sys.stdin is not None and sys.stdin.isatty():
        return False
    if threading.current_thread() is not threading.main_thread():
        return False
    signal.signal(signal.SIGINT, serverapp._signal_stop)
    return True
