"""`RegistryHostProvider`: the registry behind `PlacementSpawner`'s `HostProvider` seam.

    c.PlacementSpawner.host_provider_class = "codeyard.placement.provider.RegistryHostProvider"
    c.RegistryHostProvider.db_url = "sqlite:////srv/codeyard/placement.sqlite"

`choose()` runs the registry's `place()` (pins, sticky placement, drain and failover rules,
then the policy) and records the decision; `get()` looks a host up by name without deciding
anything. Docker's TLS client needs files, so each host's decrypted bundle is written once
to `runtime_dir/<host>-<cert fingerprint>/` (mode 0700/0600); a new credential gets a new
folder, hence a new cached client in the spawner. `ssh://` hosts get a long-lived
`connect.SSHTunnel` and reach the spawner as a `unix://` URL of the forwarded socket. The
placement policy is `c.PlacementService`'s (`settings.PlacementService`), the one the admin
service shows.

Because this provider sets `decides_every_start`, `PlacementSpawner` calls `choose()` at every
start (a changed host name means the workspace moved, and the spawner forgets the old
container), and it awaits `started(spawner)` / `stopped(spawner)`, which keep the placement's
state (running/stopped) that least-loaded counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tornado import web
from traitlets import Float, Integer, Unicode, default

from . import pool
from .addresses import on_hub_machine
from .connect import SSHTunnel
from .crypto import CredentialCipher, keys_from_env
from .database import db_url_from_env, open_db
from .hosts import DEFAULT_STORAGE_ROOT, DockerHost, DockerTLS, HostProvider, UnknownHost
from .image_registry import RegistryLogin
from .models import PlacementState, ServerState
from .policies import NoHostAvailable
from .registry import NeedsConfirmation, NotFound, Registry
from .settings import PlacementService

if TYPE_CHECKING:
    from jupyterhub.spawner import Spawner


class RegistryHostProvider(HostProvider):
    """Hosts from the placement registry; see the module docstring."""

    # Ask choose() at every start, not only the first: it is sticky while the host is
    # active, and it is where pins, drains and failover take effect.
    decides_every_start = True

    db_url = Unicode(
        help="""SQLAlchemy URL of the placement registry (the service's database).

        Defaults to `$CODEYARD_PLACEMENT_DB_URL`.
        """
    ).tag(config=True)

    @default("db_url")
    def _default_db_url(self) -> str:
        return db_url_from_env()

    crypt_key = Unicode(
        help="""Keys that decrypt host credentials, `;`-separated (the first encrypts).

        Defaults to `$CODEYARD_PLACEMENT_CRYPT_KEY`; must match the placement service's.
        """
    ).tag(config=True)

    @default("crypt_key")
    def _default_crypt_key(self) -> str:
        return keys_from_env()

    runtime_dir = Unicode(
        "",
        help="""Private folder for decrypted TLS files docker-py reads and SSH tunnels'
        sockets (made with mode 0700). Prefer a tmpfs.

        Empty: a private temporary folder, made at first use and removed with the provider.
        The Hub config passes `$XDG_RUNTIME_DIR/codeyard-placement`, else `placement-tls`
        in its state folder.
        """,
    ).tag(config=True)

    cache_seconds = Float(
        5.0, help="""How long `get()` may answer from memory before re-reading the registry."""
    ).tag(config=True)

    default_storage_root = Unicode(
        DEFAULT_STORAGE_ROOT,
        help="""Storage root for hosts registered without one.""",
    ).tag(config=True)

    workers = Integer(4, help="""Threads for registry calls (SQLAlchemy is blocking).""").tag(
        config=True
    )

    _registry: Registry | None = None
    _executor: ThreadPoolExecutor | None = None

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._cache: dict[str, tuple[float, DockerHost]] = {}
        self._down_cache: dict[str, tuple[float, str | None]] = {}
        self._tunnels: dict[tuple[str, str], SSHTunnel] = {}
        # The worker threads open a host's tunnel on first use; one lock keeps two spawns for
        # the same host from opening two tunnels (one would leak an ssh process).
        self._tunnels_lock = threading.Lock()
        self._private_dir = ""

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            settings = PlacementService(config=self.config).placement_settings()
            cipher = CredentialCipher(self.crypt_key or None)
            self._registry = Registry(open_db(self.db_url), cipher, settings)
        return self._registry

    @registry.setter
    def registry(self, value: Registry) -> None:
        self._registry = value

    async def _blocking(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="codeyard-hosts")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(fn, *args, **kwargs))

    # ---- the seam ----------------------------------------------------------------------

    async def choose(self, spawner: Spawner) -> DockerHost:
        user = spawner.user
        groups = [g.name for g in getattr(user, "groups", [])]
        mem = int((getattr(spawner, "mem_limit", None) or 0) // (1024 * 1024))
        try:
            result = await self._blocking(
                self.registry.place,
                user.name,
                spawner.name or "",
                groups,
                mem,
                known_host=getattr(spawner, "host_name", "") or "",
            )
        except NoHostAvailable as e:
            raise web.HTTPError(503, str(e).replace("%", "%%")) from None
        except NeedsConfirmation as e:
            # Said to the workspace's owner, who cannot confirm it: name who can, and where.
            message = (
                f"{e} Ask an admin to confirm the move (Placement page, Workspaces: 'Move"
                " anyway'); it then starts on another host, without the files left there."
            )
            raise web.HTTPError(409, message.replace("%", "%%")) from None
        self.log.info("placement %s/%s: %s", user.name, spawner.name, result.reason)
        self._cache.pop(result.server_name, None)
        return await self._blocking(self.get, result.server_name)

    def get(self, name: str) -> DockerHost:
        hit = self._cache.get(name)
        if hit and time.monotonic() - hit[0] < self.cache_seconds:
            return hit[1]
        try:
            server = self.registry.get_server(name)
            _endpoint, kind, secret = self.registry.connection(name)
        except NotFound:
            self._cache.pop(name, None)
            raise UnknownHost(name) from None
        host = self._host(server, kind, secret)
        self._cache[name] = (time.monotonic(), host)
        return host

    async def started(self, spawner: Spawner) -> None:
        await self._mark(spawner, PlacementState.running)

    async def stopped(self, spawner: Spawner) -> None:
        await self._mark(spawner, PlacementState.stopped)

    async def _mark(self, spawner: Spawner, state: PlacementState) -> None:
        with contextlib.suppress(NotFound):
            await self._blocking(self.registry.mark, spawner.user.name, spawner.name or "", state)

    async def host_unreachable(self, name: str, error: str) -> None:
        """Record the failed check and mark the host down now (see `HostProvider`).

        The health monitor brings the host back at its first successful ping (draining
        again if an admin had drained it), just as when it marked the host down itself.
        """
        result = {"ok": False, "at": time.time(), "error": f"unreachable from the Hub: {error}"}
        self._down_cache.pop(name, None)
        with contextlib.suppress(NotFound):
            await self._blocking(self.registry.record_probe, name, result, False)
            await self._blocking(self.registry.set_state, name, ServerState.down)
            self.log.warning("host %s marked down: %s", name, error)

    async def host_down(self, name: str) -> str | None:
        """Read from the registry at most every `cache_seconds` per host: every poll of
        every running workspace asks this."""
        hit = self._down_cache.get(name)
        if hit and time.monotonic() - hit[0] < self.cache_seconds:
            return hit[1]
        try:
            server = await self._blocking(self.registry.get_server, name)
        except NotFound:
            return None
        answer = None
        if server["state"] == ServerState.down.value:
            error = (server["last_test"] or {}).get("error") or "no answer"
            seen = server["last_seen"]
            since = f", last answered {seen.replace('T', ' ')[:19]} UTC" if seen else ""
            answer = f"machine {name} is down{since}: {error}"
        self._down_cache[name] = (time.monotonic(), answer)
        return answer

    async def record_image(self, transfer: Any) -> None:
        """An image reached a host (`image_transfer.Transfer`): keep how, for the host page."""
        await self._blocking(
            self.registry.record_image,
            transfer.host,
            transfer.image,
            transfer.path,
            digest=transfer.digest,
            detail=transfer.detail,
            seconds=transfer.seconds,
        )

    async def registry_login(self, registry: str) -> RegistryLogin | None:
        """The image registry's login an admin stored (decrypted), for the image pull."""
        return await self._blocking(self.registry.registry_logins.login, registry)

    # ---- the warm pool (`pool.py`; the Hub's side is `codeyard.spawner.warm_pool`) --------

    async def pool_hosts(self) -> dict[str, int]:
        """{host name: pool size} of the hosts that keep warm containers now."""
        return dict(await self._blocking(pool.pool_hosts, self.registry.sessions))

    async def pool_reserve(self, host: str, container: str, key: str, mem: int) -> bool:
        """Record a warm container about to be made, if `host` has room; whether it has."""
        return bool(
            await self._blocking(pool.reserve, self.registry.sessions, host, container, key, mem)
        )

    async def pool_release(self, container: str) -> bool:
        """Forget a warm container (claimed or removed); whether it was recorded."""
        return bool(await self._blocking(pool.release, self.registry.sessions, container))

    async def pool_recorded(self, host: str) -> list[str]:
        return list(await self._blocking(pool.recorded, self.registry.sessions, host))

    async def pool_surplus(self, host: str) -> int:
        """Warm containers `host` holds beyond its capacity, to remove."""
        return int(await self._blocking(pool.surplus, self.registry.sessions, host))

    # ---- building hosts ----------------------------------------------------------------

    def _runtime_path(self) -> Path:
        """`runtime_dir`, made private (0700); a temporary folder when it is empty."""
        if self.runtime_dir:
            Path(self.runtime_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
            return Path(self.runtime_dir)
        if not self._private_dir:
            self._private_dir = tempfile.mkdtemp(prefix="codeyard-placement-")
            # decrypted keys must not outlive the process that decrypted them
            weakref.finalize(self, shutil.rmtree, self._private_dir, True)
        return Path(self._private_dir)

    def _host(self, server: Any, kind: str | None, secret: dict[str, Any] | None) -> DockerHost:
        endpoint = server["endpoint"]
        parts = urlsplit(endpoint)
        tls = None
        base_url = endpoint
        if parts.scheme == "tcp" and kind == "tls" and secret:
            tls = self._tls_files(server, secret)
        elif parts.scheme == "ssh" and kind == "ssh" and secret:
            base_url = self._tunnel(server, secret).base_url
        addresses = server["addresses"]
        return DockerHost(
            name=server["name"],
            base_url=base_url,
            storage_root=server["storage_root"] or self.default_storage_root,
            host_ip=addresses["publish_ip"],
            region=server["region"],
            tls=tls,
            storage_is_local=parts.scheme == "unix",
            hub_connect_ip=addresses["hub_connect_ip"],
            hub_connect_ip_set=addresses["hub_connect_ip_set"],
            on_hub_machine=on_hub_machine(endpoint),
            labels=dict(server["labels"]),
            kind=server.get("kind", "engine"),
        )

    def _tunnel(self, server: Any, secret: dict[str, Any]) -> SSHTunnel:
        """The host's SSH tunnel, reopened if it died (ssh exits when the link drops)."""
        key = (server["name"], server["credential"]["fingerprints"]["key"])
        with self._tunnels_lock:
            tunnel = self._tunnels.get(key)
            if tunnel is None or not tunnel.alive():
                if tunnel is not None:
                    tunnel.close()
                tunnel = self._tunnels[key] = SSHTunnel(
                    server["endpoint"], secret, runtime_dir=str(self._runtime_path())
                )
            return tunnel

    def close(self) -> None:
        """Close every SSH tunnel (the Hub calls nothing at exit; tunnels die with it too)."""
        for tunnel in self._tunnels.values():
            tunnel.close()
        self._tunnels.clear()

    def _tls_files(self, server: Any, secret: dict[str, Any]) -> DockerTLS:
        fp = server["credential"]["fingerprints"]["cert"].split(":", 1)[1][:16]
        folder = self._runtime_path() / f"{server['name']}-{fp}"
        paths = {part: folder / f"{part}.pem" for part in ("ca", "cert", "key")}
        if not all(p.exists() for p in paths.values()):
            # Spawns run this in the provider's worker threads, several for one host at once:
            # each writer gets a temporary file of its own (mkstemp, mode 0600), so one
            # writer's rename never finds its file already renamed away by another.
            folder.mkdir(mode=0o700, exist_ok=True)
            for part, path in paths.items():
                fd, tmp = tempfile.mkstemp(prefix=f".{part}-", suffix=".tmp", dir=folder)
                try:
                    with os.fdopen(fd, "w") as fh:
                        fh.write(secret[part])
                    os.replace(tmp, path)
                except BaseException:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(tmp)
                    raise
        return DockerTLS(
            ca_cert=str(paths["ca"]), client_cert=str(paths["cert"]), client_key=str(paths["key"])
        )
