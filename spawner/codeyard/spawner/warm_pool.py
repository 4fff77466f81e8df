"""The warm pool, the Hub's side: pre-started workspace containers that a spawn claims.

A cold start costs seconds because the single-user server imports jupyter_server,
JupyterLab and the extensions before it answers. None of that depends on the user, so each
host keeps `pool_size` (set per host by an admin in the placement registry, `pool.py`) warm
containers per pooled size profile and image (`WarmPool.pools`). Each runs the launcher
`codeyard.server_extension.warm_launcher`, which has imported everything and waits for one
claim. A spawn that finds a warm container of its profile and image on its host:

1. takes it out of the pool (a plain pop on the Hub's event loop, so two spawns never get
   the same one) and removes its row from the registry (its user's placement now counts);
2. moves the user's home into the container's slot folder (`move_in_command`), with the
   per-host home helper container (`ensure_helper`): no capabilities, no network, running
   as the home's uid, driven with `exec` over the Docker API, so it works on remote hosts.
   On the Hub's own machine, as root, the Hub renames it itself (`move_in_locally`), with
   every folder opened O_NOFOLLOW from the storage root;
3. sends the launcher the server's environment (the user's token, identity, URLs) and
   arguments on the claim channel, authenticated by the container's own secret;
4. waits for the server as a cold start does.

Anything that fails on the way falls back to a cold start, after putting the home back. A
claimed container is never returned to the pool: at stop its home is moved back
(`move_out_command`), its slot removed and the container deleted. The slot is in the
spawner's state, so a Hub restart or a start after a lost host still moves the home back.

Why a slot: a bind mount cannot be added to a running container, and mount propagation
needs a shared host mount (which the Docker API cannot make) or a privileged container
(refused here). So each warm container binds its own empty slot folder,
`<storage_root>/.pool/<slot>`, at the parent of the home's mount point, and the home is
*renamed* into it: same file system, so it is one atomic rename, whatever its size.

With a home quota (`home_quota.py`) the home is a mount point, which cannot be renamed. The
quota already makes the storage root a shared mount, so there the slot is bound `rslave`
and the quota helper binds the mounted home into the slot at claim (`attach_to_slot`; on
the Hub's own machine the Hub makes the bind itself); the bind reaches the running container
through that propagation, and only mounts under its own slot do. At stop it is unmounted
again (`detach_from_slot`).

docs/warm-pool.md has the whole design and its security argument.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import posixpath
import re
import secrets
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from docker.errors import APIError, NotFound
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from traitlets import Float, Integer, List, Unicode
from traitlets.config import LoggingConfigurable

from codeyard.placement.cleanup import record_claim as record_claim_in

from . import egress, home_quota

if TYPE_CHECKING:
    from codeyard.placement.hosts import DockerHost

    from .spawner import PlacementSpawner

#: Labels of warm containers: the pool (profile and image) and the slot folder's name.
POOL_LABEL = "codeyard.pool"
SLOT_LABEL = "codeyard.pool.slot"
#: The home helper's label value (`codeyard.helper`); its name is `helper_name(root)`.
HELPER_KIND = "pool-homes"
#: Label of warm containers and home helpers: the storage root they serve (one per Hub).
STORAGE_LABEL = "codeyard.pool.storage"
#: Where slots live, under each host's storage root (escaped user names never start with ".").
POOL_DIR = ".pool"
#: Where the home helper sees the host's storage root.
HELPER_MOUNT = "/homes"
#: The port the launcher, then the server, listens on (DockerSpawner's `port`).
SERVER_PORT = 8888
#: The launcher module a warm container runs.
LAUNCHER = ["python3", "-m", "codeyard.server_extension.warm_launcher"]

_SLOT = re.compile(r"[a-f0-9]{24}")
_PATH_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def pool_key(profile: str, image: str) -> str:
    """The pool a container belongs to: its size profile and image."""
    return f"{profile}@{image}"


def helper_name(storage_root: str) -> str:
    """The home helper's container name for `storage_root`: one per storage root, so two
    Hubs sharing an engine (tests, a staging Hub) never move homes with each other's."""
    return "codeyard-pool-homes-" + hashlib.sha256(storage_root.encode()).hexdigest()[:12]


def new_slot() -> str:
    return secrets.token_hex(12)


def new_secret() -> str:
    """The container's claim secret: only the Hub (and the engine it tells) knows it."""
    return secrets.token_urlsafe(32)


def slot_mount(home_mount: str) -> tuple[str, str]:
    """(where the slot is bound in the container, the home's name inside the slot): the
    parent of the home's mount point, and its last part."""
    home_mount = home_mount.rstrip("/")
    parent, base = posixpath.split(home_mount)
    if not parent or parent == "/" or not base:
        raise ValueError(f"home_mount {home_mount!r} needs a parent folder for the pool slot")
    return parent, base


def _check(part: str, what: str) -> str:
    if not _PATH_PART.fullmatch(part) or part in (".", ".."):
        raise ValueError(f"not a safe {what}: {part!r}")
    return part


