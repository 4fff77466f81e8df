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

On the Hub's own machine, with the Hub running as root and the engine in its mount
namespace (`hub_mounts_locally`), the Hub skips the helper where it has nothing to do (the
home is already the mount of its own image) and binds a home into a warm slot itself: a
container per check costs about a second, the Hub's own check microseconds.

Lifecycle: every start makes sure the home is mounted (after a host restart, or a stop,
nothing else remounts it), first-start homes are made (empty or cloned) as before and then
copied into the new image, so the clone script and the home layout need not know about
quotas. A stop keeps the mount (a stopped home holds one loop device); deleting the
workspace unmounts it, and removes the image with `delete_data_on_remove`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import os
import re
import socket
import stat
import struct
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from docker.errors import APIError, NotFound
from jupyterhub.traitlets import ByteSpecification
from tornado import web

from .homes import HomeLocation, ensure_user_dir

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


# ---- the Hub's own machine: mount work in-process ---------------------------------------
#
# Where the storage root is on the Hub's own file system and the Hub runs as root, the Hub is
# already root in the host's mount namespace: it makes the storage root a shared mount itself
# (`ensure_shared_mount`). A helper container there adds a container's start and removal
# (about a second) to every check and bind, and no privilege the Hub lacks. So on that
# machine the check that a home is mounted, and the bind of a home into a warm slot and its
# removal, run in the spawner's executor thread. Every path is walked from the storage root
# one component at a time, each opened with O_NOFOLLOW, and mounts are made on and from the
# opened folders (`/proc/self/fd/N`), never by a path a container could redirect with a
# symlink. Remote hosts keep the helper container (docs/warm-pool.md).

#: The loop block devices' major number.
LOOP_MAJOR = 7
#: ioctl(LOOP_GET_STATUS64): the backing file's device and inode, its offset.
_LOOP_GET_STATUS64 = 0x4C05
#: struct loop_info64: lo_device, lo_inode, lo_rdevice, lo_offset, lo_sizelimit (5 x u64),
#: then lo_number, lo_encrypt_type, lo_encrypt_key_size, lo_flags, names, key, init.
_LOOP_INFO64 = struct.Struct("=5Q4I64s64s32s2Q")
_MS_BIND = 0x1000
_MNT_DETACH = 2
#: A folder opened for walking: never through a symlink, never a non-folder.
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: A folder opened only as a place (a mount's source or target).
_PLACE_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: `<.pool>/<slot>` relative to the storage root: what a warm slot's folder must be.
_SLOT_REL = re.compile(r"\.pool/([a-f0-9]{24})")
_SLOT_HOME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")

_libc: ctypes.CDLL | None = None


def hub_can_mount(host: Any) -> bool:
    """Whether `host`'s storage root is on the Hub's own file system and the Hub runs as root:
    then it makes that root a shared mount itself, and may move homes in-process."""
    return bool(host.storage_is_local) and os.geteuid() == 0


def hub_mounts_locally(host: Any) -> bool:
    """Whether the Hub does `host`'s home mount work itself, in-process: `hub_can_mount`, and
    a mount the Hub makes under the storage root is one the engine sees (`engine_sees_mounts`).
    Elsewhere the helper container does it, in a namespace the engine made."""
    return hub_can_mount(host) and engine_sees_mounts(host)


#: base URL and storage root -> (when checked, whether the engine sees the Hub's mounts).
_ENGINE_SEES: dict[tuple[str, str], tuple[float, bool]] = {}
_ENGINE_CHECK_TTL = 30.0


def engine_sees_mounts(host: Any) -> bool:
    """Whether a mount the Hub makes under `host.storage_root` reaches that engine's
    containers: the engine (the process behind its unix socket) lives in the Hub's mount
    namespace, or its copy of the storage root is a peer of the Hub's (the same `shared:N`
    group). Anything unknown (a TCP engine, a peer in another pid namespace) is no, and the
    helper does the work. Checked at most every 30 s: a restarted engine may have moved."""
    key = (str(host.base_url), str(host.storage_root))
    now = time.monotonic()
    cached = _ENGINE_SEES.get(key)
    if cached is not None and now - cached[0] < _ENGINE_CHECK_TTL:
        return cached[1]
    try:
        sees = _engine_sees_mounts(key[0], key[1])
    except OSError:
        sees = False
    _ENGINE_SEES[key] = (now, sees)
    return sees


def _engine_sees_mounts(base_url: str, storage_root: str) -> bool:
    if not base_url.startswith(("unix://", "http+unix://")):
        return False
    path = base_url.split("://", 1)[1]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        sock.connect(path)
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid = struct.unpack("3i", creds)[0]
    if pid <= 0:
        return False
    if os.readlink(f"/proc/{pid}/ns/mnt") == os.readlink("/proc/self/ns/mnt"):
        return True
    root = os.path.realpath(storage_root)
    ours = _peer_group(_read_mountinfo("/proc/self/mountinfo"), root)
    theirs = _peer_group(_read_mountinfo(f"/proc/{pid}/mountinfo"), root)
    return ours is not None and ours == theirs


def _read_mountinfo(path: str) -> list[list[str]]:
    with open(path) as f:
        return [line.split() for line in f]


def _peer_group(mounts: list[list[str]], path: str) -> str | None:
    """The `shared:N` tag of the innermost mount holding `path`, if it is shared."""
    best: list[str] | None = None
    for fields in mounts:
        target = fields[4].replace("\\040", " ")
        inside = path == target or path.startswith(target.rstrip("/") + "/")
        if inside and (best is None or len(target) >= len(best[4])):
            best = fields
    if best is None:
        return None
    tags = [t for t in best[6 : best.index("-")] if t.startswith("shared:")]
    return tags[0] if tags else None


def _syscall(name: str, *args: Any) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if getattr(_libc, name)(*args) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{name}: {os.strerror(code)}")


def _fd_path(fd: int) -> bytes:
    """The magic link that names exactly the folder `fd` was opened on: the kernel resolves
    it to that dentry, whatever was renamed or planted at its path since."""
    return f"/proc/self/fd/{fd}".encode()


def open_dir_at(dir_fd: int, name: str, flags: int = DIR_FLAGS) -> int:
    """`name` (one path component) in `dir_fd`, opened without following a symlink: a
    symlink or non-folder there is refused (ELOOP / ENOTDIR)."""
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"not one path component: {name!r}")
    return os.open(name, flags, dir_fd=dir_fd)


