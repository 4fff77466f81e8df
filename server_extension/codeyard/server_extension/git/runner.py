"""Running `git` itself: no shell, a clean environment, a timeout that ends hooks too.

Every git call of the git endpoints goes through `GitRunner.run`. It

- passes an argument list, never a shell string, so paths and branch names are data;
- builds the environment from an allow-list (`git_env`): the server's own environment holds
  the user's JupyterHub token and the gateway's, which a hook or a remote helper must not
  see; the `GIT_*` variables that would point git at another repository or index are
  dropped as well;
- never prompts: `GIT_TERMINAL_PROMPT=0`, stdin closed (or the commit message), and a new
  session, so ssh has no terminal to ask a password on either;
- kills the whole process group when the timeout passes: a hung hook or ssh is a child of
  git, and killing git alone would leave it running;
- leaves `core.hooksPath` and every hook alone: the user's hooks run as with plain git.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import CodeyardError

#: Environment variables a git call may inherit from the server: what git, ssh and hooks
#: need to find their tools, the user's config and identity, and the network. Everything
#: else (tokens, `GIT_DIR`, `GIT_INDEX_FILE`, ...) is left out.
ALLOWED_ENV = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "TMPDIR",
        "TZ",
        "XDG_CONFIG_HOME",
        # An ssh agent socket is a way to ask for a signature, not a secret itself.
        "SSH_AUTH_SOCK",
        "GIT_SSH",
        "GIT_SSH_COMMAND",
        "GIT_CONFIG_GLOBAL",
        "GIT_CONFIG_SYSTEM",
        "GIT_CONFIG_NOSYSTEM",
        "GIT_AUTHOR_NAME",
        "GIT_AUTHOR_EMAIL",
        "GIT_COMMITTER_NAME",
        "GIT_COMMITTER_EMAIL",
        "EMAIL",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "all_proxy",
        "ALL_PROXY",
    }
)


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of one git call: the allow-listed part of ours plus `extra`.

    `extra` is how one call gets more than the allow-list: a fetch or push gets what the
    Hub's credential helper needs to ask for the stored credential (`GitManager.
    remote_access`, which names the helper with `-c credential.helper=` on that call). No
    other git call sees it; what that fetch or push runs itself (a pre-push hook) does.
    """
    env = {k: v for k, v in os.environ.items() if k in ALLOWED_ENV}
    env.update(
        GIT_TERMINAL_PROMPT="0",
        # Messages in English whatever the server's locale: they are matched below.
        LC_ALL="C.UTF-8",
        LANG="C.UTF-8",
        GIT_MERGE_AUTOEDIT="no",
        GIT_EDITOR=":",
        GIT_PAGER="cat",
    )
    if extra:
        env.update(extra)
    return env


@dataclass
class GitResult:
    args: list[str]
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "surrogateescape")

    @property
    def err(self) -> str:
        return self.stderr.decode("utf-8", "replace")


class GitRunner:
    """Runs git in one working folder (the workspace root)."""

    def __init__(self, cwd: str, *, git: str = "git") -> None:
        self.cwd = cwd
        self.git = git

    def run(
        self,
        args: Sequence[str],
        *,
        timeout: float,
        env: Mapping[str, str] | None = None,
        stdin: bytes | None = None,
        config: Sequence[str] = (),
    ) -> GitResult:
        """Run `git [-c config]... args`; 504 `git_timeout` after `timeout` seconds.

        `config` adds `-c key=value` for this call only (never written anywhere). A
        non-zero exit is returned, not raised: the caller knows what it means.
        """
        argv = [self.git]
        for item in config:
            argv += ["-c", item]
        argv += list(args)
        try:
            proc = subprocess.Popen(
                argv,
                cwd=self.cwd,
                env=git_env(env),
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except FileNotFoundError:
            raise CodeyardError(
                501, "git_missing", "git is not installed in this workspace"
            ) from None
        except OSError as exc:
            raise CodeyardError(
                500, "git_failed", f"git could not be started ({exc.__class__.__name__})"
            ) from None
        try:
            out, err = proc.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill_group(proc)
            proc.communicate()
            raise CodeyardError(
                504,
                "git_timeout",
                f"`git {args[0]}` did not finish within {timeout:g} s and was stopped "
                "(with its hooks and helpers)",
            ) from None
        except BaseException:
            self._kill_group(proc)
            proc.communicate()
            raise
        return GitResult(argv, proc.returncode, out, err)

    @staticmethod
    def _kill_group(proc: subprocess.Popen[bytes]) -> None:
        # The group is the one `start_new_session` made for this git call alone.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
