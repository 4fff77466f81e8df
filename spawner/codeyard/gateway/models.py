"""Which model names a caller may ask for, and the model label metrics may carry.

Either the site configures the names (`GatewayApp.allowed_models`), or the gateway learns
them from vLLM's own `GET /v1/models` the first time it needs them and again once the list is
`LEARNED_SECONDS` old. An unknown name is answered 404 from the list in hand: it never causes
a call to vLLM, so sending made-up names cannot load the model server, and the metrics'
`model` label is one of the allowed names or `other`, whatever callers send.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

OTHER = "other"
# The label of calls whose body was not read (no token, wrong path, unreadable body).
UNREAD = "-"


class ModelCatalog:
    """The allow-list: configured names, or the names vLLM serves."""

    # How long a list learned from vLLM is used before it is asked again. vLLM serves a fixed
    # set of names until it restarts, so this only bounds how long a changed deployment
    # keeps the old list; the refresh costs one small call to vLLM.
    LEARNED_SECONDS = 300.0

    def __init__(
        self,
        configured: Sequence[str],
        fetch: Callable[[], Awaitable[list[str]]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._configured = tuple(configured)
        self._fetch = fetch
        self._clock = clock
        self._names: tuple[str, ...] = self._configured
        self._learned_at: float | None = None
        self._lock = asyncio.Lock()

    @property
    def names(self) -> tuple[str, ...]:
        """The names in hand (possibly none yet, before vLLM was first asked)."""
        return self._names

    def _fresh(self) -> bool:
        if self._configured:
            return True
        return (
            self._learned_at is not None and self._clock() - self._learned_at < self.LEARNED_SECONDS
        )

    async def allowed(self) -> tuple[str, ...]:
        """The allowed names, asking vLLM first if they are not known or are stale.

        Errors of that call propagate (the caller answers 503/502) unless an older list is
        in hand: a vLLM that is briefly away does not turn every call into an error here.
        """
        if self._fresh():
            return self._names
        async with self._lock:
            if self._fresh():
                return self._names
            try:
                names = await self._fetch()
            except Exception:
                if self._names:
                    self._learned_at = self._clock()
                    return self._names
                raise
            self._names = tuple(dict.fromkeys(names))
            self._learned_at = self._clock()
            return self._names

    def label(self, name: object) -> str:
        """`name` if it is allowed, else `other`: a bounded set of metric label values."""
        return name if isinstance(name, str) and name in self._names else OTHER
