"""Logins for image registries, stored encrypted in the placement database.

Hosts pull the workspace image from a registry (`codeyard.spawner.image_transfer`); when it
needs a login, the password is a secret like a host's TLS key, so it is kept the same way: a
MultiFernet token under `CODEYARD_PLACEMENT_CRYPT_KEY` (`crypto.CredentialCipher`), rotated
by `rotate-keys`, never returned by the API or shown on a page (only the user name, who set
it, when, and a fingerprint of the stored version).

An admin sets it through the placement service (`PUT api/image-registries/<host:port>`, admin
scope) or the Servers page. `CODEYARD_REGISTRY_USER`/`CODEYARD_REGISTRY_PASSWORD` are only a
seed: the Hub config stores them once (`seed`) when the database holds no login for that
registry, so a later change made by an admin is not overwritten at the next Hub start.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, TypedDict

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from .crypto import CredentialCipher
from .models import RegistryCredential, utcnow
from .shapes import NotFound, RegistryError, iso_timestamp

#: `host[:port]` as image references name a registry: no scheme, no path.
_REGISTRY = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?$")


class RegistryLoginModel(TypedDict):
    """What the API and the Servers page show of a stored login: never the password."""

    registry: str
    username: str
    fingerprint: str
    updated_by: str
    created: str
    updated: str


@dataclass(frozen=True)
class RegistryLogin:
    """A decrypted login, for the code that pulls (never serialised)."""

    registry: str
    username: str
    password: str
    source: str  # where it came from, named in error messages


def check_registry_address(registry: str) -> str:
    """`registry` stripped, or RegistryError when it is not `host[:port]`."""
    registry = registry.strip()
    if not _REGISTRY.match(registry):
        raise RegistryError(
            f"registry must be host[:port] as in an image name (no https://, no path),"
            f" not {registry!r}"
        )
    return registry


def _view(row: RegistryCredential) -> RegistryLoginModel:
    return RegistryLoginModel(
        registry=row.address,
        username=row.username,
        fingerprint=row.fingerprint,
        updated_by=row.updated_by,
        created=iso_timestamp(row.created) or "",
        updated=iso_timestamp(row.updated) or "",
    )


class ImageRegistryLogins:
    """The stored logins, over the placement database (`sessions`) and its cipher."""

    def __init__(self, sessions: sessionmaker[Session], cipher: CredentialCipher) -> None:
        self.sessions = sessions
        self.cipher = cipher

    def set(self, registry: str, username: str, password: str, by: str = "") -> RegistryLoginModel:
        """Store (or replace) the login for `registry`."""
        registry = check_registry_address(registry)
        if not isinstance(username, str) or not username.strip():
            raise RegistryError("a registry login needs a 'username'")
        if not isinstance(password, str) or not password:
            raise RegistryError("a registry login needs a 'password'")
        token = self.cipher.encrypt({"password": password})
        fingerprint = "sha256:" + hashlib.sha256(token).hexdigest()[:16]
        with self.sessions.begin() as db:
            row = db.scalar(
                select(RegistryCredential).where(RegistryCredential.address == registry)
            )
            if row is None:
                row = RegistryCredential(address=registry, created=utcnow())
                db.add(row)
            row.username, row.encrypted, row.fingerprint = username.strip(), token, fingerprint
            row.updated_by, row.updated = by, utcnow()
            db.flush()
            return _view(row)

    def seed(self, registry: str, username: str, password: str) -> bool:
        """Store the login from the settings unless one is stored; True if it stored it."""
        if not registry or not username:
            return False
        with self.sessions() as db:
            if db.scalar(
                select(RegistryCredential.id).where(RegistryCredential.address == registry.strip())
            ):
                return False
        self.set(registry, username, password, by="settings (CODEYARD_REGISTRY_USER)")
        return True

    def list(self) -> list[RegistryLoginModel]:
        with self.sessions() as db:
            rows = db.scalars(select(RegistryCredential).order_by(RegistryCredential.address))
            return [_view(row) for row in rows]

    def get(self, registry: str) -> RegistryLoginModel:
        with self.sessions() as db:
            row = db.scalar(
                select(RegistryCredential).where(RegistryCredential.address == registry)
            )
            if row is None:
                raise NotFound(f"no login stored for registry {registry}")
            return _view(row)

    def delete(self, registry: str) -> None:
        with self.sessions.begin() as db:
            row = db.scalar(
                select(RegistryCredential).where(RegistryCredential.address == registry)
            )
            if row is None:
                raise NotFound(f"no login stored for registry {registry}")
            db.delete(row)

    def login(self, registry: str) -> RegistryLogin | None:
        """The decrypted login for `registry`, or None when none is stored."""
        with self.sessions() as db:
            row = db.scalar(
                select(RegistryCredential).where(RegistryCredential.address == registry)
            )
            if row is None:
                return None
            secret: dict[str, Any] = self.cipher.decrypt(row.encrypted)
            return RegistryLogin(
                registry=row.address,
                username=row.username,
                password=str(secret.get("password", "")),
                source="the registry login stored in the placement service (Servers page)",
            )

    def rotate(self) -> int:
        """Re-encrypt every stored login under the first key (`rotate-keys`)."""
        with self.sessions.begin() as db:
            rows = list(db.scalars(select(RegistryCredential)))
            for row in rows:
                row.encrypted = self.cipher.rotate(row.encrypted)
            return len(rows)


def seed_registry_login(
    db_url: str, crypt_key: str, registry: str, username: str, password: str
) -> bool:
    """The Hub config's one-time seed from its settings (a database opened just for it)."""
    from .database import open_db

    if not registry or not username:
        return False
    sessions = open_db(db_url)
    try:
        return ImageRegistryLogins(sessions, CredentialCipher(crypt_key or None)).seed(
            registry, username, password
        )
    finally:
        engine = sessions.kw.get("bind")
        if engine is not None:
            engine.dispose()
