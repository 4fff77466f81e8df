"""The git operations behind `git/status`, `git/log`, `git/commit`, `git/pull` and `git/push`.

Everything is done by `git` itself (`runner.GitRunner`); this module decides what to ask,
turns git's answers into clear `CodeyardError`s, and keeps three promises:

- A failed operation leaves the working tree and the index as they were. A commit stages
  into a scratch copy of the index (`GIT_INDEX_FILE`), holding git's own `index.lock` on
  the real one meanwhile; only a commit that succeeded puts its index in place (one
  rename, git's lock-file protocol). A hook that fails, a timeout, anything: the real
  index was never touched. A pull is `fetch` then `merge --ff-only`, which either moves
  the branch and the files or refuses before writing anything.
- One change at a time: a thread lock serialises commit, pull and push, and the steps
  that write the working tree or the index also hold the patch engine's journal lock, so
  a commit never sees a half-applied patch and a patch never lands in the middle of a pull.
- The audit log gets one record per change (`git_commit`, `git_pull`, `git_push`): commit
  hashes, branch and remote names, counts, the commit message's sha256. Never the message,
  a diff, a remote URL (it may carry a token) or a hook's output.

Paths in requests and answers are relative to the repository's top folder, the way
`git status` lists them, and reach git as `:(top,literal)` pathspecs, so `*` or `:` in a
file name is just a character.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import posixpath
import re
import shlex
import shutil
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from traitlets import Bool, Float, Int, Unicode, validate
from traitlets.config import LoggingConfigurable

from ..audit import AuditLog
from ..errors import CodeyardError, bad_request, conflict
from . import credential_helper
from .porcelain import parse_status
from .runner import GitResult, GitRunner

log = logging.getLogger(__name__)

#: Hooks `git commit` runs before it writes the commit; a failure of one stops it.
COMMIT_HOOKS = ("pre-commit", "prepare-commit-msg", "commit-msg")
#: Longest hook output tail returned to the user (the user's own text; never logged).
HOOK_OUTPUT_CHARS = 4000
#: Most paths one audit record or one commit answer lists (the count is always exact).
LISTED_PATHS = 200
MAX_MESSAGE_CHARS = 20_000
MAX_REQUEST_PATHS = 1000

#: Settings for commits, pulls and pushes that are not the user's to keep: no automatic
#: gc or maintenance in the middle of a request (it can take minutes and holds locks).
QUIET = ("gc.auto=0", "maintenance.auto=false")

_AUTH_FAILED = re.compile(
    r"Authentication failed|terminal prompts disabled|could not read (Username|Password)"
    r"|Permission denied \(|HTTP Basic: Access denied|returned error: 40[13]"
    r"|Invalid username or password|Host key verification failed",
    re.IGNORECASE,
)
_UNREACHABLE = re.compile(
    r"Could not resolve host|Connection refused|Connection timed out|Network is unreachable"
    r"|No route to host|Could not read from remote repository|unable to access"
    r"|does not appear to be a git repository|Operation timed out|Connection reset"
    r"|early EOF|the remote end hung up|unable to connect|Name or service not known"
    r"|Temporary failure in name resolution",
    re.IGNORECASE,
)


class CodeyardGit(LoggingConfigurable):
    """Settings of the git endpoints (`c.CodeyardGit.*`)."""

    timeout = Float(
        120.0,
        help="""Seconds a local git command may take (a commit with its hooks, a merge, a
        status) before it is stopped with its hooks and the request answers 504
        `git_timeout`. A stopped commit leaves the index as it was.""",
    ).tag(config=True)

    network_timeout = Float(
        180.0,
        help="""Seconds a `fetch` or `push` may take, including the remote's side and any
        ssh, before it is stopped and the request answers 504 `git_timeout`.""",
    ).tag(config=True)

    lock_timeout = Float(
        30.0,
        help="""Seconds a commit, pull or push waits for another one (or a patch apply) to
        finish before it answers 409 `git_busy`.""",
    ).tag(config=True)

    log_max = Int(
        200, help="""Largest `limit` of `GET git/log`; a request asking for more gets 400."""
    ).tag(config=True)

    status_max_files = Int(
        5000,
        help="""Most changed paths `GET git/status` lists; `truncated` says when there were
        more. Untracked folders are listed once, as `folder/`, the way `git status` does.""",
    ).tag(config=True)

    email_domain = Unicode(
        "users.noreply.codeyard",
        help="""When git has no identity configured (no `user.email` or `GIT_AUTHOR_EMAIL`),
        commits are made as `<JUPYTERHUB_USER>@<email_domain>`, named after the user.
        Nothing is written to any git config; a configured identity always wins.""",
    ).tag(config=True)

    hub_credentials = Bool(
        True,
        help="""Pull and push with the git credential stored for this workspace in the Hub:
        each fetch or push runs with Codeyard's credential helper
        (`git/credential_helper.py`, named with `-c credential.helper=` for that command
        only), which asks the Hub with the server's own token at each operation, so the
        credential is never written into the workspace. It replaces the user's own
        credential helpers for those commands (one of them could store the credential).
        Only when the server runs under a Hub (JUPYTERHUB_API_URL, JUPYTERHUB_USER and
        JUPYTERHUB_API_TOKEN set); otherwise, or when False, git uses the workspace's own
        configuration (an ssh agent, keys, the user's helpers).""",
    ).tag(config=True)

    message_max_tokens = Int(
        120, help="""Longest commit message the model may propose, in tokens."""
    ).tag(config=True)

    message_diff_tokens = Int(
        1500,
        help="""Most tokens of diff put in a commit-message prompt. Files beyond it are
        named, without their diff (the answer's `usage.context_dropped` lists them).""",
    ).tag(config=True)

    @validate(
        "timeout",
        "network_timeout",
        "lock_timeout",
        "log_max",
        "status_max_files",
        "message_max_tokens",
        "message_diff_tokens",
    )
    def _positive(self, proposal: Any) -> Any:
        if proposal["value"] <= 0:
            raise ValueError(f"{proposal['trait'].name} must be positive")
        return proposal["value"]


