"""Image registry logins stored encrypted in the placement database, set by an admin through
the placement service, and used by the image pull.

The registry is real (`support.registry`: Debian's docker-registry with TLS and an htpasswd
login, the run's or one of our own) and so is the machine that pulls (`support.machines`, a
dockerd in its own namespaces). A wrong stored password must give a message that says which
login was refused and where to change it; the right one must pull (the registry's digest in
the image's `RepoDigests`).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.fernet import Fernet
from support.machines import Machine, can_run_machines, machines
from support.registry import RegistryServer, running_registry
from test_image_distribution import _import, _push, host_of, log
from tornado import web
from tornado.httpclient import AsyncHTTPClient
from traitlets.config import Config

from codeyard.placement.crypto import CredentialCipher, DecryptionFailed
from codeyard.placement.provider import RegistryHostProvider
from codeyard.placement.registry import Registry, RegistryError
from codeyard.spawner.image_transfer import put_image_on_host

PASSWORD = "s3cret-Registry-pw-9"


def test_a_login_is_stored_encrypted_and_never_shown(
    registry: Registry, db_url: str, crypt_keys: tuple[str, str]
) -> None:
    logins = registry.registry_logins
    view = logins.set("registry.example:5000", "builder", PASSWORD, by="admin1")
    assert view["username"] == "builder" and view["updated_by"] == "admin1", view
    assert PASSWORD not in repr(view) and "password" not in view
    assert logins.list() == [view]
    # The database file holds neither the password nor anything that starts like it.
    raw = Path(db_url.removeprefix("sqlite:///")).read_bytes()
    assert PASSWORD.encode() not in raw
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as db:
        (token,) = db.execute("SELECT encrypted FROM registry_credentials").fetchone()
    assert PASSWORD.encode() not in token
    found = logins.login("registry.example:5000")
    assert found is not None and (found.username, found.password) == ("builder", PASSWORD)
    assert logins.login("other.example:5000") is None

    # Setting it again replaces it: a new stored version, one row.
    again = logins.set("registry.example:5000", "builder", PASSWORD + "x", by="admin2")
    assert again["fingerprint"] != view["fingerprint"] and len(logins.list()) == 1

    # Rotation re-encrypts it under the new first key; the old key alone cannot open it.
    new, old = crypt_keys
    rotated = Registry(registry.sessions, CredentialCipher([new, old]))
    assert rotated.rotate_keys() >= 1
    only_new = Registry(registry.sessions, CredentialCipher(new)).registry_logins
    assert only_new.login("registry.example:5000").password == PASSWORD + "x"  # type: ignore[union-attr]
    with pytest.raises(DecryptionFailed):
        Registry(registry.sessions, CredentialCipher(old)).registry_logins.login(
            "registry.example:5000"
        )

    for bad in ("https://registry.example", "registry.example/path", ""):
        with pytest.raises(RegistryError, match="host\\[:port\\]"):
            logins.set(bad, "u", "p")
    with pytest.raises(RegistryError, match="password"):
        logins.set("registry.example:5000", "u", "")


def test_the_settings_seed_the_login_once(registry: Registry) -> None:
    logins = registry.registry_logins
    assert logins.seed("reg.example:5000", "seed-user", "seed-pw") is True
    logins.set("reg.example:5000", "admin-user", "admin-pw", by="admin1")
    # The next Hub start seeds again: the admin's login stays.
    assert logins.seed("reg.example:5000", "seed-user", "seed-pw") is False
    found = logins.login("reg.example:5000")
    assert found is not None and found.username == "admin-user"
    assert logins.seed("", "u", "p") is False and logins.seed("r.example:1", "", "p") is False


@pytest.mark.asyncio
async def test_admins_set_the_login_through_the_service(api, service, hub_tokens) -> None:  # type: ignore[no-untyped-def]
    body = {"username": "builder", "password": PASSWORD}
    status, answer = await api("PUT", "image-registries/reg.example:5000", token="dev", body=body)
    assert status == 403, answer
    status, answer = await api("PUT", "image-registries/reg.example:5000", body=body)
    assert status == 200, answer
    assert answer["username"] == "builder" and answer["updated_by"] == "admin1", answer
    assert PASSWORD not in repr(answer)
    status, listed = await api("GET", "image-registries")
    assert status == 200 and [r["registry"] for r in listed] == ["reg.example:5000"], listed
    assert PASSWORD not in repr(listed)
    status, answer = await api(
        "PUT", "image-registries/reg.example:5000", body={"username": "builder"}
    )
    assert status == 400 and "password" in answer["message"], answer
    status, answer = await api("PUT", "image-registries/https:", body=body)
    assert status == 400 and "host[:port]" in answer["message"], answer

    # The Servers page shows who the login is, never the password.
    page = await AsyncHTTPClient().fetch(
        service.url + "servers",
        headers={"Authorization": f"token {hub_tokens['admin']}"},
        raise_error=False,
    )
    html = page.body.decode()
    assert page.code == 200
    assert 'data-registry="reg.example:5000" data-username="builder"' in html, html
    assert PASSWORD not in html

    status, _ = await api("DELETE", "image-registries/reg.example:5000")
    assert status == 204
    status, _ = await api("GET", "image-registries/reg.example:5000")
    assert status == 404


# ---- the stored login against a real registry and a real machine ------------------------

needs_machines = pytest.mark.skipif(bool(can_run_machines()), reason=str(can_run_machines()))


@pytest.fixture(scope="module")
def registry_server() -> Iterator[RegistryServer]:
    with running_registry() as server:
        yield server


@pytest.fixture(scope="module")
def machine() -> Iterator[Machine]:
    if why := can_run_machines():
        pytest.skip(why)
    with machines(1) as running:
        yield running[0]


@pytest.fixture(scope="module")
def pushed(registry_server: RegistryServer) -> str:
    """A tiny image in the registry (and on the Hub's engine)."""
    tag = _import(f"codeyard-test/creds:{Fernet.generate_key().hex()[:8]}")
    _push(registry_server, tag)
    return tag


def spawner_with_stored_login(host: Any, server: RegistryServer, registry: Registry) -> Any:
    """What `put_image_on_host` uses of a spawner whose provider is the placement registry;
    the Hub config names the registry and its CA but no login (the database has it)."""
    c = Config()
    c.ImageDistribution.registry = server.address
    c.ImageDistribution.registry_ca_file = server.ca_file
    provider = RegistryHostProvider()
    provider.registry = registry
    events: list[tuple[int, str]] = []
    return SimpleNamespace(
        host=host,
        config=c,
        log=log,
        _log_name="test",
        events=events,
        emit=lambda progress, message: events.append((progress, message)),
        host_provider=provider,
    )


@needs_machines
def test_a_wrong_stored_password_says_so_and_the_right_one_pulls(
    registry_server: RegistryServer,
    pushed: str,
    machine: Machine,
    registry: Registry,
    tmp_path: Path,
) -> None:
    registry.add_server(
        {"name": machine.name, "endpoint": machine.endpoint, "credential": machine.credential}
    )
    logins = registry.registry_logins
    logins.set(registry_server.address, registry_server.username, "not-the-password", by="a")
    spawner = spawner_with_stored_login(host_of(machine, tmp_path), registry_server, registry)
    with pytest.raises(web.HTTPError) as raised:
        asyncio.run(put_image_on_host(spawner, pushed))
    message = str(raised.value)
    assert "refused the credentials (401)" in message, message
    assert f"user {registry_server.username!r}" in message, message
    assert "stored in the placement service" in message, message
    assert spawner.events[-1][1] in message
    assert not machine.has_image(pushed)

    logins.set(registry_server.address, registry_server.username, registry_server.password)
    transfer = asyncio.run(put_image_on_host(spawner, pushed))
    assert transfer is not None and transfer.path == "registry", transfer
    with machine.client() as c:
        digests = c.api.inspect_image(pushed)["RepoDigests"]
    assert transfer.digest.startswith(f"{registry_server.address}/") and transfer.digest in digests
    shown = {i["image"]: i for i in registry.host_images()[machine.name]}
    assert (shown[pushed]["path"], shown[pushed]["state"]) == ("registry", "ok"), shown