def _check_slot(slot: str) -> str:
    if not _SLOT.fullmatch(slot):
        raise ValueError(f"not a pool slot: {slot!r}")
    return slot


def slot_path(root: str, slot: str) -> str:
    """The slot folder under `root` (the storage root on the host, or `HELPER_MOUNT`)."""
    return posixpath.join(root, POOL_DIR, _check_slot(slot))


def pooled_host_config(config: dict[str, Any], mount: str) -> dict[str, Any]:
    """A workspace's host config (`workspace_host_config`) for a warm container whose slot
    is bound at `mount`: the same hardening, without the tmpfs mounts at or under `mount`
    (the slot takes their place, and its contents go with the container)."""
    config = dict(config)
    tmpfs = {
        path: options
        for path, options in dict(config.get("tmpfs") or {}).items()
        if not (path.rstrip("/") == mount or path.startswith(mount.rstrip("/") + "/"))
    }
    if tmpfs:
        config["tmpfs"] = tmpfs
    else:
        config.pop("tmpfs", None)
    return config


def move_in_command(user_dir: str, home: str, slot: str, base: str) -> list[str]:
    """The helper's command that renames the home into the slot. Anything the warm
    container put at that name before the claim (a cache made at import) is not the
    user's and is removed first."""
    src = posixpath.join(HELPER_MOUNT, _check(user_dir, "user folder"), _check(home, "home"))
    dst = posixpath.join(slot_path(HELPER_MOUNT, slot), _check(base, "home name"))
    return ["sh", "-c", 'rm -rf -- "$2" && mv -T -- "$1" "$2"', "move-in", src, dst]


def move_out_command(user_dir: str, home: str, slot: str, base: str) -> list[str]:
    """The helper's command that renames the home back out of the slot, then removes the
    slot (the runtime files the server left there). Idempotent: a home already back is
    not touched again. Only a real folder moves back: a symlink a user left at the home's
    place in the slot would otherwise become the home the next container's bind follows
    on the host; the slot then stays for an admin (exit 4)."""
    dst = posixpath.join(HELPER_MOUNT, _check(user_dir, "user folder"), _check(home, "home"))
    folder = slot_path(HELPER_MOUNT, slot)
    src = posixpath.join(folder, _check(base, "home name"))
    script = (
        'if [ -L "$1" ] || { [ -e "$1" ] && [ ! -d "$1" ]; }; then'
        ' echo "$1 is not a folder; the slot is left in place"; exit 4; fi;'
        ' if [ -e "$1" ]; then { [ ! -e "$2" ] && [ ! -L "$2" ]; } || exit 3;'
        ' mv -T -- "$1" "$2" || exit 1; fi;'
        ' rm -rf --one-file-system -- "$3"'
    )
    return ["sh", "-c", script, "move-out", src, dst, folder]


def remove_slot_command(slot: str) -> list[str]:
    """The helper's command that removes a slot folder and what a server left in it. It
    never crosses into another file system, so a home still bound there (a quota'd home
    whose detach failed) is refused, never emptied."""
    return ["rm", "-rf", "--one-file-system", "--", slot_path(HELPER_MOUNT, slot)]


# ---- the same moves in-process, on the Hub's own machine ----------------------------------
#
# Where the storage root is the Hub's own file system and the Hub runs as root
# (`home_quota.hub_can_mount`), the Hub moves homes itself, in the spawner's executor
# thread: a `docker exec` in the home helper costs tens of milliseconds idle and more than a
# second on a busy machine, a rename costs microseconds. Root can rename anything, so these
# never use a path string below the storage root: each folder is opened from the one above
# with O_NOFOLLOW|O_DIRECTORY, and the renames and removals name one entry in an opened
# folder (`src_dir_fd`/`dst_dir_fd`). A symlink that a container planted in its slot, or
# anything at a home's place that is not a folder, is refused or removed, never followed.


