"""bcrypt in a thread pool, so hashing a password does not block the Hub's event loop.

One bcrypt call takes a quarter of a second of CPU. NativeAuthenticator makes it inside the
event loop, so while users sign up or log in every other request (API calls, the proxy's
health checks, spawn progress) waits behind it. bcrypt releases the GIL, so in a thread it
runs beside the loop. The pool is small on purpose: on a busy machine concurrent logins queue
for it instead of taking every core from the Hub.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import bcrypt

# bcrypt uses only the first 72 bytes; bcrypt>=5 raises for longer input instead of
# silently ignoring the rest.
MAX_PASSWORD_BYTES = 72

# A hash to check unknown user names against, so a wrong name costs as long as a wrong
# password and the answer time does not tell which names exist.
_DUMMY_HASH = bcrypt.hashpw(b"codeyard-no-such-user", bcrypt.gensalt())


class PasswordHasher:
    """Hash and check passwords in `threads` worker threads."""

    def __init__(self, threads: int) -> None:
        self.threads = max(1, threads)
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="codeyard-bcrypt")

    @staticmethod
    def fits(password: str) -> bool:
        """Whether bcrypt can hash `password` whole."""
        return len(password.encode()) <= MAX_PASSWORD_BYTES

    async def hash(self, password: str) -> bytes:
        """A new salted bcrypt hash of `password` (which must `fit`)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, _hash, password.encode())

    async def check(self, password: str, hashed: bytes | None) -> bool:
        """Whether `password` matches `hashed`; with no hash (unknown user) a dummy check
        takes the same time and answers False."""
        loop = asyncio.get_running_loop()
        if not self.fits(password):
            return False
        ok = await loop.run_in_executor(
            self._pool, bcrypt.checkpw, password.encode(), hashed or _DUMMY_HASH
        )
        return bool(ok) and hashed is not None

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _hash(password: bytes) -> bytes:
    return bcrypt.hashpw(password, bcrypt.gensalt())
