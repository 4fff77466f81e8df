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

Answers are shared by the pre-forked workers (`SharedAnswers`, a memory-mapped file). The
kernel spreads a user's connections over the workers, so with a cache per process each
token was looked up once per `max_age` in every worker, and a token used every 20-40 s
found its answer expired in one worker or the other: that call waited for the Hub on its
way to the first token. A Hub lookup that records the token's activity (a database commit)
took 26 ms p50 on busy cores, against 4 ms for one that does not. With the answers shared,
one worker's answer or renewal serves the others, and a revocation one worker learns of
reaches every worker at once.

Renewal on use still leaves the first call after a pause longer than `max_age` waiting for
the Hub. So the answers of tokens that may use the model, used within `keep_warm` seconds
(60 s by default, `GatewayApp.token_keep_warm_seconds`), are renewed ahead by a sweep every
sixth of `max_age`, without a call (`TokenCache.sweep`). In the benchmark's rounds (a token every
7-40 s) that took the calls that waited for the Hub from 129 of 384 to 1, for about 1.6
background lookups per call. Every answer is still the Hub's and none is used past
`max_age`: the revocation bound does not move.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import mmap
import os
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
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


class SharedAnswers:
    """Token answers in a file that every gateway worker maps into memory.

    A direct-mapped table of `SLOTS` page-sized slots, indexed by the token's digest (the
    file is sparse: only used slots take memory). A slot holds the digest, the time of the
    answer, whether it allows the model and the owner's model as JSON; an answer too large
    for a slot is not shared (its worker still keeps it), and a token whose slot another
    token took is looked up again. Readers take the file's `flock` shared, writers
    exclusive: a few microseconds either way. The times are the cache's clock (monotonic,
    the same in every process of one boot); `clear` empties the file when the gateway
    starts, so answers never outlive the gateway that took them.
    """

    SLOTS = 4096
    SLOT = 4096
    _HEAD = struct.Struct("<16sdBxxxI")  # digest, at, allowed, JSON length

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.fchmod(self._fd, 0o600)  # owners' names and scopes
        self._thread_lock = threading.Lock()
        size = self.SLOTS * self.SLOT
        with self._locked(fcntl.LOCK_EX):
            if os.fstat(self._fd).st_size != size:
                os.ftruncate(self._fd, size)
        self._map: mmap.mmap | None = mmap.mmap(self._fd, size, mmap.MAP_SHARED)

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
            os.close(self._fd)

    @contextmanager
    def _locked(self, how: int) -> Iterator[None]:
        with self._thread_lock:
            fcntl.flock(self._fd, how)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _slot(self, digest: bytes) -> int:
        """Where `digest`'s slot starts. Slots keep a digest's first 16 bytes."""
        return (int.from_bytes(digest[:8], "little") % self.SLOTS) * self.SLOT

    def clear(self) -> None:
        """Forget every answer (a gateway starting: an earlier run's times mean nothing)."""
        with self._locked(fcntl.LOCK_EX):
            os.ftruncate(self._fd, 0)
            os.ftruncate(self._fd, self.SLOTS * self.SLOT)

    def get(self, digest: bytes) -> TokenAnswer | None:
        """The answer held for `digest`, or None. The caller judges its age."""
        assert self._map is not None, "closed"
        start = self._slot(digest)
        with self._locked(fcntl.LOCK_SH):
            held, at, allowed, length = self._HEAD.unpack_from(self._map, start)
            if held != digest[:16] or not 0 < length <= self.SLOT - self._HEAD.size:
                return None
            body = self._map[start + self._HEAD.size : start + self._HEAD.size + length]
        try:
            user = json.loads(body)
        except ValueError:
            return None  # a torn slot cannot happen under the lock; a damaged file can
        return TokenAnswer(user, bool(allowed), at)

    def put(self, digest: bytes, answer: TokenAnswer) -> bool:
        """Keep `answer` for the other workers, unless a newer one is there or it does not
        fit in a slot. True if it was written."""
        assert self._map is not None, "closed"
        body = json.dumps(answer.user, separators=(",", ":")).encode()
        if len(body) > self.SLOT - self._HEAD.size:
            return False
        start = self._slot(digest)
        with self._locked(fcntl.LOCK_EX):
            held, at, _allowed, length = self._HEAD.unpack_from(self._map, start)
            if held == digest[:16] and length and at > answer.at:
                return False  # another worker's renewal finished first
            self._HEAD.pack_into(self._map, start, digest, answer.at, answer.allowed, len(body))
            self._map[start + self._HEAD.size : start + self._HEAD.size + len(body)] = body
        return True


