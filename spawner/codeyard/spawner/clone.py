"""Make a workspace home on its Docker host with a short-lived helper container.

Why a container and not `git` on the Hub: the home lives on the workspace's host, which
may be a remote engine; the helper runs there through the same Docker API as the
workspace. It uses the workspace image (so the same git, CA certificates and proxy
settings), the workspace's CPU and memory limits, and sees only the user's folder, so
a hostile repository or URL never runs code on the Hub.

The clone goes to `work/` (`SpawnerSettings.work_dir`) in a hidden `.<name>.partial`
folder, which gets the layout marker and is renamed into place only when git succeeded,
so a failed clone leaves no half-made workspace. A home that exists is never cloned into;
if it has the older layout (the home was the tree) the same script converts it
(`CONVERT_SCRIPT`).

git talks to a server the user chose and writes what it sends, so the helper runs as the
workspace user (uid 1000), with no capabilities, no new privileges and a read-only root,
like the workspace itself: what git writes is then owned by that user without a chown.
That needs the user's folder (`<storage_root>/<user>`, the helper's /homes) to belong to
the workspace user. Where the Hub shares the host's file system it sees to that itself;
on other hosts a first container does only that, as root with CAP_CHOWN alone and no
network, before git runs (`HelperJob.fix_owner`).

Where workspaces are behind the host's egress proxy (`egress.py`), so is the helper: a URL
whose host is not on the allow-list is refused before any container runs
(`egress.refused_clone_host`), and the helper gets the proxy's environment
(`HelperJob.network_env`: HTTP(S) proxy, the tunnel for ssh and `git://`) and, once
started, the workspace's network rules, with git waiting behind the same start gate until
they hold (`run_helper(..., lock=...)`). It therefore reaches allowed hosts only, never a
metadata address, an engine port or another workspace, even through a redirect or a
submodule.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from docker.errors import APIError, NotFound

from .egress import gated_command

# git runs this (`!` helper) as `sh -c '<it> "$@"' get|store|erase` with the request on stdin.
# It answers `get` for the clone URL's own host only (a redirect elsewhere gets nothing) and
# never prints anything else; the secret is read from the environment, never from argv.
CREDENTIAL_HELPER = (
    'f() { test "$1" = get || { cat >/dev/null; return 0; };'
    ' h=; while IFS= read -r l; do case "$l" in host=*) h="${l#host=}";; esac; done;'
    ' test "$h" = "$CODEYARD_GIT_HOST" || return 0;'
    ' printf "username=%s\\npassword=%s\\n"'
    ' "$CODEYARD_GIT_USERNAME" "$CODEYARD_GIT_PASSWORD"; }; f'
)

# Converts the home "$ws", made when the home was the working tree itself, to the layout
# of `homes.py`: the tree moves into "$work", the state folder `.codeyard` stays where it is
# (beside the tree now). Renames only, so nothing is copied and hard links between the
# state and the tree survive. Each step can be repeated after a crash at any point:
#   1. every entry but the state and our own files is moved into `.codeyard-layout.work`;
#   2. `.codeyard-layout.moved` says all were moved (so a tree of its own `work` folder
#      is never mistaken for a converted home);
#   3. `.codeyard-layout.work` is renamed to "$work";
#   4. the marker `.codeyard-layout` is written (to a temporary name, then renamed): last.
CONVERT_SCRIPT = r"""
convert() {
    h="$1"; work="$2"; m="$h/.codeyard-layout"; w="$m.work"; moved="$m.moved"
    if [ -f "$m" ]; then rm -f -- "$moved"; return 0; fi
    echo "codeyard: converting home $h to the layout with the working tree in $work/"
    if [ ! -e "$moved" ]; then
        mkdir -p -- "$w" || return 4
        for e in "$h"/* "$h"/.[!.]* "$h"/..?*; do
            [ -e "$e" ] || [ -L "$e" ] || continue
            case "${e##*/}" in .codeyard|.codeyard-layout|.codeyard-layout.*) continue;; esac
            mv -- "$e" "$w/" || return 4
        done
        : > "$moved" || return 4
    fi
    if [ -d "$w" ]; then
        mkdir -p -- "$h/$work" && rmdir -- "$h/$work" || return 4
        mv -T -- "$w" "$h/$work" || return 4
    fi
    printf '2\n' > "$m.tmp" && mv -- "$m.tmp" "$m" || return 4
    rm -f -- "$moved"
}
"""

# $1 mode (prepare|remove), $2 home folder name, $3 git URL or "", $4 branch or "", $5 uid,
# $6 the working tree's folder in the home. Runs as the workspace user, so everything it
# makes is theirs. A home that exists is kept, and converted if it has the old layout.
HELPER_SCRIPT = (
    CONVERT_SCRIPT
    + r"""
