"""Fixtures for the placement tests (run on their own: `.venv/bin/pytest tests/placement`).

Fixtures
--------
crypt_keys
    Two fresh Fernet keys `(new, old)`; sets `CODEYARD_PLACEMENT_CRYPT_KEY` to `old` only.
db_url
    A fresh SQLite file URL in `tmp_path` (nothing created yet).
registry
    A `Registry` on a fresh database at the newest revision, encrypting with `old`.
ca
    A throwaway `placement_pki.CA` (session scope) for certificates and TLS bundles.
engines
    Two real dockerd engines with TLS on 127.0.0.2 and 127.0.0.3 (session scope; see
    `placement_engines.py`), each `Engine(name, ip, port, endpoint, pid, ...)` with
    `.stop()`/`.start()`; skipped with a reason when this machine cannot run dockerd.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from cryptography.fernet import Fernet
from placement_pki import CA

from codeyard.placement.crypto import KEY_ENV, CredentialCipher
from codeyard.placement.database import open_db
from codeyard.placement.registry import Registry


@pytest.fixture
def crypt_keys(monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    new, old = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    monkeypatch.setenv(KEY_ENV, old)
    return new, old


@pytest.fixture
def db_url(tmp_path) -> str:  # type: ignore[no-untyped-def]
    return f"sqlite:///{tmp_path / 'placement.sqlite'}"


@pytest.fixture
def registry(db_url: str, crypt_keys: tuple[str, str]) -> Registry:
    return Registry(open_db(db_url), CredentialCipher(os.environ[KEY_ENV]))


@pytest.fixture(scope="session")
def ca() -> CA:
    return CA()


@pytest.fixture(scope="session")
def engines(ca: CA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list]:
    from placement_engines import start_engines

    with start_engines(ca, ["127.0.0.2", "127.0.0.3"]) as running:
        yield running