@dataclass(frozen=True)
class Repo:
    """Where the repository around the workspace keeps things (absolute paths)."""

    top: Path
    git_dir: Path
    index: Path
    hooks: Path
    prefix: str  # the workspace root's folder inside the repository, "" at the top


@dataclass(frozen=True)
class Head:
    branch: str | None  # None when detached
    commit: str | None  # None on an unborn branch


@dataclass
class Staged:
    """A scratch index holding what a commit would commit, and what that is."""

    env: dict[str, str]
    changes: list[tuple[str, str, str | None]]  # (status letter, path, renamed-from)


def _tail(text: str, limit: int = HOOK_OUTPUT_CHARS) -> str:
    text = text.strip()
    return text if len(text) <= limit else "…" + text[-limit:]


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def parse_paths(value: Any) -> list[str] | None:
    """A request's `paths`: None for every change, else checked repository-relative paths."""
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise bad_request("paths must be a non-empty list of paths (or left out for all)")
    if len(value) > MAX_REQUEST_PATHS:
        raise bad_request(f"paths may name at most {MAX_REQUEST_PATHS} paths")
    out = []
    for item in value:
        if not isinstance(item, str) or not item or "\0" in item:
            raise bad_request("each path must be a non-empty string without NUL")
        if item.startswith("/") or "\\" in item:
            raise bad_request(f"paths are relative to the repository's top folder: {item!r}")
        folder = item.endswith("/")
        norm = posixpath.normpath(item)
        if norm == ".." or norm.startswith("../") or norm == ".":
            raise bad_request(f"path {item!r} leaves the repository")
        out.append(norm + ("/" if folder else ""))
    return out