set -u
mode="$1"; ws="$2"; url="$3"; branch="$4"; uid="$5"; work="${6:-work}"
tmp=".$ws.partial"
cd /homes || exit 2
if [ "$mode" = remove ]; then
    rm -rf -- "$ws" "$tmp"
    exit 0
fi
if [ -e "$ws" ]; then
    echo "codeyard: home $ws exists, keeping it"
    convert "$ws" "$work" || exit 4
    exit 0
fi
rm -rf -- "$tmp"
mkdir -- "$tmp" || exit 2
if [ -n "$url" ]; then
    # No helper from the image's or user's git config (one could store the secret); ours
    # answers only `get`, only for the URL's own host, from the environment.
    set -- -c credential.helper=
    if [ -n "${CODEYARD_GIT_PASSWORD:-}" ]; then
        set -- "$@" -c @CREDENTIAL_HELPER@
    fi
    set -- "$@" clone --quiet
    if [ -n "$branch" ]; then set -- "$@" --branch "$branch"; fi
    if ! git "$@" -- "$url" "$tmp/$work" 2>/tmp/git.err; then
        cat /tmp/git.err >&2
        rm -rf -- "$tmp"
        exit 3
    fi
else
    mkdir -p -- "$tmp/$work"
fi
printf '2\n' > "$tmp/.codeyard-layout"
mv -T -- "$tmp" "$ws"
"""
).replace("@CREDENTIAL_HELPER@", shlex.quote("credential.helper=!" + CREDENTIAL_HELPER))

# $1 uid. Runs as root with only CAP_CHOWN: hand the user's folder to the workspace user.
OWNER_SCRIPT = r"""
cd /homes && chown "$1:$1" .
"""

CLONE_FAILED_EXIT = 3

DockerCall = Callable[..., Awaitable[Any]]
#: Puts the network rules into a started helper container (by id) and opens its gate.
LockCall = Callable[[str], Awaitable[None]]

# scp-like ssh address: [user@]host:path (no scheme).
_SCP_HOST = re.compile(r"^(?:[^@/:]+@)?(\[[^\]]+\]|[^@/:\[\]]+):")


def clone_host(url: str) -> str:
    """The host name a clone URL reaches (no user, no port), for the allow-list check:
    `https://h/...`, `ssh://u@h:22/...`, `git://h/...` and scp-like `u@h:path`."""
    url = url.strip()
    if "://" in url:
        return (urlsplit(url).hostname or "").lower()
    found = _SCP_HOST.match(url)
    return found.group(1).strip("[]").lower() if found else ""


class GitCredential:
    """A user name and a token or password for one clone; never shown in a repr or log."""

    __slots__ = ("password", "username")

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self.password = password

    def __repr__(self) -> str:
        return "GitCredential(<hidden>)"

    def environment(self, host: str) -> dict[str, str]:
        """What the helper container's credential helper reads: only the helper gets it,
        never the workspace container, and never an argument (argv is world-readable)."""
        return {
            "CODEYARD_GIT_HOST": host,
            "CODEYARD_GIT_USERNAME": self.username,
            "CODEYARD_GIT_PASSWORD": self.password,
        }


class HomeSetupFailed(RuntimeError):
    """The helper could not make the home; the message carries git's own error."""


