"""Make sure a host is registered, once: the Hub's own engine at every Hub start.

`make up` must work with no admin step, so the default Hub config registers the local
engine (a unix socket) under a fixed name before the Hub starts. Registering is
idempotent: a host that already exists is left exactly as it is, so an admin's later
changes (capacity, drain, labels) survive restarts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from .crypto import CredentialCipher
from .database import open_db
from .registry import Conflict, NotFound, Registry

log = logging.getLogger(__name__)


def ensure_host(db_url: str, spec: Mapping[str, Any], keys: str | None = None) -> bool:
    """Register `spec` (a `Registry.add_server` body) unless a host of its name exists.

    Creates the registry database at the newest revision when missing. Returns whether it
    registered the host now.
    """
    cipher = CredentialCipher(keys) if keys else None
    sessions = open_db(db_url)
    try:
        registry = Registry(sessions, cipher)
        try:
            registry.get_server(str(spec["name"]))
            return False
        except NotFound:
            pass
        try:
            registry.add_server(spec)
        except Conflict:  # another process registered it in between
            return False
        log.info("registered host %s (%s)", spec["name"], spec["endpoint"])
        return True
    finally:
        bind = sessions.kw.get("bind")
        if bind is not None:
            bind.dispose()
