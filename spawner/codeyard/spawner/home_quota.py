"""A disk quota per workspace home: each home is its own ext4 file system in an image file.

This kernel (and many others) has no quota support for ext4 or XFS, so the limit is the
size of a file system: the home folder `H = <storage_root>/<user>/<workspace>` is the mount
point of `<storage_root>/<user>/<workspace>.img`, an ext4 image loop-mounted on the Docker
host. A full home then answers ENOSPC at once to every write, `fallocate` included, and
the host's own file system (the Hub's database and secrets, other homes) never sees it.

The Hub talks to remote hosts only through their Docker API, so a short-lived helper
container makes and mounts the image (`QUOTA_SCRIPT`). A mount made inside a container
stays in its mount namespace unless it propagates: the helper binds the user's folder with
`rshared` propagation, so the mount appears on the host at H, where the workspace
container's ordinary bind of H picks it up. Docker allows `rshared` only when the host
folder lies on a shared mount: the storage root must be one (`ensure_shared_mount` makes
it so where the Hub shares the host's file system and runs as root; on other hosts the
admin adds one line to the host's fstab, docs/home-quota.md).

Lifecycle: every start makes sure the home is mounted (after a host restart, or a stop,
nothing else remounts it), first-start homes are made (empty or cloned) as before and then
copied into the new image, so the clone script and the home layout need not know about
quotas. A stop keeps the mount (a stopped home holds one loop device); deleting the
workspace unmounts it, and removes the image with `delete_data_on_remove`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from docker.errors import APIError, NotFound
from jupyterhub.traitlets import ByteSpecification
from tornado import web

from .homes import ensure_user_dir

DockerCall = Callable[..., Awaitable[Any]]

# $1 mode (mount|remount|unmount|delete|attach|detach; remount mounts only an existing
# image), $2 home folder name, $3 size in bytes, $4 uid, $5 preallocate (1|0), $6 bytes the
# host file system must keep free after a new image, $7 the home's name in a warm slot.
# Exit 4: no room on the host for a new image; 5: an existing home exceeds the quota.
# Runs as root in /homes (the user's folder, bound rshared), with the capabilities that
# `helper_host_config` names. Mounts made here propagate to the host. attach/detach also
# have a warm container's slot folder at /slot (bound rshared): attach binds the mounted
# home into it, detach takes that bind away again (warm_pool.py).
QUOTA_SCRIPT = r"""
set -u
mode="$1"; ws="$2"; size="$3"; uid="$4"; prealloc="$5"; keep_free="$6"; in_slot="${7:-}"
img="$ws.img"; fresh="$ws.img.partial"; stage=".$ws.quota-copy"
cd /homes || exit 2

say() { echo "codeyard-quota: $*"; }
as_user() { setpriv --reuid="$uid" --regid="$uid" --clear-groups -- "$@"; }

# Attach the image to a free loop device and mount it at $2. The device node is made in
# this container's own /dev (the host's nodes are not there); another helper may take the
# same free device at the same moment, so a busy one is retried.
mount_image() {
    target="$1"
    e2fsck -p "$img" >/dev/null 2>&1
    rc=$?
    if [ "$rc" -ge 4 ]; then say "e2fsck found errors it could not fix in $img ($rc)"; return 1; fi
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        dev="$(losetup -f)" || { say "no free loop device"; return 1; }
        [ -b "$dev" ] || mknod "$dev" b 7 "${dev#/dev/loop}" || return 1
        if losetup "$dev" "$img" 2>/dev/null; then
            if mount -t ext4 -o nosuid,nodev "$dev" "$target"; then
                # Marks the device for release when the file system is unmounted.
                losetup -d "$dev"
                return 0
            fi
            losetup -d "$dev"
            return 1
        fi
        sleep 0.1
    done
    say "could not attach a loop device to $img"
    return 1
}

unmount_home() {
    for d in "$ws" "$stage"; do
        if mountpoint -q "$d" 2>/dev/null; then
            umount "$d" 2>/dev/null || umount -l "$d" || return 1
        fi
    done
    rmdir "$stage" 2>/dev/null
    return 0
}

case "$mode" in
remount)
    [ -e "$img" ] || exit 0 ;;
