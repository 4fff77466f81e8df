"""The one-time admin bootstrap secret: whoever holds it may register an admin name, once.

A fresh install has admin names but no accounts behind them. Letting the first sign-up under
such a name become admin hands the Hub to whoever is quickest, so the name is tied to a
random secret in the state folder (mode 0600, readable only by whoever runs the Hub), and
`make up` prints the sign-up link that carries it. Registering the admin consumes the secret:
the file is renamed to `<file>.used`, which also keeps later starts from making a new one.
Deleting `<file>.used` (someone with the state folder) allows one more bootstrap.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
import stat
import time
from urllib.parse import quote

USED_SUFFIX = ".used"


class AdminBootstrap:
    """The secret file at `path` and its `.used` marker."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.used_path = self.path + USED_SUFFIX

    @property
    def used(self) -> bool:
        """Whether an admin was already registered with a secret from this file."""
        return os.path.exists(self.used_path)

    def ensure(self) -> str | None:
        """The waiting secret, made now (0600) if there is none; None once it was used."""
        if self.used:
            return None
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return self.secret()
        value = secrets.token_urlsafe(32)
        with os.fdopen(fd, "w") as f:
            f.write(value + "\n")
        return value

    def secret(self) -> str | None:
        """The waiting secret, or None when there is none or it was used.

        A file others can read is refused, not silently fixed: its secret may have leaked, and
        with it the admin account.
        """
        if self.used:
            return None
        try:
            mode = stat.S_IMODE(os.stat(self.path).st_mode)
            if mode & 0o077:
                raise PermissionError(
                    f"{self.path} has mode {mode:o}; the admin bootstrap secret must be 0600."
                    " Delete it and restart to make a new one."
                )
            with open(self.path) as f:
                return f.read().strip() or None
        except FileNotFoundError:
            return None

    def matches(self, candidate: str) -> bool:
        """Whether `candidate` is the waiting secret (compared in constant time)."""
        secret = self.secret()
        if not secret or not candidate:
            return False
        return hmac.compare_digest(secret.encode(), candidate.encode())

    def consume(self, username: str) -> bool:
        """Mark the secret used by `username`; False if it was already used or is gone.

        The rename is atomic, so of two sign-ups racing with the same secret one wins.
        """
        try:
            os.rename(self.path, self.used_path)
        except FileNotFoundError:
            return False
        with open(self.used_path, "w") as f:
            f.write(f"used by {username} at {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n")
        return True

    def retire(self, reason: str) -> None:
        """Mark the waiting secret (if any) used without registering anybody, e.g. because
        every admin name already has an account, so no dead link is printed again."""
        if self.used:
            return
        fd = os.open(self.used_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"retired: {reason} at {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n")
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path)

    def signup_url(self, public_url: str) -> str | None:
        """The sign-up link carrying the waiting secret, under the Hub's public URL."""
        secret = self.secret()
        if secret is None:
            return None
        return f"{public_url.rstrip('/')}/hub/signup?bootstrap={quote(secret)}"
