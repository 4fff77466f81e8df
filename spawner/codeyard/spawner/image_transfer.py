"""Getting the workspace image onto a Docker host that lacks it: a registry pull, else a stream.

Each host has its own image store, and an image built on the Hub's machine is only there.
`ImageDistribution.ensure()` runs before a workspace's container is created:

1. The host has the image: nothing to do.
2. A registry is configured (`registry`, normally the one `make up` runs on the Hub's
   machine): the host's engine pulls `<registry>/<repository>:<tag>` with streamed progress
   ("Pulling image on <host>: NN%") and tags it with the plain name the spawner creates
   containers from. Its `RepoDigests` then name the registry's digest.
3. The host cannot reach the registry (refused, no route, timeout, a CA it does not trust)
   or the registry lacks the tag: the image is streamed from the Hub's engine (`save`) into
   the host's engine (`load`) over the engine API ("Copying image to <host> (...)").

Failures that another path cannot fix are raised as `ImageTransferError` with a message for
the spawn page: a registry that does not answer the Hub (a wrong URL), refused credentials,
a full disk on the host ("no space left on <host>"). Every step has a time limit, so a spawn
never hangs on an image.

The registry's login is the one an admin stored in the placement database
(`codeyard.placement.image_registry`, encrypted like hosts' keys): the host provider hands it
to `ensure(login=...)`. The `registry_username`/`registry_password` settings are used only
when nothing is stored (a Hub without the placement registry).

The same `ensure()` runs at spawn (here, through `put_image_on_host`) and in the placement
service, which pulls the image onto a host in the background when the host is registered and
when the image changes (`codeyard.placement.image_pulls`).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import docker
import requests
from docker.errors import APIError, DockerException, NotFound
from traitlets import Float, Unicode, default
from traitlets.config import LoggingConfigurable

from codeyard.placement.hosts import DockerHost

from .clients import DOCKER_API_VERSION, make_client

#: Engine messages that mean "this host cannot reach the registry": another path may work.
UNREACHABLE = (
    "connection refused",
    "no route to host",
    "network is unreachable",
    "i/o timeout",
    "tls handshake timeout",
    "context deadline exceeded",
    "x509:",
    "certificate signed by unknown authority",
    "connection reset",
    "dial tcp",
    "server misbehaving",
    "no such host",
)
#: The registry answered but does not hold the image (not pushed yet): stream it instead.
NOT_IN_REGISTRY = ("manifest unknown", "not found", "name unknown")
#: The registry refused the login.
UNAUTHORIZED = ("unauthorized", "authentication required", "no basic auth credentials", "denied")
NO_SPACE = "no space left on device"

Emit = Callable[[int, str], None]


class ImageTransferError(RuntimeError):
    """The image cannot be put on the host; the message is meant for the spawn page."""


class RegistryUnreachable(ImageTransferError):
    """The host's engine cannot reach the registry (the stream fallback applies)."""


@dataclass(frozen=True)
class Login:
    """A registry login and where it came from (named when the registry refuses it)."""

    username: str
    password: str
    source: str


@dataclass
class Transfer:
    """How an image reached a host: `path` is "registry" or "stream"."""

    host: str
    image: str
    path: str
    digest: str
    seconds: float
    detail: str = ""


def split_image(image: str) -> tuple[str, str]:
    """`repo[:tag]` -> (repo, tag); a registry's `host:port/` prefix is not a tag."""
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = image.rsplit(":", 1)
        return repo, tag
    return image, "latest"


def classify(host: str, message: str) -> ImageTransferError:
    """The error for an engine's failure message of a pull or load on `host`."""
    low = message.lower()
    if NO_SPACE in low:
        return ImageTransferError(f"no space left on {host}: the image does not fit ({message})")
    if any(word in low for word in UNAUTHORIZED):
        return ImageTransferError(
            f"the image registry refused the credentials (401) when {host} pulled: {message}"
        )
    if any(word in low for word in UNREACHABLE) or any(w in low for w in NOT_IN_REGISTRY):
        return RegistryUnreachable(message)
    return ImageTransferError(f"image transfer to {host} failed: {message}")


