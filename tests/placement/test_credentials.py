"""Credentials are encrypted at rest, shown only as fingerprints, and keys rotate."""

from __future__ import annotations

import base64
import sqlite3
from pathlib import Path

import pytest
from placement_pki import CA

from codeyard.placement.__main__ import main as cli
from codeyard.placement.crypto import KEY_ENV, CredentialCipher, DecryptionFailed, NoEncryptionKey
from codeyard.placement.database import open_db
from codeyard.placement.registry import Registry, RegistryError


def _dump(db_url: str) -> str:
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        return "\n".join(conn.iterdump())


def _key_body(pem: str) -> list[str]:
    """Chunks of a PEM's base64 body, to look for the key even without its armour."""
    body = "".join(line for line in pem.splitlines() if not line.startswith("-----"))
    return [body[i : i + 24] for i in range(0, len(body) - 24, 24)]


def test_db_dump_holds_no_pem_and_no_key_material(registry: Registry, ca: CA, db_url: str) -> None:
    bundle = ca.bundle()
    registry.add_server({"name": "hs1", "endpoint": "tcp://127.0.0.2:2376", "credential": bundle})
    registry.add_server(
        {
            "name": "gw",
            "endpoint": "unix:///run/gw.sock",
            "credential": {"kind": "token", "token": "s3cr3t-token-value"},
        }
    )
    from placement_sshd import _keypair

    ssh_key = _keypair()[0]
    registry.add_server(
        {
            "name": "viassh",
            "endpoint": "ssh://root@127.0.0.4",
            "credential": {"kind": "ssh", "key": ssh_key},
        }
    )
    dump = _dump(db_url)
    assert "-----BEGIN" not in dump
    assert "OPENSSH" not in dump
    for chunk in _key_body(ssh_key):
        assert chunk not in dump
    assert "PRIVATE" not in dump
    assert "s3cr3t-token-value" not in dump
    for chunk in _key_body(bundle["key"]) + _key_body(bundle["cert"]):
        assert chunk not in dump
    # nor as the raw DER bytes' base64 in any other alphabet
    assert base64.b64encode(bundle["key"].encode()).decode()[:40] not in dump


def test_api_view_shows_fingerprints_only(registry: Registry, ca: CA) -> None:
    bundle = ca.bundle()
    view = registry.add_server(
        {"name": "hs1", "endpoint": "tcp://127.0.0.2:2376", "credential": bundle}
    )
    text = repr(view)
    assert "BEGIN" not in text
    assert view["credential"]["kind"] == "tls"
    assert set(view["credential"]["fingerprints"]) == {"ca", "cert", "key"}
    assert all(v.startswith("SHA256:") for v in view["credential"]["fingerprints"].values())


def test_invalid_material_is_refused(registry: Registry, ca: CA) -> None:
    with pytest.raises(RegistryError, match="credential"):
        registry.add_server(
            {
                "name": "x",
                "endpoint": "tcp://127.0.0.2:2376",
                "credential": {"kind": "tls", "ca": "nope", "cert": "x", "key": "y"},
            }
        )
    mismatched = {**ca.bundle(), "key": ca.client().key}
    with pytest.raises(RegistryError, match="do not match"):
        registry.add_server(
            {"name": "x", "endpoint": "tcp://127.0.0.2:2376", "credential": mismatched}
        )
    with pytest.raises(RegistryError, match="TLS credential"):
        registry.add_server({"name": "x", "endpoint": "tcp://127.0.0.2:2376"})


def test_no_key_configured_refuses_to_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(NoEncryptionKey, match=KEY_ENV):
        CredentialCipher()


def test_hex_keys_are_accepted() -> None:
    cipher = CredentialCipher("ab" * 32)
    assert cipher.decrypt(cipher.encrypt({"a": "b"})) == {"a": "b"}


def test_rotation_re_encrypts_under_the_newest_key(
    registry: Registry,
    ca: CA,
    db_url: str,
    crypt_keys: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    new, old = crypt_keys
    bundle = ca.bundle()
    registry.add_server({"name": "hs1", "endpoint": "tcp://127.0.0.2:2376", "credential": bundle})
    before = _dump(db_url)

    monkeypatch.setenv(KEY_ENV, f"{new};{old}")
    assert cli(["--db-url", db_url, "rotate-keys"]) == 0
    assert _dump(db_url) != before

    # the old key alone no longer opens it; the new key alone does
    only_new = Registry(open_db(db_url), CredentialCipher(new))
    _endpoint, kind, secret = only_new.connection("hs1")
    assert (kind, secret["key"], secret["ca"]) == ("tls", bundle["key"], bundle["ca"])
    with pytest.raises(DecryptionFailed):
        Registry(open_db(db_url), CredentialCipher(old)).connection("hs1")
    assert only_new.get_server("hs1")["credential"]["rotated"] is not None


def test_dropping_a_key_before_rotation_fails_loudly(
    registry: Registry, ca: CA, db_url: str, crypt_keys: tuple[str, str]
) -> None:
    new, _old = crypt_keys
    registry.add_server(
        {"name": "hs1", "endpoint": "tcp://127.0.0.2:2376", "credential": ca.bundle()}
    )
    with pytest.raises(DecryptionFailed, match="rotate-keys"):
        Registry(open_db(db_url), CredentialCipher(new)).connection("hs1")
    assert Path(db_url.removeprefix("sqlite:///")).exists()