@dataclass(frozen=True)
class HelperJob:
    mode: str  # "prepare" or "remove"
    user_dir: str  # <storage_root>/<user> on the Docker host
    home_name: str
    image: str
    name: str  # container name
    repo_url: str = ""
    branch: str = ""
    uid: int = 1000
    mem_limit: int | None = None
    cpu_limit: float | None = None
    labels: dict[str, str] | None = None
    #: More host config for both containers: hardening, the workspace network, pids limit.
    host_config: dict[str, Any] | None = None
    #: Whether /homes must first be given to `uid` by a root container with CAP_CHOWN.
    fix_owner: bool = False
    #: The stored credential for the clone, answered by `CREDENTIAL_HELPER` only.
    credential: GitCredential | None = field(default=None, repr=False)
    #: The URL's host as git names it to a credential helper (`profiles.git_host`).
    credential_host: str = ""
    #: Transports git may use (`GIT_ALLOW_PROTOCOL`), so no URL, redirect or submodule
    #: reaches `ext::`, `fd::` or `file://` unless the admin offers that scheme.
    allowed_protocols: tuple[str, ...] = ("https", "http", "git", "ssh")
    #: The working tree's folder in the home (`SpawnerSettings.work_dir`).
    work_dir: str = "work"

    #: The egress proxy's environment (`EgressPlan.environment`) when the host has one.
    network_env: dict[str, str] = field(default_factory=dict)

    def environment(self) -> dict[str, str]:
        env = {
            **self.network_env,
            "GIT_TERMINAL_PROMPT": "0",
            "HOME": "/tmp",  # noqa: S108 - inside the helper
            "GIT_ALLOW_PROTOCOL": ":".join(self.allowed_protocols),
        }
        if self.credential is not None and self.mode == "prepare":
            env.update(self.credential.environment(self.credential_host))
        return env


def last_lines(text: str, n: int = 6) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[-n:])


async def run_helper(
    docker: DockerCall,
    client: Any,
    job: HelperJob,
    time_limit: float,
    lock: LockCall | None = None,
) -> str:
    """Run the helper to completion on the job's host; return its output or raise.

    With `lock` (the egress rules), the git container waits behind the start gate until
    `lock` has put the rules into its network namespace and opened the gate."""
    if job.fix_owner:
        await _run_container(
            docker,
            client,
            job,
            name=f"{job.name}-owner",
            user="0:0",
            entrypoint=["/bin/sh", "-c", OWNER_SCRIPT, "codeyard-home-owner"],
            command=[str(job.uid)],
            # chown of the folder is all it does: no network, one capability.
            host_config={"network_mode": "none", "cap_add": ["CHOWN"]},
            environment={"HOME": "/tmp"},  # noqa: S108 - inside the helper
            time_limit=time_limit,
        )
    entrypoint = ["/bin/sh", "-c", HELPER_SCRIPT, "codeyard-home"]
    return await _run_container(
        docker,
        client,
        job,
        name=job.name,
        user=f"{job.uid}:{job.uid}",
        entrypoint=gated_command(entrypoint) if lock is not None else entrypoint,
        command=[job.mode, job.home_name, job.repo_url, job.branch, str(job.uid), job.work_dir],
        host_config={},
        environment=job.environment(),
        time_limit=time_limit,
        lock=lock,
    )


async def _run_container(
    docker: DockerCall,
    client: Any,
    job: HelperJob,
    *,
    name: str,
    user: str,
    entrypoint: list[str],
    command: list[str],
    host_config: dict[str, Any],
    environment: dict[str, str],
    time_limit: float,
    lock: LockCall | None = None,
) -> str:
    with contextlib.suppress(NotFound):
        await docker("remove_container", name, force=True)
    config: dict[str, Any] = {
        **(job.host_config or {}),
        "binds": {job.user_dir: {"bind": "/homes", "mode": "rw"}},
        **host_config,
    }
    if job.mem_limit:
        config["mem_limit"] = job.mem_limit
    if job.cpu_limit:
        config["cpu_period"] = 100_000
        config["cpu_quota"] = int(job.cpu_limit * 100_000)
    obj = await docker(
        "create_container",
        image=job.image,
        name=name,
        user=user,
        entrypoint=entrypoint,
        command=command,
        environment=environment,
        working_dir="/homes",
        labels=job.labels or {},
        host_config=client.create_host_config(**config),
    )
    cid = obj["Id"]
    try:
        await docker("start", cid)
        if lock is not None:
            await lock(cid)
        try:
            result = await asyncio.wait_for(docker("wait", cid), time_limit)
        except TimeoutError:
            await docker("kill", cid)
            raise HomeSetupFailed(
                f"git clone took longer than {time_limit:.0f}s and was stopped"
            ) from None
        output = (await docker("logs", cid, stdout=True, stderr=True)).decode("utf-8", "replace")
        code = result.get("StatusCode", -1)
        if code != 0:
            what = "git clone failed" if code == CLONE_FAILED_EXIT else "home setup failed"
            raise HomeSetupFailed(f"{what}: {last_lines(output) or f'exit code {code}'}")
        return output
    finally:
        with contextlib.suppress(APIError):
            await docker("remove_container", cid, force=True)