attach|detach)
    case "$in_slot" in ""|.|..|*/*) say "not a home name in a slot: $in_slot"; exit 2 ;; esac ;;
esac
case "$mode" in
attach)
    # The warm container sees /slot at the home's parent (an rslave bind), so this bind
    # appears at its home at once. Whatever the container wrote at that name before the
    # claim is not the user's: it goes, without crossing into another file system.
    target="/slot/$in_slot"
    mountpoint -q "$ws" || { say "home $ws is not mounted"; exit 1; }
    if mountpoint -q "$target"; then say "slot already holds a home"; exit 1; fi
    rm -rf --one-file-system -- "$target" || exit 1
    mkdir -m 0755 -- "$target" && chown "$uid:$uid" "$target" || exit 1
    mount --bind "$ws" "$target" || exit 1
    say "home $ws attached to its warm slot"
    exit 0 ;;
detach)
    target="/slot/$in_slot"
    if mountpoint -q "$target"; then
        umount "$target" 2>/dev/null || umount -l "$target" || exit 1
    fi
    if mountpoint -q "$target"; then say "slot still holds a home"; exit 1; fi
    exit 0 ;;
unmount)
    unmount_home || exit 1
    exit 0 ;;
delete)
    unmount_home || exit 1
    rm -f -- "$img" "$fresh"
    exit 0 ;;
esac

if mountpoint -q "$ws"; then
    say "home $ws is mounted"
    exit 0
fi
unmount_home
if [ ! -e "$img" ]; then
    rm -f -- "$fresh"
    avail=$(( $(stat -f -c '%a' .) * $(stat -f -c '%S' .) ))
    need="$keep_free"
    [ "$prealloc" = 1 ] && need=$(( size + keep_free ))
    if [ "$avail" -lt "$need" ]; then
        say "not enough room on the host for a new home of $size bytes:" \
            "$avail bytes free, $keep_free must stay free"
        exit 4
    fi
    if [ "$prealloc" = 1 ]; then
        fallocate -l "$size" "$fresh" || { rm -f -- "$fresh"; exit 4; }
    else
        truncate -s "$size" "$fresh" || exit 1
    fi
    chmod 600 "$fresh"
    # nodiscard, and the inode tables and journal zeroed now rather than lazily after the
    # mount: each would punch holes in the file, which would undo the preallocation.
    mkfs.ext4 -q -F -m 0 -L codeyard-home \
        -E "root_owner=$uid:$uid,nodiscard,lazy_itable_init=0,lazy_journal_init=0" "$fresh" \
        || { rm -f -- "$fresh"; exit 1; }
    if [ -d "$ws" ] && [ -n "$(ls -A "$ws")" ]; then
        # A home made before (a clone, or a home from before quotas): copy it in, as its
        # owner, then empty the folder it leaves on the host's disk.
        mkdir -p "$stage"
        mv -T -- "$fresh" "$img"
        if ! mount_image "$stage"; then rm -f -- "$img"; exit 1; fi
        rmdir "$stage/lost+found"
        if ! as_user cp -a -- "$ws/." "$stage/" 2>/tmp/cp.err; then
            tail -n 3 /tmp/cp.err
            used=$(du -sb "$ws" | cut -f1)
            unmount_home; rm -f -- "$img"
            if grep -q "No space left" /tmp/cp.err; then
                say "home $ws holds $used bytes, more than its quota of $size bytes"
                exit 5
            fi
            say "could not copy home $ws into its quota'd file system"
            exit 1
        fi
        sync -f "$stage"
        unmount_home
        as_user find "$ws" -mindepth 1 -delete
    else
        mv -T -- "$fresh" "$img"
        mkdir -p "$ws"
        chown "$uid:$uid" "$ws" 2>/dev/null
        if ! mount_image "$ws"; then rm -f -- "$img"; exit 1; fi
        rmdir "$ws/lost+found"
        say "made home $ws with a quota of $size bytes"
        exit 0
    fi
fi
mkdir -p "$ws"
if [ -n "$(ls -A "$ws")" ]; then
    say "warning: $ws has files on the host's disk under its mount point; they stay hidden"
fi
mount_image "$ws" || exit 1
say "mounted home $ws"
"""


class QuotaUnavailable(RuntimeError):
    """The home could not be made or mounted with its quota; the message says why."""


def parse_size(value: str | int) -> int:
    """Bytes from a size such as "10G" or "64M" (JupyterHub's units: K, M, G, T, 1024-based)."""
    if isinstance(value, int) or str(value).strip().isdigit():
        return int(value)
    return int(ByteSpecification().validate(None, str(value).strip()))


@dataclass(frozen=True)
class QuotaJob:
    """One run of the quota helper on a host."""

    mode: str  # "mount", "remount", "unmount" or "delete"
    user_dir: str  # <storage_root>/<user> on the Docker host
    home_name: str
    image: str  # any image with util-linux and e2fsprogs: the workspace image
    name: str  # container name
    size: int = 0
    uid: int = 1000
    preallocate: bool = True
    keep_free: int = 0
    labels: dict[str, str] | None = None
    #: attach/detach: a warm container's slot folder on the host, and the home's name in it.
    slot_dir: str = ""
    slot_home: str = ""

    def command(self) -> list[str]:
        return [
            self.mode,
            self.home_name,
            str(self.size),
            str(self.uid),
            "1" if self.preallocate else "0",
            str(self.keep_free),
            self.slot_home,
        ]


def helper_host_config(user_dir: str, slot_dir: str = "") -> dict[str, Any]:
    """Docker host config of the quota helper: root with the few capabilities a loop mount
    needs, no network, a read-only root, and the user's folder bound `rshared` (plus, to
    attach a home to a warm container, that container's slot, also `rshared`)."""
    binds = {user_dir: {"bind": "/homes", "mode": "rw", "propagation": "rshared"}}
    if slot_dir:
        binds[slot_dir] = {"bind": "/slot", "mode": "rw", "propagation": "rshared"}
    return {
        "binds": binds,
        "cap_drop": ["ALL"],
        "cap_add": [
            # mount(2)/umount(2), and the loop ioctls that attach and release an image.
            "SYS_ADMIN",
            # mknod of the chosen /dev/loopN in the helper's own /dev.
            "MKNOD",
            # make the image and the mount point in the user's folder, which uid 1000 owns.
            "DAC_OVERRIDE",
            # hand the new mount point to the workspace user.
            "CHOWN",
            # setpriv: copy an existing home in, and empty its old folder, as its owner.
            "SETUID",
            "SETGID",
        ],
        # Loop devices only: loop-control (char 10:237) to find a free one, and the
        # block devices of major 7 themselves.
        "devices": ["/dev/loop-control:/dev/loop-control:rwm"],
        "device_cgroup_rules": ["b 7:* rwm"],
        "security_opt": ["no-new-privileges:true"],
        "network_mode": "none",
        "read_only": True,
        "tmpfs": {"/tmp": "rw,nosuid,nodev,mode=1777"},  # noqa: S108 - in the container
        "pids_limit": 64,
    }


async def run_quota_helper(
    docker: DockerCall, client: Any, job: QuotaJob, time_limit: float
) -> str:
    """Run the quota helper on the job's host to completion; return its output or raise
    `QuotaUnavailable` with the helper's (or Docker's) reason."""
    with contextlib.suppress(NotFound):
        await docker("remove_container", job.name, force=True)
    try:
        obj = await docker(
            "create_container",
            image=job.image,
            name=job.name,
            user="0:0",
            entrypoint=["/bin/sh", "-c", QUOTA_SCRIPT, "codeyard-home-quota"],
            command=job.command(),
            working_dir="/homes",
            labels=job.labels or {},
            host_config=client.create_host_config(**helper_host_config(job.user_dir, job.slot_dir)),
        )
    except APIError as e:
        raise QuotaUnavailable(f"home quota helper not created: {e.explanation or e}") from e
    cid = obj["Id"]
    try:
        try:
            await docker("start", cid)
        except APIError as e:
            why = str(e.explanation or e)
            if "shared mount" in why:
                why = (
                    f"{os.path.dirname(job.user_dir)} is not on a shared mount on this host,"
                    " so a home's quota mount cannot reach it (docs/home-quota.md: mount"
                    " --bind it onto itself and --make-shared)"
                )
            raise QuotaUnavailable(f"home quota: {why}") from e
        try:
            result = await asyncio.wait_for(docker("wait", cid), time_limit)
        except TimeoutError:
            with contextlib.suppress(APIError):
                await docker("kill", cid)
            raise QuotaUnavailable(
                f"home quota helper took longer than {time_limit:.0f}s"
            ) from None
        output = (await docker("logs", cid, stdout=True, stderr=True)).decode("utf-8", "replace")
        code = result.get("StatusCode", -1)
        if code != 0:
            lines = [line for line in output.strip().splitlines() if line.strip()][-4:]
            raise QuotaUnavailable(
                "home quota: " + ("\n".join(lines) or f"helper exit code {code}")
            )
        return output
    finally:
        with contextlib.suppress(APIError):
            await docker("remove_container", cid, force=True)


def _mount_of(path: str) -> tuple[str, str] | None:
    """(mount point, optional fields) of the mount holding `path`, from this process's
    mountinfo; the last, innermost mount wins."""
    best: tuple[str, str] | None = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            target = fields[4].replace("\\040", " ")
            optional = " ".join(fields[6 : fields.index("-")])
            inside = path == target or path.startswith(target.rstrip("/") + "/")
            if inside and (best is None or len(target) >= len(best[0])):
                best = (target, optional)
    return best


def is_shared_mount(path: str) -> bool:
    """Whether `path` lies on a mount with shared propagation (what `rshared` binds need)."""
    found = _mount_of(os.path.realpath(path))
    return found is not None and "shared:" in found[1]


def ensure_shared_mount(path: str) -> bool:
    """Make `path` (a storage root on this machine) a shared mount: bound onto itself, then
    marked shared. Needs root; returns whether it is shared now. Idempotent, and it touches
    nothing but `path`, so the rest of the machine keeps its private mounts."""
    path = os.path.realpath(path)
    os.makedirs(path, mode=0o755, exist_ok=True)
    if is_shared_mount(path):
        return True
    if os.geteuid() != 0:
        return False
    found = _mount_of(path)
    if found is None or found[0] != path:
        subprocess.run(["mount", "--bind", path, path], check=True, capture_output=True)
    subprocess.run(["mount", "--make-shared", path], check=True, capture_output=True)
    return is_shared_mount(path)


def _job(spawner: Any, host: Any, mode: str, slot_dir: str = "", slot_home: str = "") -> QuotaJob:
    home = spawner.home_location(host)
    return QuotaJob(
        mode=mode,
        user_dir=home.user_dir,
        home_name=home.home_name,
        image=spawner.image,
        # Not object_name: a claimed container's is the pool's, and a failed claim resets it.
        name=f"{spawner._object_name_default()}-quota",
        size=parse_size(spawner.home_quota),
        uid=spawner.home_uid,
        preallocate=spawner.home_quota_preallocate,
        keep_free=parse_size(spawner.home_quota_keep_free),
        labels={"codeyard.user": spawner.user.name, "codeyard.helper": "home-quota"},
        slot_dir=slot_dir,
        slot_home=slot_home,
    )


def quota_applies(spawner: Any) -> bool:
    """Whether `spawner`'s workspace gets a quota'd home: a quota is set, and its host is a
    plain engine (a Swarm's storage is shared between nodes; one node's loop mount is not)."""
    return bool(parse_size(spawner.home_quota)) and not spawner.on_swarm


async def _shared_storage_root(spawner: Any, host: Any) -> None:
    """On the Hub's own machine, make the storage root the shared mount the helper needs."""
    if not host.storage_is_local or os.geteuid() != 0:
        return
    await asyncio.wrap_future(spawner.executor.submit(ensure_shared_mount, host.storage_root))


async def ensure_home_quota(spawner: Any, host: Any, make: bool = True) -> None:
    """Make sure the workspace's home is its quota'd file system, mounted at the home folder:
    made on first start (an existing home is copied in), mounted again after a host restart.
    Runs on every start, before the container, which binds whatever the folder is then.
    With `make` False only an existing image is mounted (a home about to be prepared)."""
    if not quota_applies(spawner):
        return
    spawner.emit(30, f"Mounting the home's {spawner.home_quota} file system")
    await _shared_storage_root(spawner, host)
    job = _job(spawner, host, "mount" if make else "remount")
    if host.storage_is_local:
        # The user's folder exists, owned by the workspace user, before the helper binds it.
        await asyncio.wrap_future(
            spawner.executor.submit(ensure_user_dir, spawner.home_location(host), job.uid)
        )
    try:
        output = await run_quota_helper(spawner.docker, spawner.client, job, spawner.clone_timeout)
    except QuotaUnavailable as e:
        # The reason the user reads on the spawn page; 507 when it is a lack of space.
        full = "not enough room" in str(e) or "more than its quota" in str(e)
        raise web.HTTPError(507 if full else 503, "%s", str(e)) from None
    spawner.log.info("%s: %s", spawner._log_name, " ".join(output.strip().splitlines()[-1:]))


async def release_home_quota(spawner: Any, host: Any, delete: bool) -> None:
    """Unmount the home's file system (its loop device goes with it) and, with `delete`,
    remove its image. Either way the home folder is left as an empty folder."""
    if not quota_applies(spawner):
        return
    await _shared_storage_root(spawner, host)
    job = _job(spawner, host, "delete" if delete else "unmount")
    await run_quota_helper(spawner.docker, spawner.client, job, spawner.clone_timeout)


async def shared_storage_root(spawner: Any, host: Any) -> None:
    """The storage root as a shared mount where the Hub can make it one (its own machine, as
    root): the warm pool's slots need it before any home is mounted (`warm_pool.py`)."""
    await _shared_storage_root(spawner, host)


async def attach_to_slot(spawner: Any, host: Any, slot_dir: str, slot_home: str) -> None:
    """Bind the workspace's mounted home into a claimed warm container's slot folder
    (`slot_dir` on the host), where the container sees it at its home mount point."""
    job = _job(spawner, host, "attach", slot_dir, slot_home)
    output = await run_quota_helper(spawner.docker, spawner.client, job, spawner.clone_timeout)
    spawner.log.info("%s: %s", spawner._log_name, " ".join(output.strip().splitlines()[-1:]))


async def detach_from_slot(spawner: Any, host: Any, slot_dir: str, slot_home: str) -> None:
    """Take the home's bind out of a warm slot (the home stays mounted at its own folder).
    Idempotent: a slot without the bind is left as it is."""
    job = _job(spawner, host, "detach", slot_dir, slot_home)
    await run_quota_helper(spawner.docker, spawner.client, job, spawner.clone_timeout)
