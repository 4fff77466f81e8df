"""The health monitor: ping every registered host on an interval.

A host is marked down after `failure_threshold` consecutive failed pings, even while
draining, and comes back after one success (`Registry.record_probe`: draining again if an
admin drained it, else active); placement then avoids or uses it again. A host that comes
back is cleared of containers whose workspaces were placed elsewhere meanwhile
(`cleanup.remove_stale_containers`); if that fails (the host answers a ping but not yet a
container listing, say), it is tried again at every check until it succeeds or the host
goes down again. Pings run in a thread pool (docker-py blocks), all hosts at once, each
bounded by `timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .cleanup import remove_stale_containers
from .probe import probe
from .registry import Registry

log = logging.getLogger(__name__)


class HealthMonitor:
    def __init__(
        self,
        registry: Registry,
        interval: float = 30.0,
        timeout: float = 5.0,
        workers: int = 8,
    ) -> None:
        self.registry = registry
        self.interval = interval
        self.timeout = timeout
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="codeyard-health")
        self._task: asyncio.Task[None] | None = None
        #: Hosts that came back and still hold stale containers we could not remove yet.
        self.cleanup_pending: set[int] = set()

    def _check_one(self, server_id: int) -> tuple[int, dict[str, Any], str]:
        try:
            endpoint, kind, secret = self.registry.connection(server_id)
            result = probe(endpoint, kind, secret, timeout=self.timeout, details=False)
        except Exception as e:  # a decryption failure must not stop the monitor
            result = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        state = self.registry.record_probe(server_id, result, details=False)
        return server_id, result, state

    async def check_once(self) -> dict[int, str]:
        """Ping every host once; returns {server id: state afterwards}."""
        loop = asyncio.get_running_loop()
        servers = await loop.run_in_executor(self.executor, self.registry.list_servers)
        results = await asyncio.gather(
            *(loop.run_in_executor(self.executor, self._check_one, s["id"]) for s in servers)
        )
        before = {s["id"]: s["state"] for s in servers}
        for sid, result, state in results:
            if state != before[sid]:
                log.warning(
                    "host %s: %s -> %s (%s)", sid, before[sid], state, result.get("error", "ok")
                )
        returned = {sid for sid, _, st in results if before[sid] == "down" and st != "down"}
        up = {sid for sid, _, st in results if st != "down"}
        # A host down again is retried when it next returns (it is then in `returned`).
        self.cleanup_pending &= up
        self.cleanup_pending |= returned
        for sid in sorted(self.cleanup_pending):
            if await loop.run_in_executor(self.executor, self._clean_up, sid):
                self.cleanup_pending.discard(sid)
        return {sid: state for sid, _, state in results}

    def _clean_up(self, server_id: int) -> bool:
        try:
            remove_stale_containers(self.registry, server_id, timeout=self.timeout * 4)
        except Exception:  # tried again at the next check while the host stays up
            log.exception("host %s: removing stale containers failed", server_id)
            return False
        return True

    async def _run(self) -> None:
        while True:
            try:
                await self.check_once()
            except Exception:
                log.exception("health check failed")
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.executor.shutdown(wait=False)
