"""The Hub's answers about callers' tokens, kept for `max_age` seconds and renewed ahead.

Every model call carries a JupyterHub token, and asking the Hub who owns it is one HTTP call
to a Python process that, on a busy machine, waits for a core like everyone else: tens of
milliseconds on the way to the first token. So answers are reused for `max_age` seconds
(`GatewayApp.token_cache_seconds`), which is also how long a revoked token keeps working.

With a plain expiring cache an active user still pays that lookup once per `max_age` and
per worker process, and users whose tokens were first seen together (a burst of calls) all
pay it in the same call. Here an answer older than `REFRESH_AFTER` of `max_age` that is used
again is still served, and a lookup starts in the background; its result replaces the entry.
No answer is ever served past `max_age`, so the revocation bound is unchanged: only the
lookups of active tokens leave the path to the first token.

Whether the token may use the model (its scopes against `required_scopes`) is decided once
per answer and kept beside it: JupyterHub's scope check expands every scope the token holds
on each call.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

# An answer this far into its life (as a fraction of max_age) is renewed when it is used.
REFRESH_AFTER = 0.5

Lookup = Callable[[str], Awaitable[dict[str, Any] | None]]
ScopeCheck = Callable[[dict[str, Any]], bool]


@dataclass
class TokenAnswer:
    """The Hub's answer about one token: its owner's model (None: not a valid token)."""

    user: dict[str, Any] | None
    allowed: bool  # holds one of the required scopes
    at: float  # when the Hub gave it (the clock's time)


class TokenCache:
    """Hub answers by token digest; `max_age` 0 asks the Hub on every call."""

    def __init__(
        self,
        lookup: Lookup,
        allowed: ScopeCheck,
        max_age: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._allowed = allowed
        self.max_age = max_age
        self._clock = clock
        self._answers: dict[str, TokenAnswer] = {}
        self._pending: dict[str, asyncio.Task[TokenAnswer]] = {}
        self._last_purge = clock()
        self.lookups = 0  # calls made to the Hub, for tests and the benchmark

    async def answer(self, token: str) -> TokenAnswer:
        """The Hub's answer about `token`, from the cache when it is fresh enough.

        Raises what the lookup raises (the Hub unreachable) when no fresh answer is held.
        """
        if self.max_age <= 0:
            return await self._ask(token)
        key = hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()
        now = self._clock()
        held = self._answers.get(key)
        if held is not None and now - held.at < self.max_age:
            if now - held.at >= REFRESH_AFTER * self.max_age and key not in self._pending:
                task = asyncio.ensure_future(self._renew(key, token))
                task.add_done_callback(_retrieve)
                self._pending[key] = task
            return held
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._renew(key, token))
            self._pending[key] = pending
        return await asyncio.shield(pending)

    async def _ask(self, token: str) -> TokenAnswer:
        at = self._clock()
        self.lookups += 1
        user = await self._lookup(token)
        return TokenAnswer(user, self._allowed(user) if user else False, at)

    async def _renew(self, key: str, token: str) -> TokenAnswer:
        """Ask the Hub and keep the answer. A failed background renewal keeps the old
        answer until it expires; a caller waiting on it gets the error."""
        try:
            fresh = await self._ask(token)
            self._answers[key] = fresh
            self._purge()
            return fresh
        finally:
            self._pending.pop(key, None)

    def _purge(self) -> None:
        """Forget expired answers, at most once per `max_age`: tokens that stopped calling
        (or made-up ones) must not accumulate."""
        now = self._clock()
        if now - self._last_purge < self.max_age:
            return
        self._last_purge = now
        for key in [k for k, a in self._answers.items() if now - a.at >= self.max_age]:
            del self._answers[key]


def _retrieve(task: asyncio.Task[TokenAnswer]) -> None:
    """Take a background renewal's error: the old answer stays in use until it expires, and
    the next call after that asks the Hub itself and reports what goes wrong."""
    if not task.cancelled():
        task.exception()