class _Progress:
    """Turns an engine's per-layer progress into whole percents, emitted at most every few
    percent or seconds so the spawn page sees movement without a flood of events."""

    def __init__(self, emit: Emit, label: str, base: int, span: int) -> None:
        self.emit, self.label, self.base, self.span = emit, label, base, span
        self.last_percent = -100
        self.last_time = 0.0

    def update(self, percent: int, force: bool = False) -> None:
        percent = max(0, min(100, percent))
        now = time.monotonic()
        if force or percent >= self.last_percent + 5 or now - self.last_time > 3:
            if percent == self.last_percent and not force:
                return
            self.last_percent, self.last_time = percent, now
            self.emit(self.base + self.span * percent // 100, f"{self.label}: {percent}%")


def _pull_percent(layers: dict[str, tuple[int, int]]) -> int:
    total = sum(t for _, t in layers.values())
    done = sum(min(c, t) for c, t in layers.values())
    return int(100 * done / total) if total else 0


class ImageDistribution(LoggingConfigurable):
    """Where images come from for hosts that lack them; configured as
    `c.ImageDistribution.*` (jupyterhub_config.py fills the registry from the site settings)."""

    registry = Unicode(
        help="""Image registry hosts pull workspace images from, as `host:port` (no scheme;
        TLS is required). Empty: no registry, images are streamed from the Hub's engine.
        The Hub config sets it from `CodeyardHub.registry` (the registry `make up` started,
        or the site's `CODEYARD_REGISTRY`).""",
    ).tag(config=True)

    registry_username = Unicode(
        help="""User name for the registry, when it needs a login and the placement database
        holds none for it (a login stored there by an admin wins; the Hub config stores
        CODEYARD_REGISTRY_USER/PASSWORD there once as a seed).""",
    ).tag(config=True)

    registry_password = Unicode(
        help="""Password for `registry_username` (same precedence: a stored login wins).""",
    ).tag(config=True)

    registry_ca_file = Unicode(
        help="""CA certificate the Hub checks the registry's TLS certificate with; empty: the
        system's CAs. Hosts trust the registry through `/etc/docker/certs.d/<host:port>/ca.crt`
        on their own machine.""",
    ).tag(config=True)

    check_timeout = Float(
        5.0,
        help="""Seconds the Hub waits for the registry's `/v2/` before it calls the registry
        unreachable (a wrong URL fails the spawn after this long, not after a pull timeout).""",
    ).tag(config=True)

    pull_timeout = Float(
        900.0,
        help="""Seconds a host may take to pull the image from the registry; a pull still
        running then is abandoned and the spawn fails with a message saying so.""",
    ).tag(config=True)

    stream_timeout = Float(
        1800.0,
        help="""Seconds streaming the image from the Hub's engine to a host (save and load)
        may take before the spawn fails; about a minute per GB between two machines.""",
    ).tag(config=True)

    source_docker_url = Unicode(
        help="""Docker API URL of the engine holding the built image (the Hub's own), which
        the stream fallback saves it from. Default: `$DOCKER_HOST`, else the standard socket.""",
    ).tag(config=True)

    @default("source_docker_url")
    def _default_source(self) -> str:
        return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"

    # ---- the one entry point -----------------------------------------------------------

    def settings_login(self) -> Login | None:
        """The login from `registry_username`/`registry_password`, if set."""
        if not self.registry_username:
            return None
        return Login(
            self.registry_username,
            self.registry_password,
            "CODEYARD_REGISTRY_USER and CODEYARD_REGISTRY_PASSWORD",
        )

    async def ensure(
        self, host: DockerHost, image: str, emit: Emit, login: Login | None = None
    ) -> Transfer | None:
        """Make sure `host` holds `image`; None when it already did, else how it got there.

        `emit(progress, message)` receives progress events (called on the event loop).
        `login`: the registry login stored in the placement database; None falls back to
        the settings' (`settings_login`).
        """
        login = login or self.settings_login()
        loop = asyncio.get_running_loop()

        def emit_threadsafe(progress: int, message: str) -> None:
            loop.call_soon_threadsafe(emit, progress, message)

        if await self._run(self._has_image, host, image, limit=60):
            return None
        reason = "no registry configured"
        if self.registry:
            await self.check_registry(login)
            try:
                return await self._with_timeout(
                    partial(self._pull, login=login), host, image, emit_threadsafe, "pull_timeout"
                )
            except RegistryUnreachable as e:
                reason = f"registry unreachable: {e}"
                self.log.warning(
                    "%s cannot pull %s from %s: %s", host.name, image, self.registry, e
                )
        emit(15, f"Copying image to {host.name} ({reason.split(':')[0]})")
        transfer = await self._with_timeout(
            self._stream, host, image, emit_threadsafe, "stream_timeout"
        )
        transfer.detail = reason
        return transfer

    async def check_registry(self, login: Login | None = None) -> None:
        """Raise `ImageTransferError` unless the registry answers the Hub (`/v2/`) and
        accepts `login` (default: the settings')."""
        await self._run(
            self._check_registry, login or self.settings_login(), limit=self.check_timeout + 5
        )

    # ---- helpers (blocking, run in threads) ------------------------------------------

    async def _run(self, fn: Callable[..., Any], *args: Any, limit: float) -> Any:
        return await asyncio.wait_for(asyncio.to_thread(fn, *args), limit)

    async def _with_timeout(
        self, fn: Callable[..., Transfer], host: DockerHost, image: str, emit: Emit, setting: str
    ) -> Transfer:
        """Run a transfer with its own clients, closed on timeout to end the blocked read;
        its time limit is the trait named `setting`."""
        limit = float(getattr(self, setting))
        opened: list[docker.APIClient] = []
        try:
            return await asyncio.wait_for(asyncio.to_thread(fn, host, image, emit, opened), limit)
        except TimeoutError:
            what = "pull" if setting == "pull_timeout" else "copy"
            raise ImageTransferError(
                f"the image {what} to {host.name} did not finish within {limit:.0f}s"
                f" (ImageDistribution.{setting})"
            ) from None
        finally:
            for client in opened:
                client.close()

    def has_image(self, host: DockerHost, image: str) -> bool:
        """Whether `host`'s engine holds `image` (blocking)."""
        return self._has_image(host, image)

    def _has_image(self, host: DockerHost, image: str) -> bool:
        client = make_client(host, timeout=30)
        try:
            client.inspect_image(image)
            return True
        except NotFound:
            return False
        finally:
            client.close()

    def _check_registry(self, login: Login | None) -> None:
        url = f"https://{self.registry}/v2/"
        session = requests.Session()
        session.trust_env = False  # REQUESTS_CA_BUNDLE would replace the registry's CA
        auth = (login.username, login.password) if login else None
        try:
            r = session.get(
                url, auth=auth, timeout=self.check_timeout, verify=self.registry_ca_file or True
            )
        except requests.exceptions.SSLError as e:
            raise ImageTransferError(
                f"the image registry {self.registry} has a certificate the Hub does not trust"
                f" (ImageDistribution.registry_ca_file): {e}"
            ) from None
        except requests.RequestException as e:
            raise ImageTransferError(
                f"the image registry {self.registry} does not answer from the Hub within"
                f" {self.check_timeout:.0f}s; check its address (CODEYARD_REGISTRY,"
                f" ImageDistribution.registry): {type(e).__name__}"
            ) from None
        finally:
            session.close()
        if r.status_code == 401:
            if login is None:
                raise ImageTransferError(
                    f"the image registry {self.registry} refused the credentials (401): it"
                    " needs a login and none is set; store one on the placement service's"
                    " Servers page (Image registry)"
                )
            raise ImageTransferError(
                f"the image registry {self.registry} refused the credentials (401) of user"
                f" {login.username!r}; check {login.source}"
            )
        if r.status_code != 200:
            raise ImageTransferError(
                f"{url} answered {r.status_code}: is {self.registry} a Docker registry?"
            )

    def _auth_config(self, login: Login | None) -> dict[str, str] | None:
        if login is None:
            return None
        return {
            "username": login.username,
            "password": login.password,
            "serveraddress": self.registry,
        }

    def _pull(
        self,
        host: DockerHost,
        image: str,
        emit: Emit,
        opened: list[docker.APIClient],
        login: Login | None = None,
    ) -> Transfer:
        started = time.monotonic()
        client = make_client(host, timeout=int(self.pull_timeout))
        opened.append(client)
        repo, tag = split_image(image)
        remote = f"{self.registry}/{repo}"
        progress = _Progress(emit, f"Pulling image on {host.name}", 11, 8)
        progress.update(0, force=True)
        layers: dict[str, tuple[int, int]] = {}
        try:
            for event in client.pull(
                remote, tag, stream=True, decode=True, auth_config=self._auth_config(login)
            ):
                if "error" in event:
                    raise classify(host.name, str(event["error"]))
                detail = event.get("progressDetail") or {}
                layer = event.get("id", "")
                if event.get("status") == "Downloading" and detail.get("total"):
                    layers[layer] = (int(detail.get("current", 0)), int(detail["total"]))
                elif (
                    event.get("status") in ("Download complete", "Pull complete")
                    and layer in layers
                ):
                    total = layers[layer][1]
                    layers[layer] = (total, total)
                progress.update(_pull_percent(layers))
            client.tag(f"{remote}:{tag}", repo, tag)
            info = client.inspect_image(image)
        except APIError as e:
            raise classify(host.name, str(e.explanation or e)) from None
        except (DockerException, requests.RequestException) as e:
            raise ImageTransferError(f"pulling the image on {host.name} failed: {e}") from None
        progress.update(100, force=True)
        digest = next((d for d in info.get("RepoDigests", []) if d.startswith(remote + "@")), "")
        return Transfer(host.name, image, "registry", digest, time.monotonic() - started)

    def _stream(
        self, host: DockerHost, image: str, emit: Emit, opened: list[docker.APIClient]
    ) -> Transfer:
        started = time.monotonic()
        source = docker.APIClient(
            base_url=self.source_docker_url, version=DOCKER_API_VERSION, timeout=120
        )
        source.trust_env = False
        opened.append(source)
        target = make_client(host, timeout=int(self.stream_timeout))
        opened.append(target)
        try:
            size = int(source.inspect_image(image).get("Size") or 0)
        except NotFound:
            raise ImageTransferError(
                f"the image {image} is neither on {host.name} nor on the Hub's engine"
            ) from None
        progress = _Progress(emit, f"Copying image to {host.name}", 15, 4)
        progress.update(0, force=True)

        def chunks() -> Iterator[bytes]:
            sent = 0
            for chunk in source.get_image(image, chunk_size=1024 * 1024):
                sent += len(chunk)
                if size:
                    progress.update(min(99, 100 * sent // size))
                yield chunk

        try:
            for event in target.load_image(chunks()):
                if isinstance(event, dict) and event.get("error"):
                    raise classify(host.name, str(event["error"]))
            info = target.inspect_image(image)
        except APIError as e:
            raise classify(host.name, str(e.explanation or e)) from None
        except (DockerException, requests.RequestException) as e:
            text = str(e)
            if NO_SPACE in text.lower():
                raise classify(host.name, text) from None
            raise ImageTransferError(f"copying the image to {host.name} failed: {e}") from None
        progress.update(100, force=True)
        return Transfer(
            host.name, image, "stream", str(info.get("Id", "")), time.monotonic() - started
        )


_distributions: dict[int, ImageDistribution] = {}


async def stored_login(host_provider: Any, registry: str) -> Login | None:
    """The login the placement database holds for `registry`, through the host provider
    (`RegistryHostProvider.registry_login`); None without a registry, a stored login, or a
    provider that keeps them."""
    lookup = getattr(host_provider, "registry_login", None)
    if not registry or lookup is None:
        return None
    try:
        found = await lookup(registry)
    except Exception as e:
        raise ImageTransferError(
            f"the login stored for the image registry {registry} cannot be read: {e}"
        ) from None
    if found is None:
        return None
    return Login(found.username, found.password, found.source)


def distribution_for(spawner: Any) -> ImageDistribution:
    """One `ImageDistribution` per Hub config, shared by its spawners."""
    key = id(spawner.config)
    found = _distributions.get(key)
    if found is None:
        found = _distributions[key] = ImageDistribution(config=spawner.config, log=spawner.log)
    return found


async def put_image_on_host(spawner: Any, image: str) -> Transfer | None:
    """The spawner's image step: ensure `image` on its host, tell the host provider how it
    got there (the placement registry shows it on the host page), and turn a failure into
    an HTTP error whose message the spawn page shows."""
    from tornado import web

    host = spawner.host
    distribution = distribution_for(spawner)
    try:
        login = await stored_login(spawner.host_provider, distribution.registry)
        transfer = await distribution.ensure(host, image, spawner.emit, login=login)
    except ImageTransferError as e:
        spawner.emit(100, str(e))
        raise web.HTTPError(503, "%s", str(e)) from None
    except TimeoutError:
        message = f"{host.name} did not answer about image {image} in time"
        spawner.emit(100, message)
        raise web.HTTPError(503, "%s", message) from None
    if transfer is None:
        return None
    spawner.log.info(
        "%s: image %s reached %s by %s in %.1fs",
        spawner._log_name,
        image,
        host.name,
        transfer.path,
        transfer.seconds,
    )
    record = getattr(spawner.host_provider, "record_image", None)
    if record is not None:
        try:
            await record(transfer)
        except Exception:
            spawner.log.exception("%s: recording the image transfer failed", spawner._log_name)
    return transfer