class TokenCache:
    """Hub answers by token digest; `max_age` 0 asks the Hub on every call. With `shared`,
    answers are also taken from and given to the other workers."""

    def __init__(
        self,
        lookup: Lookup,
        allowed: ScopeCheck,
        max_age: float,
        clock: Callable[[], float] = time.monotonic,
        shared: SharedAnswers | None = None,
        on_lookup: Callable[[str], None] | None = None,
        keep_warm: float = 0.0,
    ) -> None:
        """`on_lookup(when)` is told of every Hub lookup: `when` is "on_call" when a call
        waits for it, "ahead" when it renews an answer in the background. `keep_warm`:
        seconds after its last call during which an allowed token's answer is renewed ahead
        without waiting for a call (`sweep`); 0 renews only when a call finds it aged."""
        self._lookup = lookup
        self._allowed = allowed
        self.max_age = max_age
        self._clock = clock
        self._shared = shared
        self._on_lookup = on_lookup
        self.keep_warm = keep_warm
        self._answers: dict[bytes, TokenAnswer] = {}
        self._pending: dict[bytes, asyncio.Task[TokenAnswer]] = {}
        # Tokens that may use the model, served by this process within `keep_warm`: the
        # token (to ask the Hub again; in this process's memory only, as HubAuth's own
        # cache keeps them) and when it was last used. Invalid tokens and tokens without
        # the scope are never kept warm: calling with them costs the caller, not the Hub.
        self._recent: dict[bytes, tuple[str, float]] = {}
        self._last_purge = clock()
        self.lookups = 0  # calls made to the Hub, for tests and the benchmark

    async def answer(self, token: str) -> TokenAnswer:
        """The Hub's answer about `token`, from the cache when it is fresh enough.

        Raises what the lookup raises (the Hub unreachable) when no fresh answer is held.
        """
        if self.max_age <= 0:
            return await self._ask(token, "on_call")
        key = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        now = self._clock()
        held = self._answers.get(key)
        if held is None or now - held.at >= self._renew_at:
            held = self._take_shared(key, held, now)
        if held is not None and now - held.at < self.max_age:
            if now - held.at >= self._renew_at:
                self._renew_ahead(key, token)
            if held.allowed and self.keep_warm > 0:
                self._recent[key] = (token, now)
            return held
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._renew(key, token, "on_call"))
            self._pending[key] = pending
        fresh = await asyncio.shield(pending)
        if fresh.allowed and self.keep_warm > 0:
            self._recent[key] = (token, now)
        return fresh

    def _take_shared(self, key: bytes, held: TokenAnswer | None, now: float) -> TokenAnswer | None:
        """`held`, or the shared answer if another worker asked (or renewed) since."""
        other = self._shared.get(key) if self._shared is not None else None
        if other is not None and other.at <= now and (held is None or other.at > held.at):
            self._answers[key] = other
            return other
        return held

    def _renew_ahead(self, key: bytes, token: str) -> None:
        if key not in self._pending:
            task = asyncio.ensure_future(self._renew(key, token, "ahead"))
            task.add_done_callback(_retrieve)
            self._pending[key] = task

    def sweep(self) -> int:
        """Renew ahead, in the background, the answers of allowed tokens used within
        `keep_warm` that are past `REFRESH_AFTER` of their age, unless another worker
        already did (the shared answers); forget tokens not used for longer. Returns how
        many renewals it started. A user who calls again a minute later so finds a fresh
        answer instead of waiting for the Hub; every answer is still a Hub answer no older
        than `max_age`, so revocation is bounded as before."""
        now = self._clock()
        started = 0
        for key, (token, used) in list(self._recent.items()):
            if now - used > self.keep_warm:
                del self._recent[key]
                continue
            held = self._answers.get(key)
            if held is None or key in self._pending or now - held.at < self._renew_at:
                continue
            held = self._take_shared(key, held, now)
            if held is not None and now - held.at >= self._renew_at and held.allowed:
                self._renew_ahead(key, token)
                started += 1
        return started

    async def keep_warm_loop(self) -> None:
        """`sweep` every sixth of `max_age` (5 s by default), until cancelled."""
        if self.keep_warm <= 0 or self.max_age <= 0:
            return
        while True:
            await asyncio.sleep(self.max_age / 6)
            self.sweep()

    async def _ask(self, token: str, when: str) -> TokenAnswer:
        at = self._clock()
        self.lookups += 1
        if self._on_lookup is not None:
            self._on_lookup(when)
        user = await self._lookup(token)
        return TokenAnswer(user, self._allowed(user) if user else False, at)

    @property
    def _renew_at(self) -> float:
        return REFRESH_AFTER * self.max_age

    async def _renew(self, key: bytes, token: str, when: str) -> TokenAnswer:
        """Ask the Hub and keep the answer. A failed background renewal keeps the old
        answer until it expires; a caller waiting on it gets the error."""
        try:
            fresh = await self._ask(token, when)
            self._answers[key] = fresh
            if self._shared is not None:
                self._shared.put(key, fresh)
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