def parse_message(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise bad_request("message is required and must not be empty", field="message")
    if "\0" in value:
        raise bad_request("message must not contain NUL", field="message")
    if len(value) > MAX_MESSAGE_CHARS:
        raise bad_request(f"message is longer than {MAX_MESSAGE_CHARS} characters")
    return value


def parse_name(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value or value.startswith("-") or "\0" in value:
        raise bad_request(f"{key} must be a name that does not start with '-'", field=key)
    return value


class GitManager:
    """Git for one workspace: read its state, commit, pull, push."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        config: CodeyardGit,
        audit: AuditLog,
        *,
        patches: Any = None,
        state_dir: str | os.PathLike[str] | None = None,
        user_name: str | None = None,
    ) -> None:
        self.root = Path(os.path.realpath(root))
        self.config = config
        self.audit = audit
        # The patch engine (`PatchManager`): its journal lock keeps applies and git apart,
        # and its state folder is made (or refused with 507) before an audit record.
        self.patches = patches
        self.state_dir = Path(os.path.realpath(state_dir)) if state_dir else None
        # Commits are made as this user when git has no identity; None: JUPYTERHUB_USER
        # (read at each commit), else the name the request was authenticated as.
        self.user_name = user_name
        self.runner = GitRunner(str(self.root))
        self._lock = threading.Lock()

    # ---- plumbing ---------------------------------------------------------------------

    def git(self, *args: str, **kw: Any) -> GitResult:
        kw.setdefault("timeout", self.config.timeout)
        return self.runner.run(list(args), **kw)

    def repo(self) -> Repo:
        """The repository the workspace root is in, or 409 `not_a_repository`."""
        r = self.git(
            "rev-parse",
            "--show-toplevel",
            "--absolute-git-dir",
            "--git-path",
            "index",
            "--git-path",
            "hooks",
            "--show-prefix",
        )
        if not r.ok:
            if "dubious ownership" in r.err:
                raise conflict(
                    "unsafe_repository",
                    "git refuses this repository: it is owned by another user (see "
                    "`git config safe.directory`)",
                )
            if "not a git repository" in r.err or "must be run in a work tree" in r.err:
                raise conflict(
                    "not_a_repository",
                    "the workspace is not in a git repository; clone one or run `git init`",
                )
            raise CodeyardError(500, "git_failed", "git could not read the repository")
        lines = r.out.split("\n")
        top, git_dir, index, hooks = lines[:4]
        prefix = lines[4] if len(lines) > 4 else ""
        return Repo(
            top=Path(top),
            git_dir=Path(git_dir),
            index=self.root / index,
            hooks=self.root / hooks,
            prefix=prefix.rstrip("/"),
        )

    def head(self) -> Head:
        branch = self.git("symbolic-ref", "--quiet", "--short", "HEAD")
        commit = self.git("rev-parse", "--verify", "--quiet", "HEAD^{commit}")
        return Head(
            branch=branch.out.strip() if branch.ok else None,
            commit=commit.out.strip() if commit.ok else None,
        )

    def operation(self, repo: Repo) -> str | None:
        """A merge, rebase, cherry-pick, revert or bisect someone left in progress."""
        marks = {
            "MERGE_HEAD": "merge",
            "rebase-merge": "rebase",
            "rebase-apply": "rebase",
            "CHERRY_PICK_HEAD": "cherry-pick",
            "REVERT_HEAD": "revert",
            "BISECT_LOG": "bisect",
        }
        for name, what in marks.items():
            if (repo.git_dir / name).exists():
                return what
        return None

    def remotes(self) -> list[str]:
        return [line for line in self.git("remote").out.splitlines() if line]

    def upstream(self, branch: str) -> tuple[str | None, str | None]:
        """(remote, remote ref) the branch tracks; `(None, None)` without one."""
        r = self.git(
            "for-each-ref",
            "--format=%(upstream:remotename)%00%(upstream:remoteref)",
            f"refs/heads/{branch}",
        )
        remote, _, ref = r.out.rstrip("\n").partition("\0")
        if not remote or remote == ".":
            return None, None
        return remote, ref or None

    def state_rel(self, repo: Repo) -> str | None:
        """The state folder's path inside the repository, if it is inside: never committed."""
        if self.state_dir is None:
            return None
        try:
            return self.state_dir.relative_to(repo.top).as_posix()
        except ValueError:
            return None

    def pathspecs(self, repo: Repo, paths: list[str] | None) -> list[str]:
        """Literal, top-relative pathspecs; everything when `paths` is None. The state
        folder is always left out, even where `.git/info/exclude` does not name it."""
        specs = [f":(top,literal){p}" for p in paths] if paths else [":(top)"]
        state = self.state_rel(repo)
        if state:
            specs.append(f":(top,exclude,literal){state}")
        return specs

    def hooks_present(self, repo: Repo, names: tuple[str, ...]) -> list[str]:
        return [n for n in names if os.access(repo.hooks / n, os.X_OK)]

    @contextlib.contextmanager
    def serialised(self, *, tree: bool) -> Iterator[None]:
        """One git change at a time; with `tree`, also no patch apply meanwhile."""
        if not self._lock.acquire(timeout=self.config.lock_timeout):
            raise conflict(
                "git_busy",
                "another git operation in this workspace is still running; try again",
            )
        try:
            if tree and self.patches is not None:
                with self.patches.journal.locked():
                    yield
            else:
                # The audit log must be writable before anything is done (507 if not).
                state = getattr(self.patches, "state_folder", None)
                if state is not None:
                    state.ensure()
                yield
        finally:
            self._lock.release()

    @contextlib.contextmanager
    def index_locked(self, repo: Repo) -> Iterator[Path]:
        """Hold git's `index.lock` on the real index: git's own commands wait out ours."""
        lock = Path(f"{repo.index}.lock")
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            raise conflict(
                "index_locked",
                "another git process is using the index (.git/index.lock exists); if none "
                "is running, a crashed one left it and it can be removed",
            ) from None
        os.close(fd)
        try:
            yield lock
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)

    @contextlib.contextmanager
    def scratch_index(self, repo: Repo) -> Iterator[Path]:
        """A copy of the index (in the git folder, so it can be renamed into place), with
        the index's own modification time.

        Git takes a file whose size and times (in whole seconds) match its index entry as
        unchanged unless the entry is no older than the index file ("racy git"): then it
        reads the file. A copy stamped a second later than the index would make an edit
        made within the second of the last index write invisible to `git add`.
        """
        scratch = repo.git_dir / f"codeyard-index-{uuid.uuid4().hex}"
        # No index yet (a fresh repository): git treats a missing one as empty.
        with contextlib.suppress(FileNotFoundError):
            shutil.copy2(repo.index, scratch)
        try:
            yield scratch
        finally:
            for leftover in (scratch, Path(f"{scratch}.lock")):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(leftover)

    def stage(self, repo: Repo, index: Path, paths: list[str] | None, head: Head) -> Staged:
        """`git add -A` into the scratch `index`; what the commit would hold, vs HEAD."""
        env = {"GIT_INDEX_FILE": str(index)}
        specs = self.pathspecs(repo, paths)
        # `git add` refuses a pathspec that names an ignored path, even to exclude it, and
        # the state folder is ignored wherever `.git/info/exclude` names it (the state
        # folder writes that line): add without it, then put it back in the scratch index
        # as HEAD has it (nothing, unless an old commit holds it).
        state = self.state_rel(repo)
        add_specs = [s for s in specs if not s.startswith(":(top,exclude,")]
        added = self.git("add", "-A", "--", *add_specs, env=env)
        if added.ok and state:
            state_spec = f":(top,literal){state}"
            if head.commit:
                added = self.git("reset", "-q", head.commit, "--", state_spec, env=env)
            else:
                added = self.git(
                    "rm", "-r", "-q", "--cached", "--ignore-unmatch", "--", state_spec, env=env
                )
        if not added.ok:
            if "did not match any file" in added.err:
                raise CodeyardError(
                    404, "path_not_found", "a path in `paths` matches no file, changed or not"
                )
            raise CodeyardError(500, "git_failed", "git add failed: " + _last_line(added.err))
        base = head.commit or self.empty_tree()
        diff = self.git(
            "diff", "--cached", "--name-status", "-z", "-M", base, "--", *specs, env=env
        )
        fields = diff.out.split("\0")
        changes: list[tuple[str, str, str | None]] = []
        i = 0
        while i < len(fields) and fields[i]:
            letter = fields[i][0]
            if letter in "RC":
                changes.append((letter, fields[i + 2], fields[i + 1]))
                i += 3
            else:
                changes.append((letter, fields[i + 1], None))
                i += 2
        return Staged(env=env, changes=changes)

    def empty_tree(self) -> str:
        return self.git("hash-object", "-t", "tree", "/dev/null").out.strip()

    # ---- reading ----------------------------------------------------------------------

    def repository(self) -> dict[str, Any]:
        """Whether the workspace is in a git repository, as an answer rather than an error:
        `{"repository": true, "prefix": ...}`, or false with the reason's code and message.
        A client asks this first, so that a folder without git is not a failed request."""
        try:
            repo = self.repo()
        except CodeyardError as e:
            if e.status != 409:
                raise
            return {"repository": False, "error": e.code, "message": e.message}
        return {"repository": True, "prefix": repo.prefix}

    def status(self) -> dict[str, Any]:
        repo = self.repo()
        # No optional locks: a status must not take index.lock from a commit in progress.
        r = self.git(
            "status",
            "--porcelain=v2",
            "-z",
            "--branch",
            "--untracked-files=normal",
            env={"GIT_OPTIONAL_LOCKS": "0"},
        )
        if not r.ok:
            raise CodeyardError(500, "git_failed", "git status failed: " + _last_line(r.err))
        parsed = parse_status(r.out)
        state = self.state_rel(repo)
        files = [f for f in parsed.files if not _inside(f["path"], state)]
        cap = self.config.status_max_files
        branch = parsed.branch
        remote, ref = self.upstream(branch.name) if branch.name else (None, None)
        return {
            "repository": True,
            "prefix": repo.prefix,
            "branch": branch.name,
            "detached": branch.name is None,
            "head": branch.head,
            "unborn": branch.head is None,
            "upstream": branch.upstream,
            "upstream_remote": remote,
            "upstream_branch": ref.removeprefix("refs/heads/") if ref else None,
            "ahead": branch.ahead,
            "behind": branch.behind,
            "remotes": self.remotes(),
            "operation": self.operation(repo),
            "clean": not files,
            "files": files[:cap],
            "truncated": len(files) > cap,
        }

    def log(self, limit: int) -> dict[str, Any]:
        self.repo()
        head = self.head()
        commits: list[dict[str, Any]] = []
        if head.commit is not None:
            r = self.git(
                "log",
                f"--max-count={limit}",
                "-z",
                "--no-show-signature",
                "--format=%H%x1f%h%x1f%an%x1f%ae%x1f%aI%x1f%s",
                "HEAD",
                "--",
            )
            if not r.ok:
                raise CodeyardError(500, "git_failed", "git log failed: " + _last_line(r.err))
            for record in r.out.split("\0"):
                record = record.strip("\n")
                if not record:
                    continue
                full, short, name, email, date, subject = record.split("\x1f", 5)
                commits.append(
                    {
                        "hash": full,
                        "short": short,
                        "author": name,
                        "email": email,
                        "date": date,
                        "subject": subject,
                    }
                )
        return {"branch": head.branch, "head": head.commit, "commits": commits}

    def pending(self, paths: list[str] | None) -> tuple[list[tuple[str, str, str | None]], str]:
        """What a commit of `paths` would hold: (changes, `git diff` text). Changes nothing:
        staging goes to a scratch index that is thrown away."""
        repo = self.repo()
        head = self.head()
        with self.scratch_index(repo) as index:
            staged = self.stage(repo, index, paths, head)
            if not staged.changes:
                return [], ""
            base = head.commit or self.empty_tree()
            diff = self.git(
                "diff",
                "--cached",
                "-M",
                "--no-color",
                "--no-ext-diff",
                "--no-textconv",
                base,
                "--",
                *self.pathspecs(repo, paths),
                env=staged.env,
            )
        return staged.changes, diff.out

    # ---- changing ---------------------------------------------------------------------

    def identity_env(self, user: str) -> dict[str, str]:
        """`GIT_AUTHOR_*`/`GIT_COMMITTER_*` for what git has no configured value for.

        Asks git itself (`user.useConfigOnly`, so it does not guess `root@container`),
        which honours every place an identity can come from: config, `author.*`, env.
        """
        name = self.user_name or os.environ.get("JUPYTERHUB_USER") or user
        local = re.sub(r"[^A-Za-z0-9._+-]", "-", name).strip(".-") or "user"
        env: dict[str, str] = {}
        for role in ("AUTHOR", "COMMITTER"):
            for _ in range(3):
                r = self.git(
                    "var", f"GIT_{role}_IDENT", env=env, config=["user.useConfigOnly=true"]
                )
                if r.ok:
                    break
                if "no email was given" in r.err:
                    env[f"GIT_{role}_EMAIL"] = f"{local}@{self.config.email_domain}"
                elif "no name was given" in r.err or "empty ident name" in r.err:
                    env[f"GIT_{role}_NAME"] = name
                else:
                    raise conflict(
                        "identity_missing",
                        "git has no usable identity for commits: " + _last_line(r.err),
                    )
        return env

    def commit(self, message: str, paths: list[str] | None, *, user: str) -> dict[str, Any]:
        """Commit every change (or only `paths`, as `git commit --only` does) on the
        current branch; the hooks run. Refuses a detached HEAD: such a commit is on no
        branch and is lost from view at the next checkout."""
        repo = self.repo()
        with self.serialised(tree=True):
            head = self.head()
            if head.branch is None:
                raise conflict(
                    "detached_head",
                    f"HEAD is detached at {head.commit and head.commit[:12]}: a commit here "
                    "would be on no branch. Check out a branch (or create one) first.",
                    head=head.commit,
                )
            self._refuse_operation(repo)
            ident = self.identity_env(user)
            with self.index_locked(repo) as lock, self.scratch_index(repo) as index:
                staged = self.stage(repo, index, paths, head)
                if not staged.changes:
                    raise conflict(
                        "nothing_to_commit",
                        "there are no changes to commit" + (" in the given paths" if paths else ""),
                    )
                args = ["commit", "--quiet", "-F", "-"]
                if paths:
                    args += ["--only", "--", *self.pathspecs(repo, paths)]
                result = self.git(
                    *args,
                    env={**staged.env, **ident},
                    stdin=message.encode("utf-8"),
                    config=QUIET,
                )
                after = self.head()
                if not result.ok or after.commit == head.commit:
                    raise self._commit_error(repo, result)
                # The scratch index is what git left after the commit: it becomes the index.
                os.replace(index, lock)
                os.replace(lock, repo.index)
            author = self.git("log", "-1", "--format=%an <%ae>", "HEAD").out.strip()
            changed = [path for _, path, _ in staged.changes]
            self.audit.append(
                user=user,
                action="git_commit",
                paths=changed[:LISTED_PATHS],
                commit=after.commit,
                parent=head.commit,
                branch=head.branch,
                files=len(changed),
                message_sha256=_sha256(message),
                only_paths=paths is not None,
            )
        return {
            "commit": after.commit,
            "parent": head.commit,
            "branch": head.branch,
            "author": author,
            "files": len(changed),
            "paths": changed[:LISTED_PATHS],
        }

    def _refuse_operation(self, repo: Repo) -> None:
        what = self.operation(repo)
        if what:
            raise conflict(
                "operation_in_progress",
                f"a {what} is in progress in this repository; finish or abort it in a "
                "terminal first",
                operation=what,
            )

    def _commit_error(self, repo: Repo, result: GitResult) -> CodeyardError:
        err = result.err
        if "unmerged files" in err or "unresolved conflict" in err:
            return conflict("unmerged_files", "some files still have merge conflicts")
        if "gpg failed" in err or "failed to sign" in err:
            return conflict("signing_failed", "git could not sign the commit (commit.gpgSign)")
        if "Author identity unknown" in err or "empty ident" in err:
            return conflict("identity_missing", "git has no usable identity for commits")
        hooks = self.hooks_present(repo, COMMIT_HOOKS)
        if hooks:
            # The hook's output is the user's own and is returned to them; it stays out of
            # the message, which is what gets logged.
            return conflict(
                "hook_failed",
                f"a commit hook ({', '.join(hooks)}) refused the commit; nothing was "
                "committed and the index is as it was",
                hooks=hooks,
                hook_output=_tail(result.out + "\n" + result.err),
            )
        return conflict("commit_failed", "git commit failed: " + _last_line(err))

    def remote_access(self) -> tuple[tuple[str, ...], dict[str, str]]:
        """The `-c` settings and environment of one fetch or push: the Hub's credential
        helper, and what it needs to ask the Hub (the server's token under a name of its
        own, given to this command only). Nothing when not under a Hub or turned off."""
        if not self.config.hub_credentials:
            return (), {}
        token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
        env = {k: os.environ[k] for k in credential_helper.HUB_ENV if k in os.environ}
        if not token or not env.get("JUPYTERHUB_API_URL") or not env.get("JUPYTERHUB_USER"):
            return (), {}
        env[credential_helper.TOKEN_ENV] = token
        helper = shlex.join([sys.executable, "-I", os.path.abspath(credential_helper.__file__)])
        # The empty value first drops every helper from the user's config for this command.
        return ("credential.helper=", f"credential.helper=!{helper}"), env

    def target(
        self, branch: str, remote: str | None, remote_branch: str | None
    ) -> tuple[str, str, bool]:
        """(remote, remote branch, has an upstream) a pull or push of `branch` talks to."""
        remotes = self.remotes()
        if not remotes:
            raise conflict(
                "no_remote",
                "this repository has no remote; add one (`git remote add origin <url>`)",
            )
        up_remote, up_ref = self.upstream(branch)
        if remote is None:
            if up_remote:
                remote = up_remote
            elif "origin" in remotes:
                remote = "origin"
            elif len(remotes) == 1:
                remote = remotes[0]
            else:
                raise bad_request(
                    "this branch has no upstream and there are several remotes; name one",
                    remotes=remotes,
                )
        elif remote not in remotes:
            raise conflict("no_remote", f"there is no remote named {remote!r}", remotes=remotes)
        if remote_branch is None:
            if up_remote == remote and up_ref and up_ref.startswith("refs/heads/"):
                remote_branch = up_ref.removeprefix("refs/heads/")
            else:
                remote_branch = branch
        if not self.git("check-ref-format", f"refs/heads/{remote_branch}").ok:
            raise bad_request(f"{remote_branch!r} is not a valid branch name", field="branch")
        return remote, remote_branch, up_remote is not None

    def _remote_error(self, result: GitResult, remote: str, verb: str) -> CodeyardError:
        """A failed fetch or push, in words that do not quote git (it may print the URL,
        and a URL may hold a token)."""
        err = result.err
        if "couldn't find remote ref" in err:
            return conflict(
                "remote_branch_missing",
                f"the remote {remote!r} has no such branch",
                remote=remote,
            )
        if _AUTH_FAILED.search(err):
            return conflict("remote_auth_failed", _auth_message(err, remote, verb), remote=remote)
        if _UNREACHABLE.search(err):
            return CodeyardError(
                502,
                "remote_unreachable",
                f"the remote {remote!r} could not be reached for {verb}",
                remote=remote,
            )
        return CodeyardError(
            502, "remote_error", f"{verb} from the remote {remote!r} failed", remote=remote
        )

    def pull(self, remote: str | None, remote_branch: str | None, *, user: str) -> dict[str, Any]:
        """`git fetch` then `git merge --ff-only`: the branch moves to the remote's commit
        or nothing changes. Never a merge commit, never conflict markers in files."""
        repo = self.repo()
        with self.serialised(tree=False):
            head = self.head()
            if head.branch is None:
                raise conflict(
                    "detached_head",
                    "HEAD is detached: check out a branch before pulling",
                    head=head.commit,
                )
            self._refuse_operation(repo)
            remote, remote_branch, _ = self.target(head.branch, remote, remote_branch)
            access, access_env = self.remote_access()
            fetched = self.git(
                "fetch",
                remote,
                f"refs/heads/{remote_branch}",
                timeout=self.config.network_timeout,
                config=QUIET + access,
                env=access_env,
            )
            if not fetched.ok:
                raise self._remote_error(fetched, remote, "pull")
            incoming = self.git("rev-parse", "--verify", "--quiet", "FETCH_HEAD^{commit}")
            if not incoming.ok:
                raise CodeyardError(500, "git_failed", "git fetch left no FETCH_HEAD")
            theirs = incoming.out.strip()
            # Only the merge writes files and the index: that step waits for patch applies.
            with self.patches.journal.locked() if self.patches else contextlib.nullcontext():
                now = self.head()
                if now != head:
                    raise conflict("head_moved", "the branch moved during the pull; try again")
                self._refuse_operation(repo)
                merged = self.git("merge", "--ff-only", "--quiet", theirs, config=QUIET)
                if not merged.ok:
                    raise self._merge_error(merged, head, theirs, remote, remote_branch)
                after = self.head()
            files = 0
            if after.commit and head.commit != after.commit:
                base = head.commit or self.empty_tree()
                names = self.git("diff", "--name-only", "-z", base, after.commit)
                files = len([n for n in names.out.split("\0") if n])
            self.audit.append(
                user=user,
                action="git_pull",
                paths=[],
                branch=head.branch,
                remote=remote,
                remote_branch=remote_branch,
                before=head.commit,
                after=after.commit,
                files=files,
            )
        return {
            "branch": head.branch,
            "remote": remote,
            "remote_branch": remote_branch,
            "before": head.commit,
            "after": after.commit,
            "updated": head.commit != after.commit,
            "files": files,
        }

    def _merge_error(
        self, result: GitResult, head: Head, theirs: str, remote: str, remote_branch: str
    ) -> CodeyardError:
        err = result.err
        if "Not possible to fast-forward" in err or "not possible to fast-forward" in err:
            counts = self.git("rev-list", "--left-right", "--count", f"HEAD...{theirs}").out.split()
            ahead, behind = (int(counts[0]), int(counts[1])) if len(counts) == 2 else (None, None)
            return conflict(
                "diverged",
                f"this branch and {remote}/{remote_branch} have diverged ({ahead} local and "
                f"{behind} remote commits): a fast-forward is not possible. Nothing was "
                "changed; merge or rebase in a terminal.",
                ahead=ahead,
                behind=behind,
            )
        if "would be overwritten" in err:
            paths = [line.strip() for line in err.splitlines() if line.startswith("\t")]
            return conflict(
                "local_changes",
                "the pull would overwrite local changes; commit them first. Nothing was changed.",
                paths=paths[:LISTED_PATHS],
            )
        return conflict("pull_failed", "git merge --ff-only failed: " + _last_line(err))

    def push(self, remote: str | None, remote_branch: str | None, *, user: str) -> dict[str, Any]:
        """Push the current branch, never forced. Without an upstream, the first push sets
        it (`--set-upstream`), which writes the remote's and branch's names to the config,
        nothing else."""
        repo = self.repo()
        with self.serialised(tree=False):
            head = self.head()
            if head.branch is None:
                raise conflict(
                    "detached_head",
                    "HEAD is detached: check out a branch before pushing",
                    head=head.commit,
                )
            if head.commit is None:
                raise conflict("nothing_to_push", "this branch has no commits yet")
            remote, remote_branch, tracked = self.target(head.branch, remote, remote_branch)
            args = ["push", "--porcelain"]
            if not tracked:
                args.append("--set-upstream")
            args += [remote, f"refs/heads/{head.branch}:refs/heads/{remote_branch}"]
            access, access_env = self.remote_access()
            result = self.git(
                *args, timeout=self.config.network_timeout, config=QUIET + access, env=access_env
            )
            rows = _push_rows(result.out)
            row = rows[0] if rows else None
            if not result.ok or row is None or row[0] == "!":
                raise self._push_error(repo, result, row, remote)
            flag = row[0]
            self.audit.append(
                user=user,
                action="git_push",
                paths=[],
                branch=head.branch,
                remote=remote,
                remote_branch=remote_branch,
                commit=head.commit,
                created=flag == "*",
                up_to_date=flag == "=",
                upstream_set=not tracked,
            )
        return {
            "branch": head.branch,
            "remote": remote,
            "remote_branch": remote_branch,
            "commit": head.commit,
            "created": flag == "*",
            "up_to_date": flag == "=",
            "upstream_set": not tracked,
        }

    def _push_error(
        self, repo: Repo, result: GitResult, row: tuple[str, str] | None, remote: str
    ) -> CodeyardError:
        if row is not None and row[0] == "!":
            summary = row[1]
            if "[remote rejected]" in summary:
                reason = summary.split("(", 1)[1].rstrip(")") if "(" in summary else "refused"
                return conflict(
                    "push_rejected",
                    f"the remote {remote!r} refused the push: {reason}",
                    reason=reason,
                )
            return conflict(
                "push_rejected",
                f"the remote {remote!r} has commits this branch does not have; pull first. "
                "Nothing was pushed.",
                reason="non-fast-forward",
            )
        hooks = self.hooks_present(repo, ("pre-push",))
        if hooks and row is None and "failed to push" in result.err:
            return conflict(
                "hook_failed",
                "the pre-push hook refused the push; nothing was pushed",
                hooks=hooks,
                hook_output=_tail(result.out + "\n" + result.err),
            )
        return self._remote_error(result, remote, "push")


def _helper_outcome(err: str) -> str | None:
    """What Codeyard's credential helper reported in git's stderr (the last time it ran)."""
    outcome = None
    for line in err.splitlines():
        if line.startswith(credential_helper.MARK):
            words = line.removeprefix(credential_helper.MARK).split()
            outcome = words[0] if words else None
    return outcome


def _auth_message(err: str, remote: str, verb: str) -> str:
    """Why the remote did not take a credential, in words that say what to do next."""
    outcome = _helper_outcome(err)
    if outcome == credential_helper.GIVEN:
        return (
            f"the remote {remote!r} refused the git credential stored for this workspace "
            f"in the Hub ({verb}); store a new one for this workspace and try again"
        )
    if outcome == credential_helper.NONE_STORED:
        return (
            f"the remote {remote!r} needs a credential for {verb} and none is stored for "
            "this workspace in the Hub; store one (user name and token) for this workspace"
        )
    if outcome == credential_helper.REFUSED:
        return (
            f"the remote {remote!r} needs a credential for {verb}, and the Hub hands this "
            "workspace's stored credential only to its repository's own host"
        )
    if outcome == credential_helper.DENIED:
        return (
            f"the remote {remote!r} needs a credential for {verb}, and the Hub did not accept "
            "this server's token for the stored one; restart the workspace and try again"
        )
    if outcome == credential_helper.HUB_FAILED:
        return (
            f"the remote {remote!r} needs a credential for {verb}, and the Hub could not "
            "be asked for this workspace's stored one; try again"
        )
    return f"the remote {remote!r} refused the credentials (or none were available) for {verb}"


def _push_rows(out: str) -> list[tuple[str, str]]:
    """(flag, summary) of each ref line of `git push --porcelain`."""
    rows = []
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and len(parts[0]) == 1:
            rows.append((parts[0], parts[2]))
    return rows


def _inside(path: str, folder: str | None) -> bool:
    """Whether `path` is `folder` itself or below it."""
    if not folder:
        return False
    return path.rstrip("/") == folder or path.startswith(f"{folder}/")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no detail"
