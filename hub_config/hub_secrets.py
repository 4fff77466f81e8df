"""The state folder's secrets: made once with mode 0600, refused if others can read them.

Run as a script (`hub_config/bin/up.sh` does) to create every secret the Hub needs and print
their paths.
"""

from __future__ import annotations

import os
import secrets
import stat

from core_settings import CoreSettings


def ensure_secret(path: str, nbytes: int = 32) -> str:
    """Return the hex secret in `path`, creating it once with mode 0600.

    An existing file readable by group or others is refused, not silently fixed: its
    secret may already have leaked and should be replaced by an admin.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode & 0o077:
            raise PermissionError(
                f"{path} has mode {mode:o}; secrets must be 0600. Replace the secret"
                " (delete the file and restart) and check who could read it."
            ) from None
        with open(path) as f:
            return f.read().strip()
    with os.fdopen(fd, "w") as f:
        value = secrets.token_hex(nbytes)
        f.write(value + "\n")
    return value


SECRET_FILES = (
    "jupyterhub_cookie_secret",
    "crypt_key",
    "proxy_token",
    "metrics_token",
    "placement_crypt_key",
)


def ensure_secrets(settings: CoreSettings) -> list[str]:
    """Create every secret the Hub needs in the state folder (once, 0600)."""
    os.makedirs(settings.state_dir, mode=0o700, exist_ok=True)
    paths = [settings.state_path(name) for name in SECRET_FILES]
    for path in paths:
        ensure_secret(path)
    return paths


if __name__ == "__main__":
    for p in ensure_secrets(CoreSettings()):
        print(p)