def _lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    """What is at `name` in `dir_fd` (a symlink itself, not its target), or None."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _open_root(storage_root: str, make: bool = False) -> int:
    """The storage root (the admin's configured path; the only path that is followed),
    made first with `make`, as the engine makes a bind's missing host folder."""
    if make:
        os.makedirs(storage_root, mode=0o755, exist_ok=True)
    return os.open(storage_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def _open_pool_dir(root_fd: int, make: bool = False) -> int:
    """`.pool` under the storage root: root's, mode 1733 (as the home helper makes it)."""
    if make:
        with contextlib.suppress(FileExistsError):
            os.mkdir(POOL_DIR, 0o700, dir_fd=root_fd)
    fd = home_quota.open_dir_at(root_fd, POOL_DIR)
    if make:
        os.fchmod(fd, 0o1733)
    return fd


def make_slot_locally(storage_root: str, slot: str, uid: int) -> None:
    """`mkdir -m 0755 <slot>` as the home's uid, in-process: a new empty slot it owns."""
    _check_slot(slot)
    with (
        home_quota.opened(_open_root(storage_root, make=True)) as root_fd,
        home_quota.opened(_open_pool_dir(root_fd, make=True)) as pool_fd,
    ):
        os.mkdir(slot, 0o700, dir_fd=pool_fd)
        with home_quota.opened(home_quota.open_dir_at(pool_fd, slot)) as fd:
            os.fchown(fd, uid, uid)
            os.fchmod(fd, 0o755)


def remove_slot_locally(storage_root: str, slot: str) -> None:
    """`remove_slot_command` in-process: the slot and what a server left in it, never
    following a symlink, never crossing into another file system (a home still bound)."""
    _check_slot(slot)
    with home_quota.opened(_open_root(storage_root)) as root_fd:
        try:
            pool_fd = home_quota.open_dir_at(root_fd, POOL_DIR)
        except FileNotFoundError:
            return
        with home_quota.opened(pool_fd):
            home_quota.remove_tree_at(pool_fd, slot)


@contextlib.contextmanager
def _user_folder(
    storage_root: str, user_dir: str, home: str, slot: str, base: str
) -> Iterator[tuple[int, int]]:
    """The names of a move checked, then (storage root, user folder) opened as directory
    fds without following a symlink at either, closed when the move is done."""
    _check(user_dir, "user folder")
    _check(home, "home")
    _check(base, "home name")
    _check_slot(slot)
    with (
        home_quota.opened(_open_root(storage_root)) as root_fd,
        home_quota.opened(home_quota.open_dir_at(root_fd, user_dir)) as user_fd,
    ):
        yield root_fd, user_fd


def move_in_locally(storage_root: str, user_dir: str, home: str, slot: str, base: str) -> None:
    """`move_in_command` in-process: rename the home into the slot as `base`.

    The home must be a real folder (a symlink at its place is refused before anything
    moves). What the warm container put at `base` is removed first, a symlink as a link,
    never followed. The rename keeps the home's owner, as the helper's `mv` did.
    """
    with (
        _user_folder(storage_root, user_dir, home, slot, base) as (root_fd, user_fd),
        home_quota.opened(_open_pool_dir(root_fd)) as pool_fd,
        home_quota.opened(home_quota.open_dir_at(pool_fd, slot)) as slot_fd,
    ):
        before = os.stat(home, dir_fd=user_fd, follow_symlinks=False)
        if not stat.S_ISDIR(before.st_mode):
            raise RuntimeError(f"home {user_dir}/{home} is not a folder; nothing moved")
        home_quota.remove_tree_at(slot_fd, base)
        os.rename(home, base, src_dir_fd=user_fd, dst_dir_fd=slot_fd)
        after = os.stat(base, dir_fd=slot_fd, follow_symlinks=False)
        if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
            # Swapped between the check and the rename: put back whatever moved, refuse.
            os.rename(base, home, src_dir_fd=slot_fd, dst_dir_fd=user_fd)
            raise RuntimeError(f"home {user_dir}/{home} changed while moving; moved back")


def move_out_locally(storage_root: str, user_dir: str, home: str, slot: str, base: str) -> None:
    """`move_out_command` in-process: rename the home back out of the slot, then remove the
    slot. Idempotent: a home already back (nothing at `base`) is not touched again.

    Only a real folder is moved back: a symlink or file a user left at their home's place
    in the slot is refused, and the slot stays (with whatever the user moved elsewhere in
    it) for an admin, rather than a link becoming the home that the next container binds.
    """
    with _user_folder(storage_root, user_dir, home, slot, base) as (root_fd, user_fd):
        try:
            pool_fd = home_quota.open_dir_at(root_fd, POOL_DIR)
        except FileNotFoundError:
            return
        with home_quota.opened(pool_fd):
            try:
                slot_fd = home_quota.open_dir_at(pool_fd, slot)
            except FileNotFoundError:
                return
            with home_quota.opened(slot_fd):
                there = _lstat_at(slot_fd, base)
                if there is not None:
                    if not stat.S_ISDIR(there.st_mode):
                        raise RuntimeError(
                            f"slot {slot}: {base} is not a folder; the slot is left in place"
                        )
                    if _lstat_at(user_fd, home) is not None:
                        raise RuntimeError(f"{user_dir}/{home} exists; the home stays in {slot}")
                    os.rename(base, home, src_dir_fd=slot_fd, dst_dir_fd=user_fd)
            home_quota.remove_tree_at(pool_fd, slot)


@dataclass
class WarmContainer:
    """A warm container the Hub may hand out."""

    host: str
    key: str
    name: str
    id: str
    slot: str
    secret: str
    ip: str
    port: int


class PoolOwner:
    """The identity of the spawner that makes warm containers: no user's. Its name only
    appears in the Hub's log lines; a warm container gets no user's name, token or
    environment until a spawn claims it."""

    name = "codeyard-pool"
    escaped_name = "codeyard-pool"
    groups: list[Any] = []
    url = "/"


class WarmPool(LoggingConfigurable):
    """Keeps each host's warm containers, hands them out, and puts homes back.

    One per Hub, running in the Hub's event loop (`run_with_hub`). Hosts and their pool
    size come from the host provider (`pool_hosts`); a provider without a pool (the local
    one) keeps none.
    """

    pools: list[dict[str, str]] = List(  # type: ignore[assignment]
        help="""Which warm pools each host keeps, as [{"profile": name, "image": key}];
        `pool_size` containers of each. Default: one pool, the default profile and the
        first allowed image (what a spawn without options gets). Each pool costs its
        profile's memory per container on every host with a pool size.""",
    ).tag(config=True)

    interval = Float(
        2.0, help="""Seconds between two refill rounds (a claim starts one at once)."""
    ).tag(config=True)

    ready_timeout = Float(
        180.0,
        help="""Seconds a new warm container may take to answer on its claim channel before
        it is removed and made again.""",
    ).tag(config=True)

    claim_timeout = Float(10.0, help="""Seconds the claim call to a launcher may take.""").tag(
        config=True
    )

    helper_image = Unicode(
        "",
        help="""Image of the per-host home helper (needs `sh`, `mv`, `sleep` and GNU
        `rm`, whose `--one-file-system` keeps a slot's removal out of a home still bound
        there). Empty: the workspace image, which every pooled host has anyway.""",
    ).tag(config=True)

    helper_pids_limit = Integer(64, help="""pids limit of the home helper container.""").tag(
        config=True
    )

    _instance: WarmPool | None = None

    def __init__(self, app: Any, spawner_class: type[PlacementSpawner], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.app = app
        self.spawner_class = spawner_class
        self.ready: dict[tuple[str, str], list[WarmContainer]] = {}
        self._starting: dict[str, WarmContainer] = {}
        self._spawners: dict[str, PlacementSpawner] = {}
        self._adopted: set[str] = set()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._base: PlacementSpawner | None = None

    @classmethod
    def instance(cls) -> WarmPool | None:
        return cls._instance

    # ---- handing out -------------------------------------------------------------------

    def take(self, host: str, key: str) -> WarmContainer | None:
        """A ready warm container of pool `key` on `host`, out of the pool for good. No
        await between the look and the pop: concurrent claims get different containers."""
        found = self.ready.get((host, key))
        if not found:
            return None
        warm = found.pop(0)
        self.kick()
        return warm

    def kick(self) -> None:
        """Start a refill round now (after a claim, or an admin's change)."""
        self._wake.set()

    # ---- the background loop -----------------------------------------------------------

    async def run(self) -> None:
        while True:
            try:
                await self.refill_all()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception("warm pool: refill round failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)

    def pool_spawner(self, host: DockerHost) -> PlacementSpawner:
        """A spawner of no user on `host`: the workspaces' configuration, hardening,
        network and egress plan, for making warm containers exactly like workspaces."""
        spawner = self._spawners.get(host.name)
        if spawner is None:
            spawner = self.spawner_class(
                config=self.app.config, hub=self.app.hub, user=PoolOwner(), name="pool"
            )
            spawner._progress_events = []
            self._spawners[host.name] = spawner
        spawner.host_name, spawner._host = host.name, host
        return spawner

    def pool_list(self, spawner: PlacementSpawner) -> list[tuple[str, str, Any]]:
        """[(pool key, image, profile)] of the configured pools."""
        images = spawner.image_choices()
        profiles = spawner.size_profiles
        wanted = self.pools or [{"profile": spawner.default_profile, "image": next(iter(images))}]
        found = []
        for spec in wanted:
            profile = profiles[spec["profile"]]
            image = images[spec["image"]]
            found.append((pool_key(profile.name, image), image, profile))
        return found

    async def refill_all(self) -> None:
        provider = self._provider()
        sizes: dict[str, int] = {}
        if provider is not None and hasattr(provider, "pool_hosts"):
            sizes = await provider.pool_hosts()
        # Hosts no longer pooled (size 0, drained, down): their warm containers go.
        for host_name, key in list(self.ready):
            if host_name not in sizes:
                await self._empty(host_name, key)
        for host_name, size in sizes.items():
            try:
                host = provider.get(host_name)
                spawner = self.pool_spawner(host)
                await self._adopt(spawner, host)
                await self._trim(spawner, host, provider)
                for key, image, profile in self.pool_list(spawner):
                    await self._refill(spawner, host, provider, key, image, profile, size)
            except Exception:
                self.log.exception("warm pool: host %s", host_name)

    def _provider(self) -> Any:
        """The Hub's host provider (the one its spawners share)."""
        if self._base is None:
            self._base = self.spawner_class(config=self.app.config, user=PoolOwner(), name="pool")
        return self._base.host_provider

    async def _refill(
        self,
        spawner: PlacementSpawner,
        host: DockerHost,
        provider: Any,
        key: str,
        image: str,
        profile: Any,
        size: int,
    ) -> None:
        ready = self.ready.setdefault((host.name, key), [])
        starting = [w for w in self._starting.values() if (w.host, w.key) == (host.name, key)]
        while len(ready) > size:
            await self._remove(spawner, ready.pop(), provider)
        missing = size - len(ready) - len(starting)
        if missing <= 0:
            return
        # One at a time per host and round: a refill must not take the CPU users start on.
        name = f"codeyard-pool-{new_slot()[:12]}"
        mem = int(profile.mem_bytes // (1024 * 1024))
        if not await provider.pool_reserve(host.name, name, key, mem):
            return  # the host is at capacity: the pool fills only room nobody uses
        try:
            warm = await self._make(spawner, host, name, key, image, profile)
        except Exception:
            await provider.pool_release(name)
            raise
        task = asyncio.ensure_future(self._until_ready(spawner, warm, provider))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _until_ready(
        self, spawner: PlacementSpawner, warm: WarmContainer, provider: Any
    ) -> None:
        self._starting[warm.name] = warm
        client = AsyncHTTPClient(force_instance=True)
        deadline = time.monotonic() + self.ready_timeout
        try:
            while time.monotonic() < deadline:
                with contextlib.suppress(Exception):
                    resp = await client.fetch(
                        f"http://{warm.ip}:{warm.port}/warm", raise_error=False, request_timeout=2
                    )
                    if resp.code == 200:
                        self.ready.setdefault((warm.host, warm.key), []).append(warm)
                        self.log.info("warm pool: %s ready on %s", warm.name, warm.host)
                        return
                await asyncio.sleep(0.3)
            self.log.warning("warm pool: %s never got warm; removing it", warm.name)
            await self._remove(spawner, warm, provider)
        finally:
            client.close()
            self._starting.pop(warm.name, None)

    async def _trim(self, spawner: PlacementSpawner, host: DockerHost, provider: Any) -> None:
        """Remove warm containers the host has no room for any more (cold starts took it)."""
        over = await provider.pool_surplus(host.name)
        for (host_name, _key), ready in self.ready.items():
            while over > 0 and host_name == host.name and ready:
                await self._remove(spawner, ready.pop(), provider)
                over -= 1

    async def _empty(self, host_name: str, key: str) -> None:
        ready = self.ready.pop((host_name, key), [])
        provider = self._provider()
        for warm in ready:
            spawner = self._spawners.get(host_name)
            if spawner is not None:
                await self._remove(spawner, warm, provider)

    async def _adopt(self, spawner: PlacementSpawner, host: DockerHost) -> None:
        """Once per host after the Hub starts: take the warm containers an earlier Hub
        process left (their secrets are in their engine), remove unclaimable ones."""
        if host.name in self._adopted:
            return
        self._adopted.add(host.name)
        provider = self._provider()
        recorded = set(await provider.pool_recorded(host.name))
        for c in await spawner.docker(
            "containers", all=True, filters={"label": f"{STORAGE_LABEL}={host.storage_root}"}
        ):
            name = c["Names"][0].lstrip("/")
            info = await spawner.docker("inspect_container", c["Id"])
            env = dict(e.split("=", 1) for e in info["Config"]["Env"] if "=" in e)
            ports = (info["NetworkSettings"]["Ports"] or {}).get(f"{SERVER_PORT}/tcp") or []
            if POOL_LABEL not in c["Labels"]:
                continue  # the home helper
            if not (info["State"]["Running"] and ports):
                if name in recorded:
                    await provider.pool_release(name)  # dead: not claimable
                continue
            warm = WarmContainer(
                host=host.name,
                key=c["Labels"][POOL_LABEL],
                name=name,
                id=c["Id"],
                slot=c["Labels"][SLOT_LABEL],
                secret=env.get("CODEYARD_POOL_SECRET", ""),
                ip=host.host_ip,
                port=int(ports[0]["HostPort"]),
            )
            if name not in recorded:
                # No row: claimed by a workspace (its server answers at that port now), or
                # left half-removed by a Hub that died. Only a launcher still waiting for
                # its claim answers `/warm`; that one is nobody's and goes.
                if await _still_warm(warm):
                    self.log.info("warm pool: removing unrecorded warm container %s", name)
                    await self._remove(spawner, warm, None)
                continue
            task = asyncio.ensure_future(self._until_ready(spawner, warm, provider))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        for name in recorded:
            with contextlib.suppress(NotFound):
                await spawner.docker("inspect_container", name)
                continue
            await provider.pool_release(name)

    # ---- making and removing -----------------------------------------------------------

    async def _make(
        self,
        spawner: PlacementSpawner,
        host: DockerHost,
        name: str,
        key: str,
        image: str,
        profile: Any,
    ) -> WarmContainer:
        """Create and start one warm container with a workspace's settings and hardening."""
        spawner.image = image
        spawner.use_host_addresses(host)
        await spawner.pull_image(image)
        await spawner.ensure_workspace_network()
        plan = await egress.prepare_workspace(spawner)
        slot = new_slot()
        mount, _base = slot_mount(spawner.home_mount)
        if home_quota.hub_can_mount(host):
            await _in_executor(
                spawner, make_slot_locally, host.storage_root, slot, spawner.home_uid
            )
        else:
            await self.ensure_helper(spawner, host)
            await self.helper_exec(
                spawner, ["mkdir", "-m", "0755", slot_path(HELPER_MOUNT, slot)], spawner.home_uid
            )
        secret = new_secret()
        config = pooled_host_config(spawner.workspace_host_config(), mount)
        extra = spawner.extra_host_config if isinstance(spawner.extra_host_config, dict) else {}
        slot_bind: dict[str, str] = {"bind": mount, "mode": "rw"}
        if home_quota.quota_applies(spawner):
            # A quota'd home is a mount point and cannot be renamed into the slot: the quota
            # helper binds it there at claim instead, and `rslave` lets that later mount
            # (and only mounts under this slot) reach the running container, never the
            # other way. Docker allows it only on a shared (or slave) storage root.
            await home_quota.shared_storage_root(spawner, host)
            slot_bind["propagation"] = "rslave"
        binds = {slot_path(host.storage_root, slot): slot_bind}
        if host.storage_is_local:
            binds.update(spawner.extra_volumes)
        host_config = await spawner.docker(
            "create_host_config",
            **{**config, **extra},
            binds=binds,
            port_bindings={SERVER_PORT: (host.host_ip,)},
            mem_limit=profile.mem_bytes,
            cpu_period=100_000,
            cpu_quota=int(profile.cpu * 100_000),
        )
        command = egress.gated_command(LAUNCHER) if plan is not None else list(LAUNCHER)
        created = await spawner.docker(
            "create_container",
            image=image,
            name=name,
            command=command,
            environment={"CODEYARD_POOL_SECRET": secret, "CODEYARD_POOL_PORT": str(SERVER_PORT)},
            user=f"{spawner.home_uid}:{spawner.home_uid}",
            # Not the image's WORKDIR: inside the slot, the engine would make it as root.
            working_dir="/tmp",  # noqa: S108 - in the container
            ports=[SERVER_PORT],
            labels={
                POOL_LABEL: key,
                SLOT_LABEL: slot,
                STORAGE_LABEL: host.storage_root,
                "codeyard.network": spawner.workspace_network or spawner.network_name,
            },
            host_config=host_config,
        )
        cid = created["Id"]
        try:
            await spawner.docker("start", cid)
            if plan is not None:
                proxy = egress.egress_for(spawner.config, spawner.log)
                await proxy.lock_workspace(spawner.docker, cid, plan, spawner.home_uid)
            info = await spawner.docker("inspect_container", cid)
        except Exception:
            with contextlib.suppress(NotFound, APIError):
                await spawner.docker("remove_container", cid, force=True)
            raise
        port = int(info["NetworkSettings"]["Ports"][f"{SERVER_PORT}/tcp"][0]["HostPort"])
        self.log.info("warm pool: made %s (%s) on %s", name, key, host.name)
        return WarmContainer(host.name, key, name, cid, slot, secret, host.host_ip, port)

    async def _remove(self, spawner: PlacementSpawner, warm: WarmContainer, provider: Any) -> None:
        """Remove a warm container nobody claimed, and its slot.

        Its registry row goes first, so the host's load never counts a container that is
        already gone (an admin who sets the pool size to 0 sees `pooled` reach 0 as the
        containers go). A Hub that dies between the two leaves an unrecorded warm
        container; the next Hub finds it still unclaimed in `_adopt` and removes it.
        """
        if provider is not None:
            await provider.pool_release(warm.name)
        with contextlib.suppress(NotFound, APIError):
            await spawner.docker("remove_container", warm.id, force=True)
        with contextlib.suppress(Exception):
            if home_quota.hub_can_mount(spawner.host):
                await _in_executor(
                    spawner, remove_slot_locally, spawner.host.storage_root, warm.slot
                )
            else:
                await self.helper_exec(spawner, remove_slot_command(warm.slot), spawner.home_uid)

    # ---- the home helper ---------------------------------------------------------------

    async def ensure_helper(self, spawner: PlacementSpawner, host: DockerHost) -> str:
        """The host's home helper, running: no capabilities, no network, read-only root,
        the home's uid, the storage root at `HELPER_MOUNT`; and the slots' folder."""
        try:
            info = await spawner.docker("inspect_container", helper_name(host.storage_root))
            if info["State"]["Running"]:
                return str(info["Id"])
            await spawner.docker("remove_container", info["Id"], force=True)
        except NotFound:
            pass
        uid = spawner.home_uid
        host_config = await spawner.docker(
            "create_host_config",
            binds={host.storage_root: {"bind": HELPER_MOUNT, "mode": "rw"}},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"],
            read_only=True,
            network_mode="none",
            pids_limit=self.helper_pids_limit,
            mem_limit="64m",
            restart_policy={"Name": "unless-stopped"},
        )
        try:
            created = await spawner.docker(
                "create_container",
                image=self.helper_image or spawner.image,
                name=helper_name(host.storage_root),
                entrypoint=["sleep", "infinity"],
                command=[],
                user=f"{uid}:{uid}",
                working_dir="/",
                labels={"codeyard.helper": HELPER_KIND, STORAGE_LABEL: host.storage_root},
                host_config=host_config,
            )
        except APIError as e:
            if e.status_code != 409:  # another round made it meanwhile
                raise
            return str(
                (await spawner.docker("inspect_container", helper_name(host.storage_root)))["Id"]
            )
        await spawner.docker("start", created["Id"])
        # The slots' folder: made by uid 0 of the helper, which has no capability either
        # and may only write because it owns the storage root; sticky and unlistable, so
        # the home's uid may make slots there but never list or touch another's.
        await self.helper_exec(
            spawner,
            [
                "sh",
                "-c",
                'mkdir -p "$1" && chmod 1733 "$1"',
                "pool-dir",
                posixpath.join(HELPER_MOUNT, POOL_DIR),
            ],
            0,
        )
        return str(created["Id"])

    async def helper_exec(self, spawner: PlacementSpawner, command: list[str], uid: int) -> None:
        """Run `command` in the host's home helper as `uid`; raise with its output if it
        fails."""
        name = helper_name(spawner.host.storage_root)
        ex = await spawner.docker("exec_create", name, command, user=f"{uid}:{uid}")
        output = await spawner.docker("exec_start", ex["Id"])
        code = (await spawner.docker("exec_inspect", ex["Id"]))["ExitCode"]
        if code != 0:
            text = output.decode("utf-8", "replace").strip() if output else ""
            raise RuntimeError(f"home helper {command[0]} failed ({code}): {text}")


# ---- a spawn's side -------------------------------------------------------------------


async def claim(
    spawner: PlacementSpawner, host: DockerHost, profile: str
) -> tuple[str, int] | None:
    """Hand a warm container of `spawner`'s profile and image on `host` to its user; the
    server's (ip, port), or None when there is none (or the hand-over failed: the home is
    then back where it was, and the spawn starts cold)."""
    pool = WarmPool.instance()
    if pool is None or host.is_swarm:
        return None
    warm = pool.take(host.name, pool_key(profile, spawner.image))
    if warm is None:
        return None
    provider: Any = spawner.host_provider
    spawner.emit(40, "Claiming a warm workspace")
    moved = False
    try:
        await asyncio.gather(
            provider.pool_release(warm.name),
            record_claim(provider, spawner.user.name, spawner.name or "", host.name, warm.name),
        )
        home = spawner.home_location(host)
        _mount, base = slot_mount(spawner.home_mount)
        local = home_quota.hub_can_mount(host)
        if not local:
            await pool.ensure_helper(spawner, host)
        if home_quota.quota_applies(spawner):
            # The home is its own mounted file system: bound into the slot, not renamed. A
            # failure half-way is undone like a finished attach (detach is idempotent).
            moved = True
            spawner.warm_slot = warm.slot
            await home_quota.attach_to_slot(
                spawner, host, slot_path(host.storage_root, warm.slot), _check(base, "home name")
            )
        elif local:
            await _in_executor(
                spawner,
                move_in_locally,
                host.storage_root,
                home.user_dir_name,
                home.home_name,
                warm.slot,
                base,
            )
        else:
            await pool.helper_exec(
                spawner,
                move_in_command(home.user_dir_name, home.home_name, warm.slot, base),
                spawner.home_uid,
            )
        moved = True
        spawner.warm_slot = warm.slot
        spawner.object_id, spawner.object_name = warm.id, warm.name
        spawner._egress = await egress.prepare_workspace(spawner)
        env = spawner.get_env()
        args = list(spawner.get_args())
        await _send_claim(warm, env, args, spawner.home_mount, pool.claim_timeout)
    except Exception as e:
        spawner.log.warning("%s: warm claim of %s failed: %s", spawner._log_name, warm.name, e)
        with contextlib.suppress(NotFound, APIError):
            await spawner.docker("remove_container", warm.id, force=True)
        if moved:
            await release_home(spawner, host)
        spawner.object_id, spawner.object_name = "", spawner._object_name_default()
        spawner.emit(40, "No warm workspace could be claimed; starting one")
        return None
    spawner.emit(60, "Starting Jupyter server in the warm workspace")
    return warm.ip, warm.port


async def _in_executor(spawner: PlacementSpawner, fn: Any, *args: Any) -> Any:
    """Run file-system work for the spawner's host in its executor thread, off the Hub's
    event loop."""
    return await asyncio.wrap_future(spawner.executor.submit(fn, *args))


async def record_claim(provider: Any, user: str, workspace: str, host: str, name: str) -> None:
    """Record in the registry that `user/workspace` runs in the warm container `name`.

    A claimed container keeps the pool's labels (labels cannot change on a running
    container), so this record is how placement's clean-up of a host that came back
    (`cleanup.remove_stale_containers`) finds the workspace it belongs to. The Hub itself
    follows the container id and name in the spawner's state. A provider without a
    registry has no clean-up to tell. Bookkeeping only: a failure is logged.
    """
    registry = getattr(provider, "registry", None)
    if registry is None:
        return
    try:
        await asyncio.to_thread(record_claim_in, registry, user, workspace, host, name)
    except Exception:
        provider.log.exception("warm pool: could not record the claim of %s", name)


async def _still_warm(warm: WarmContainer) -> bool:
    """Whether `warm`'s launcher still waits for a claim (its `/warm` answers 200). A
    claimed container's server does not serve that path; no answer counts as claimed."""
    client = AsyncHTTPClient(force_instance=True)
    try:
        resp = await client.fetch(
            f"http://{warm.ip}:{warm.port}/warm",
            raise_error=False,
            request_timeout=3,
            follow_redirects=False,
        )
        return resp.code == 200
    except Exception:
        return False
    finally:
        client.close()


async def _send_claim(
    warm: WarmContainer, env: dict[str, str], args: list[str], cwd: str, limit: float
) -> None:
    client = AsyncHTTPClient(force_instance=True)
    try:
        request = HTTPRequest(
            f"http://{warm.ip}:{warm.port}/claim",
            method="POST",
            headers={"Authorization": f"Bearer {warm.secret}", "Content-Type": "application/json"},
            body=json.dumps({"env": env, "args": args, "cwd": cwd}),
            request_timeout=limit,
        )
        resp = await client.fetch(request, raise_error=False)
        if resp.code != 200:
            raise RuntimeError(f"the launcher answered {resp.code}")
    finally:
        client.close()


async def release_home(spawner: PlacementSpawner, host: DockerHost) -> None:
    """Move the home back out of the claimed container's slot and remove the slot; the
    container must be stopped. Clears `warm_slot` once done, so it is done exactly once."""
    slot = spawner.warm_slot
    if not slot:
        return
    pool = WarmPool.instance() or WarmPool(None, type(spawner), config=spawner.config)
    home = spawner.home_location(host)
    _mount, base = slot_mount(spawner.home_mount)
    local = home_quota.hub_can_mount(host)
    if not local:
        await pool.ensure_helper(spawner, host)
    if home_quota.quota_applies(spawner):
        # The home was bound into the slot (it never left its own folder): take the bind
        # away, then remove the slot, which refuses to cross into a bind still there.
        await home_quota.detach_from_slot(
            spawner, host, slot_path(host.storage_root, slot), _check(base, "home name")
        )
        # The detach checked that the slot holds no home any more; removing the empty slot
        # is housekeeping. Through the home helper it can fail only where the helper's own,
        # older namespace still holds a copy of the bind (the helper was restarted while
        # the container ran): the slot then stays, empty, and the stop goes on.
        try:
            if local:
                await _in_executor(spawner, remove_slot_locally, host.storage_root, slot)
            else:
                await pool.helper_exec(spawner, remove_slot_command(slot), spawner.home_uid)
        except (RuntimeError, OSError) as e:
            spawner.log.warning("%s: slot %s left in place: %s", spawner._log_name, slot, e)
    elif local:
        await _in_executor(
            spawner,
            move_out_locally,
            host.storage_root,
            home.user_dir_name,
            home.home_name,
            slot,
            base,
        )
    else:
        await pool.helper_exec(
            spawner,
            move_out_command(home.user_dir_name, home.home_name, slot, base),
            spawner.home_uid,
        )
    spawner.warm_slot = ""
    spawner.log.info("%s: home out of warm slot %s", spawner._log_name, slot)


def run_with_hub(spawner_class: Any = None) -> None:
    """Start the Hub's warm pool once the Hub is up: call from the Hub's config file.

    Nothing runs outside a Hub process (a config loaded by another tool has no running
    event loop) and nothing refills until an admin gives a host a pool size.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return

    async def start() -> None:
        from jupyterhub.app import JupyterHub

        from .spawner import PlacementSpawner

        app = JupyterHub.instance()
        # The Hub finishes its own start after the config file is loaded.
        while getattr(app, "hub", None) is None or not getattr(app, "proxy", None):  # noqa: ASYNC110
            await asyncio.sleep(0.5)
        cls = spawner_class or PlacementSpawner
        if not (isinstance(app.spawner_class, type) and issubclass(app.spawner_class, cls)):
            return  # another spawner: no pool
        pool = WarmPool(app, app.spawner_class, config=app.config, log=app.log)
        WarmPool._instance = pool
        await pool.run()

    task = loop.create_task(start())
    _background.add(task)


_background: set[asyncio.Task[Any]] = set()