@contextlib.contextmanager
def opened(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def remove_tree_at(dir_fd: int, name: str) -> None:
    """Remove `name` in `dir_fd` and all below it, as `rm -rf --one-file-system` would: a
    symlink is removed, never followed, and a folder on another file system (a mount, such as
    a home still bound in a slot) is refused with EXDEV, never emptied. Iterative: a deep
    tree cannot exhaust the stack."""
    try:
        top = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(top.st_mode):
        os.unlink(name, dir_fd=dir_fd)
        return
    dev = os.fstat(dir_fd).st_dev

    def enter(parent: int, child: str) -> int:
        fd = open_dir_at(parent, child)
        if os.fstat(fd).st_dev != dev:
            os.close(fd)
            raise OSError(errno.EXDEV, f"{child} is another file system (a mount); not removed")
        return fd

    stack = [(dir_fd, name, enter(dir_fd, name))]
    try:
        while stack:
            _parent, _name, fd = stack[-1]
            deeper = None
            for child in os.listdir(fd):
                st = os.stat(child, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    deeper = child
                    break
                os.unlink(child, dir_fd=fd)
            if deeper is None:
                parent, done, fd = stack.pop()
                os.close(fd)
                os.rmdir(done, dir_fd=parent)
            else:
                stack.append((fd, deeper, enter(fd, deeper)))
    finally:
        for _parent, _name, fd in stack:
            os.close(fd)


def _mountinfo() -> list[list[str]]:
    """This process's mountinfo lines as fields (the Hub's is the host's namespace here)."""
    return _read_mountinfo("/proc/self/mountinfo")


def _loop_backing(dev: int) -> tuple[int, int, int] | None:
    """(device, inode, offset) of the file behind loop block device `dev`, or None when its
    node cannot be opened here."""
    sysfs = f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}/uevent"
    try:
        with open(sysfs) as f:
            names = [line.split("=", 1)[1].strip() for line in f if line.startswith("DEVNAME=")]
        fd = os.open(f"/dev/{names[0]}", os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except (OSError, IndexError):
        return None
    with opened(fd):
        st = os.fstat(fd)
        if not stat.S_ISBLK(st.st_mode) or st.st_rdev != dev:
            return None
        buf = bytearray(_LOOP_INFO64.size)
        try:
            fcntl.ioctl(fd, _LOOP_GET_STATUS64, buf)
        except OSError:
            return None
    fields = _LOOP_INFO64.unpack(bytes(buf))
    return fields[0], fields[1], fields[3]


def open_mounted_home(home: HomeLocation) -> tuple[int, int] | None:
    """(user folder fd, home fd) when the home folder is the mount point of *its own* image
    (`<home>.img` in the same user folder), else None.

    The check that lets a start skip the quota helper. The visible file system at the home
    must be a loop device's, mounted there whole (root "/", ext4, nosuid,nodev, as the helper
    mounts it), and that loop device's backing file must be this image, by device and
    inode. "Some mount" is not enough: any other file system there is left to the helper.
    """
    root_fd = os.open(home.host.storage_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    with opened(root_fd):
        try:
            user_fd = open_dir_at(root_fd, home.user_dir_name)
        except OSError:
            return None
    try:
        image = os.stat(f"{home.home_name}.img", dir_fd=user_fd, follow_symlinks=False)
        home_fd = open_dir_at(user_fd, home.home_name, _PLACE_FLAGS)
    except OSError:
        os.close(user_fd)
        return None
    try:
        dev = os.fstat(home_fd).st_dev
        backing = _loop_backing(dev) if os.major(dev) == LOOP_MAJOR else None
        ok = (
            stat.S_ISREG(image.st_mode)
            and backing == (image.st_dev, image.st_ino, 0)
            and _mounted_whole_at(os.path.realpath(home.path), dev)
        )
    except OSError:
        ok = False
    if not ok:
        os.close(home_fd)
        os.close(user_fd)
        return None
    return user_fd, home_fd


def _mounted_whole_at(path: str, dev: int) -> bool:
    """Whether the top mount at `path` is file system `dev`, whole, as the helper mounts a
    home: ext4 from /dev/loopN, nosuid and nodev."""
    top = None
    for fields in _mountinfo():
        if fields[4].replace("\\040", " ") == path:
            top = fields
    if top is None:
        return False
    rest = top[top.index("-") + 1 :]
    options = top[5].split(",")
    return (
        top[2] == f"{os.major(dev)}:{os.minor(dev)}"
        and top[3] == "/"
        and rest[0] == "ext4"
        and rest[1].startswith("/dev/loop")
        and "nosuid" in options
        and "nodev" in options
    )


def home_is_mounted(home: HomeLocation) -> bool:
    """Whether the home folder is already the mount of its own image (`open_mounted_home`)."""
    found = open_mounted_home(home)
    if found is None:
        return False
    for fd in found:
        os.close(fd)
    return True


def open_slot(storage_root: str, slot_dir: str) -> int:
    """A warm slot's folder, opened from the storage root without following a symlink at
    `.pool` or at the slot: `slot_dir` must be `<storage_root>/.pool/<hex slot>`."""
    rel = os.path.relpath(slot_dir, storage_root)
    if not _SLOT_REL.fullmatch(rel):
        raise ValueError(f"not a warm slot under {storage_root}: {slot_dir!r}")
    pool_dir, slot = rel.split("/")
    root_fd = os.open(storage_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    with opened(root_fd), opened(open_dir_at(root_fd, pool_dir)) as pool_fd:
        return open_dir_at(pool_fd, slot)


def _check_slot_home(slot_home: str) -> str:
    if not _SLOT_HOME.fullmatch(slot_home) or slot_home in (".", ".."):
        raise ValueError(f"not a home name in a slot: {slot_home!r}")
    return slot_home


def attach_locally(home: HomeLocation, slot_dir: str, slot_home: str, uid: int) -> None:
    """The quota helper's `attach`, in-process: bind the mounted home at `<slot>/<slot_home>`.

    What the warm container left at that name goes first (a symlink is removed, not
    followed; a mount there is refused). The bind is made from the opened home onto the
    opened new folder, so nothing planted in the slot between the checks and the mount can
    send the home anywhere else.
    """
    slot_home = _check_slot_home(slot_home)
    found = open_mounted_home(home)
    if found is None:
        raise QuotaUnavailable(f"home quota: home {home.home_name} is not mounted")
    user_fd, home_fd = found
    with (
        opened(user_fd),
        opened(home_fd),
        opened(open_slot(home.host.storage_root, slot_dir)) as slot_fd,
    ):
        slot_dev = os.fstat(slot_fd).st_dev
        with contextlib.suppress(FileNotFoundError):
            there = os.stat(slot_home, dir_fd=slot_fd, follow_symlinks=False)
            if stat.S_ISDIR(there.st_mode) and there.st_dev != slot_dev:
                raise QuotaUnavailable("home quota: slot already holds a home")
        remove_tree_at(slot_fd, slot_home)
        os.mkdir(slot_home, 0o755, dir_fd=slot_fd)
        os.chown(slot_home, uid, uid, dir_fd=slot_fd, follow_symlinks=False)
        with opened(open_dir_at(slot_fd, slot_home, _PLACE_FLAGS)) as target_fd:
            made = os.fstat(target_fd)
            if made.st_dev != slot_dev or made.st_uid != uid:
                raise QuotaUnavailable("home quota: the slot's home folder changed under us")
            _syscall("mount", _fd_path(home_fd), _fd_path(target_fd), None, _MS_BIND, None)


def detach_locally(storage_root: str, slot_dir: str, slot_home: str) -> None:
    """The quota helper's `detach`, in-process: unmount whatever is bound at
    `<slot>/<slot_home>`, then make sure nothing is. Idempotent; a slot already gone is
    fine."""
    slot_home = _check_slot_home(slot_home)
    try:
        slot_fd = open_slot(storage_root, slot_dir)
    except FileNotFoundError:
        return
    with opened(slot_fd):
        slot_dev = os.fstat(slot_fd).st_dev
        for _ in range(8):
            try:
                target_fd = open_dir_at(slot_fd, slot_home, _PLACE_FLAGS)
            except (FileNotFoundError, NotADirectoryError):
                return
            except OSError as e:
                if e.errno == errno.ELOOP:  # a symlink is never a mount point
                    return
                raise
            with opened(target_fd):
                if os.fstat(target_fd).st_dev == slot_dev:
                    return
                # Lazily: the fd this call holds keeps the mount busy for a plain unmount.
                _syscall("umount2", _fd_path(target_fd), _MNT_DETACH)
        raise QuotaUnavailable("home quota: slot still holds a home")


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
    if not hub_can_mount(host):
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
    if hub_mounts_locally(host) and await asyncio.wrap_future(
        spawner.executor.submit(home_is_mounted, spawner.home_location(host))
    ):
        # What the helper would find and leave as it is: no container for that.
        spawner.log.info("%s: home is mounted (its own image)", spawner._log_name)
        return
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
    (`slot_dir` on the host), where the container sees it at its home mount point. On the
    Hub's own machine the Hub binds it itself (`attach_locally`), elsewhere the helper."""
    if hub_mounts_locally(host):
        await asyncio.wrap_future(
            spawner.executor.submit(
                attach_locally, spawner.home_location(host), slot_dir, slot_home, spawner.home_uid
            )
        )
        spawner.log.info("%s: home attached to its warm slot (in-process)", spawner._log_name)
        return
    job = _job(spawner, host, "attach", slot_dir, slot_home)
    output = await run_quota_helper(spawner.docker, spawner.client, job, spawner.clone_timeout)
    spawner.log.info("%s: %s", spawner._log_name, " ".join(output.strip().splitlines()[-1:]))


async def detach_from_slot(spawner: Any, host: Any, slot_dir: str, slot_home: str) -> None:
    """Take the home's bind out of a warm slot (the home stays mounted at its own folder).
    Idempotent: a slot without the bind is left as it is. In-process on the Hub's own
    machine (`detach_locally`), elsewhere the helper."""
    if hub_mounts_locally(host):
        await asyncio.wrap_future(
            spawner.executor.submit(detach_locally, host.storage_root, slot_dir, slot_home)
        )
        return
    job = _job(spawner, host, "detach", slot_dir, slot_home)
    await run_quota_helper(spawner.docker, spawner.client, job, spawner.clone_timeout)
