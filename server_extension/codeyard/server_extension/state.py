"""The private state folder (`state_dir`): its layout, and what happens when someone
deletes it or makes it unwritable.

In a Codeyard workspace the folder is `~/.codeyard`, beside the git working tree `~/work`
(CODEYARD_STATE_DIR), where the user's tools in the tree do not reach it. A folder inside
the tree (`.codeyard/` at the root, the default without that variable) is excluded from
git, yet `git clean -fdx` removes it (it is ignored, and `-x` removes ignored files too).
Either can still vanish at any moment (`rm -rf`). Every request that needs the folder
calls `StateFolder.ensure()` first (a handful of `lstat`s), which:

- recreates whatever is missing (the folder or any of its sub-folders), re-adds the
  folder to `.git/info/exclude`, and records a `state_lost` audit record that says what
  was missing. If the audit log itself was lost, that record is the first of a new chain,
  and it carries the last `seq` and `hash` of the chain that is gone;
- refuses with 507 `state_unwritable` when a part of the folder exists but cannot be
  written (read-only mount, immutable flag, a file where a folder belongs, no write
  permission), before anything in the workspace is touched.

Errors the file system reports later, in the middle of a request, are translated the same
way (`translate`), so a state problem never answers a bare 500.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .audit import AuditLog
from .errors import CodeyardError

#: Sub-folders of the state folder: transactions, throw-away work, reusable staging trees
#: and the revert store. The lock file and the audit log are made when first written.
STATE_PARTS = ("tx", "scratch", "spare", "patches")

#: What an operating system says when a folder exists but cannot take a write.
UNWRITABLE = frozenset(
    {
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.ENOSPC,
        errno.EDQUOT,
        errno.ELOOP,
    }
)


def git_dir_of(root: Path) -> Path | None:
    """The folder git keeps `info/exclude` in for the working tree at `root`, or None.

    `.git` is a folder in a plain clone and a `gitdir:` file in a linked worktree or a
    submodule; a linked worktree reads `info/exclude` from the common folder its
    `commondir` file names.
    """
    dot_git = root / ".git"
    try:
        if dot_git.is_dir():
            git_dir = dot_git
        elif dot_git.is_file():
            first = dot_git.read_text("utf-8").splitlines()[0]
            if not first.startswith("gitdir:"):
                return None
            git_dir = (root / first[len("gitdir:") :].strip()).resolve()
        else:
            return None
        common = git_dir / "commondir"
        if common.is_file():
            git_dir = (git_dir / common.read_text("utf-8").strip()).resolve()
    except (OSError, IndexError, UnicodeDecodeError):
        return None
    return git_dir if git_dir.is_dir() else None


class StateFolder:
    """Keeps the state folder there and usable; see the module docstring.

    `known_patches` names the patches whose revert data the store holds, so a
    `state_lost` record can list the ones that were lost (a revert of one of them then
    answers 410 `revert_data_lost`). `forget` is called after a loss so callers drop what
    they remember about the old folder's contents.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        path: str | os.PathLike[str],
        audit: AuditLog,
        *,
        known_patches: Callable[[], list[str]] = list,
        forget: Callable[[], None] = lambda: None,
        log: logging.Logger | Any | None = None,
    ) -> None:
        self.root = Path(root)
        self.path = Path(path)
        self.audit = audit
        self.known_patches = known_patches
        self.forget = forget
        self.log = log or logging.getLogger(__name__)
        self._lock = threading.Lock()
        # Until the folder has been seen complete once, a missing part is a first start,
        # not a loss.
        self._complete = False

    # ---- naming ---------------------------------------------------------------------

    def label(self, path: str | os.PathLike[str]) -> str:
        """`path` as the user knows it: relative to the workspace when inside it."""
        full = Path(os.path.abspath(path))
        try:
            return full.relative_to(os.path.abspath(self.root)).as_posix()
        except ValueError:
            return str(full)

    def exclude_pattern(self) -> str | None:
        """The `.git/info/exclude` line for the folder, or None when it is outside the root."""
        rel = self.label(self.path)
        return None if rel.startswith("/") or rel in ("", ".") else f"/{rel}/"

    # ---- errors ---------------------------------------------------------------------

    def unwritable(self, path: str | os.PathLike[str], why: str) -> CodeyardError:
        where = self.label(path)
        return CodeyardError(
            507,
            "state_unwritable",
            f"Codeyard cannot write its state folder: {where} {why}. Patches are refused "
            f"until it is writable again; nothing in the workspace was changed.",
            path=where,
        )

    def translate(self, exc: OSError) -> CodeyardError | None:
        """The clear error for a file-system failure inside the state folder, else None.

        A write the folder refused gives 507 `state_unwritable`; a part that vanished while
        the request ran (a `git clean` at that moment) gives 503 `state_changed`, and the
        next request rebuilds it.
        """
        inside = None
        for name in (exc.filename, getattr(exc, "filename2", None)):
            if isinstance(name, str | bytes | os.PathLike) and self._contains(name):
                inside = os.fsdecode(name)
                break
        if inside is None:
            return None
        if exc.errno in UNWRITABLE:
            return self.unwritable(inside, f"refused a write ({os.strerror(exc.errno or 0)})")
        if exc.errno == errno.ENOENT:
            return CodeyardError(
                503,
                "state_changed",
                f"Codeyard's state folder {self.label(self.path)} changed while the request "
                "ran (was it deleted?); nothing in the workspace was changed, try again",
            )
        return None

    def _contains(self, name: str | bytes | os.PathLike[Any]) -> bool:
        path = os.path.abspath(os.fsdecode(name))
        top = os.path.abspath(self.path)
        audit = os.path.abspath(self.audit.path)
        return path in (audit, top) or path.startswith(top + os.sep)

    # ---- keeping it there -------------------------------------------------------------

    def _folder(self, path: Path, missing: list[str], *, report: bool) -> None:
        """Make `path` if it is gone (noting it in `missing`); refuse a non-folder there."""
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                return self._folder(path, missing, report=report)
            except OSError as exc:
                why = f"cannot be made ({os.strerror(exc.errno or 0)})"
                raise self.unwritable(path, why) from exc
            if report:
                missing.append(self.label(path))
            return None
        except NotADirectoryError:
            raise self.unwritable(path.parent, "is not a folder") from None
        if not stat.S_ISDIR(info.st_mode):
            raise self.unwritable(path, "is not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise self.unwritable(path, "is not writable")
        return None

    def ensure(self) -> list[str]:
        """Make the folder usable for one request; return what had to be recreated.

        Raises 507 `state_unwritable` if it cannot be. Costs a few `lstat` and `access`
        calls when nothing is wrong.
        """
        with self._lock:
            missing: list[str] = []
            report = self._complete
            if not self.path.parent.exists():
                try:
                    self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                except OSError as exc:
                    raise self.unwritable(self.path.parent, "cannot be made") from exc
            self._folder(self.path, missing, report=report)
            whole = bool(missing)  # the folder itself was gone: its parts are not listed
            for part in STATE_PARTS:
                self._folder(self.path / part, missing, report=report and not whole)
            lost_chain = self.audit.lost()
            if lost_chain is not None and not (whole and self._contains(self.audit.path)):
                missing.append(self.label(self.audit.path))
            if os.path.isdir(self.audit.path):
                raise self.unwritable(self.audit.path, "is a folder, not a file")
            if os.path.lexists(self.audit.path) and not os.access(self.audit.path, os.W_OK):
                raise self.unwritable(self.audit.path, "is not writable")
            self._complete = True
            if missing:
                self._record_loss(missing, lost_chain, whole)
            return missing

    def _record_loss(
        self, missing: list[str], lost_chain: tuple[int, str] | None, whole: bool
    ) -> None:
        revert_lost = whole or self.label(self.path / "patches") in missing
        lost_patches = sorted(self.known_patches()) if revert_lost else []
        self.forget()
        self.hide_from_git()
        meta: dict[str, Any] = {"missing": missing, "lost_patches": lost_patches}
        if lost_chain is not None:
            meta["lost_chain"] = {"seq": lost_chain[0], "hash": lost_chain[1]}
        self.audit.append(user="codeyard", action="state_lost", paths=[], **meta)
        self.log.warning(
            "codeyard state lost (%s); recreated it, revert data of %d patches is gone",
            ", ".join(missing),
            len(lost_patches),
        )

    def start(self) -> None:
        """At server start: make the folder (or say why not) and hide it from git.

        A folder that is gone while something says it was made before was deleted while
        the server was down; that is recorded as a loss too. Inside the working tree the
        witness is its `.git/info/exclude` line; outside it (the usual layout, beside the
        tree) it is the `witness()` file next to the folder. An unwritable folder is
        logged, not raised: the server starts, and each patch request answers 507.
        """
        pattern = self.exclude_pattern()
        witness = self.witness()
        was_there = os.path.lexists(self.path)
        excluded = pattern is not None and pattern in self._exclude_lines()
        made_before = witness is not None and os.path.lexists(witness)
        try:
            self.ensure()
        except CodeyardError as exc:
            self.log.error("codeyard: %s", exc.message)
            return
        self.hide_from_git()
        if witness is not None and not made_before:
            try:
                witness.touch(0o600)
            except OSError as exc:
                self.log.warning("codeyard: cannot write %s: %s", witness, exc)
        if not was_there and (excluded or made_before):
            with self._lock:
                self._record_loss([self.label(self.path)], None, True)

    def witness(self) -> Path | None:
        """For a folder outside the working tree: the file beside it that says it was made
        once, so a folder gone at the next start is a loss, not a first start. None inside
        the tree, where the `.git/info/exclude` line says the same."""
        if self.exclude_pattern() is not None:
            return None
        return self.path.with_name(f"{self.path.name}.made")

    # ---- git ------------------------------------------------------------------------

    def _exclude_file(self) -> Path | None:
        git_dir = git_dir_of(self.root)
        return None if git_dir is None else git_dir / "info" / "exclude"

    def _exclude_lines(self) -> list[str]:
        exclude = self._exclude_file()
        if exclude is None:
            return []
        try:
            return [line.strip() for line in exclude.read_text("utf-8").splitlines()]
        except (OSError, UnicodeDecodeError):
            return []

    def hide_from_git(self) -> bool:
        """Add the folder to `.git/info/exclude` if the root is a git working tree.

        `info/exclude` rather than `.gitignore`: it is local to this clone, so nothing the
        user commits changes. Idempotent; a failure is logged, never raised (hiding the
        folder is a courtesy, the patches work without it). Returns whether it is listed.
        """
        pattern = self.exclude_pattern()
        exclude = self._exclude_file()
        if pattern is None or exclude is None:
            return False
        if pattern in self._exclude_lines():
            return True
        try:
            exclude.parent.mkdir(parents=True, exist_ok=True)
            try:
                text = exclude.read_bytes()
            except FileNotFoundError:
                text = b""
            lead = b"\n" if text and not text.endswith(b"\n") else b""
            with exclude.open("ab") as fh:
                fh.write(lead + b"# Codeyard's private state (audit log, revert data)\n")
                fh.write(pattern.encode("utf-8") + b"\n")
        except OSError as exc:
            self.log.warning("codeyard could not add %s to %s: %s", pattern, exclude, exc)
            return False
        return True
