"""Putting the workspace image on hosts ahead of time, in the placement service's background.

A host that only gets the image at a workspace's first start makes that user wait for a
pull (minutes for a gigabyte image), and a wrong registry address or login shows up only
then, on a spawn page. So the placement service pulls the configured images
(`PlacementService.images`, set by the Hub config from the single-user image it spawns):

- when a host is registered (after the answer is sent: registration never waits for it);
- when the service starts, on every host that is not down: the image's tag is a content
  hash, so a rebuilt image is a new tag, and the Hub restart that brings the new tag into
  the configuration restarts this service, which pulls it everywhere;
- when an admin asks again (`POST api/servers/<id>/pull`, the Servers page's Pull button).

Each pull is `codeyard.spawner.image_transfer.ImageDistribution.ensure()`, the same code as
the spawn path (registry with the stored login, else a stream from the Hub's engine). Its
outcome goes into `host_images` (state "pulling", then "ok" or "failed" with the message:
a wrong URL, refused credentials, no space left), which the Servers page shows per host.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .models import ServerState
from .shapes import NotFound

if TYPE_CHECKING:
    from codeyard.spawner.image_transfer import ImageDistribution

    from .hosts import DockerHost
    from .registry import Registry

log = logging.getLogger(__name__)


class ImagePuller:
    """Background pulls of `images` onto registered hosts, at most one per (host, image)."""

    def __init__(
        self,
        registry: Registry,
        distribution: ImageDistribution,
        images: Iterable[str],
        host_for: Callable[[str], DockerHost] | None = None,
    ) -> None:
        self.registry = registry
        self.distribution = distribution
        self.images = [i for i in images if i]
        self._host_for = host_for
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}

    def host(self, name: str) -> DockerHost:
        """The registered host `name` as the spawner would connect to it."""
        if self._host_for is None:
            from .provider import RegistryHostProvider

            provider = RegistryHostProvider(cache_seconds=0.0)
            provider.registry = self.registry
            self._host_for = provider.get
        return self._host_for(name)

    def start(self, name: str) -> list[str]:
        """Start pulling every image onto host `name` (returns at once); the images started."""
        started = []
        for image in self.images:
            key = (name, image)
            running = self._tasks.get(key)
            if running is not None and not running.done():
                continue
            self._tasks[key] = asyncio.create_task(self._pull(name, image))
            started.append(image)
        return started

    @staticmethod
    def applies_to(server: Mapping[str, Any]) -> bool:
        """Whether pulls ahead go to this host: a single engine that is not down. A swarm's
        nodes each pull when Swarm starts a task there, so its manager is left alone."""
        return (
            server.get("kind", "engine") == "engine"
            and server.get("state") != ServerState.down.value
        )

    def start_all(self) -> None:
        """Start pulls onto every host they apply to (at the service's start)."""
        for server in self.registry.list_servers():
            if self.applies_to(server):
                self.start(server["name"])

    async def wait(self, name: str | None = None) -> None:
        """Until the pulls (of host `name`, or all) have finished."""
        tasks = [t for (host, _), t in self._tasks.items() if name in (None, host)]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await self.wait()

    async def _record(self, name: str, image: str, **fields: Any) -> None:
        # A host deleted meanwhile has no page to show it on.
        with contextlib.suppress(NotFound):
            await asyncio.to_thread(self.registry.record_image, name, image, **fields)

    async def _pull(self, name: str, image: str) -> None:
        from codeyard.spawner.image_transfer import ImageTransferError, Login

        via = "registry" if self.distribution.registry else "stream"
        started = time.monotonic()
        try:
            host = await asyncio.to_thread(self.host, name)
            if await asyncio.to_thread(self.distribution.has_image, host, image):
                # Keep how it came (a spawn's pull with its digest); else say it is there.
                if not await asyncio.to_thread(self._recorded, name, image):
                    await self._record(
                        name, image, path="present", state="ok", detail="already on the host"
                    )
                return
            await self._record(
                name,
                image,
                path=via,
                state="pulling",
                detail=f"pulling from {self.distribution.registry}"
                if self.distribution.registry
                else "copying from the Hub's engine (no registry configured)",
            )
            login = None
            if self.distribution.registry:
                found = await asyncio.to_thread(
                    self.registry.registry_logins.login, self.distribution.registry
                )
                if found is not None:
                    login = Login(found.username, found.password, found.source)
            transfer = await self.distribution.ensure(
                host, image, lambda _progress, _message: None, login=login
            )
        except asyncio.CancelledError:
            # Not left as "pulling" forever on the page: say why it stopped.
            await asyncio.shield(
                self._failed(
                    name,
                    image,
                    via,
                    "interrupted: the placement service stopped during the pull"
                    " (it runs again at the service's next start)",
                    started,
                )
            )
            raise
        except ImageTransferError as e:
            log.warning("pulling %s onto %s failed: %s", image, name, e)
            await self._failed(name, image, via, str(e), started)
            return
        except Exception as e:  # a host that does not answer, a key that does not decrypt
            log.exception("pulling %s onto %s failed", image, name)
            await self._failed(name, image, via, f"{type(e).__name__}: {e}", started)
            return
        if transfer is None:  # it arrived meanwhile (a spawn pulled it)
            return
        log.info("%s reached %s by %s in %.1fs", image, name, transfer.path, transfer.seconds)
        await self._record(
            name,
            image,
            path=transfer.path,
            state="ok",
            digest=transfer.digest,
            detail=transfer.detail,
            seconds=transfer.seconds,
        )

    def _recorded(self, name: str, image: str) -> bool:
        return any(
            i["image"] == image and i["state"] == "ok"
            for i in self.registry.host_images().get(name, [])
        )

    async def _failed(self, name: str, image: str, via: str, detail: str, started: float) -> None:
        await self._record(
            name,
            image,
            path=via,
            state="failed",
            detail=detail,
            seconds=time.monotonic() - started,
        )
