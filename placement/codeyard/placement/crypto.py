"""Encryption at rest for host credentials, and their public fingerprints.

Like JupyterHub's `CryptKeeper`, keys come from one setting (`CODEYARD_PLACEMENT_CRYPT_KEY`)
holding several keys separated by `;`. The FIRST key encrypts; every key decrypts. To rotate:
put a new key first, keep the old ones after it, run `python -m codeyard.placement
rotate-keys` (re-encrypts every credential under the first key), then drop the old keys.

Each key is a Fernet key (url-safe base64 of 32 bytes) or 64 hex digits (32 bytes).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Iterable
from typing import Any

from cryptography import x509
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import serialization

KEY_ENV = "CODEYARD_PLACEMENT_CRYPT_KEY"


def keys_from_env() -> str:
    """The `;`-separated keys `KEY_ENV` holds, "" when unset: the one place that reads it, so
    the service, the Hub's provider and the Hub config decrypt with the same keys."""
    return os.environ.get(KEY_ENV, "")


class NoEncryptionKey(RuntimeError):
    """No key configured: refuse to store secrets rather than store them in clear."""


class DecryptionFailed(RuntimeError):
    """No configured key opens this credential (a key was dropped before rotation)."""


def _fernet(key: str) -> Fernet:
    key = key.strip()
    if len(key) == 64:
        try:
            return Fernet(base64.urlsafe_b64encode(binascii.unhexlify(key)))
        except (binascii.Error, ValueError):
            pass
    return Fernet(key.encode("ascii"))


def key_fingerprint(key: str) -> str:
    """A short public id for a key (to tell an admin which key is first), never the key."""
    return "sha256:" + hashlib.sha256(key.strip().encode()).hexdigest()[:16]


class CredentialCipher:
    """MultiFernet over the configured keys."""

    def __init__(self, keys: str | Iterable[str] | None = None) -> None:
        if keys is None:
            keys = keys_from_env()
        if isinstance(keys, str):
            keys = keys.split(";")
        self.keys = [k.strip() for k in keys if k.strip()]
        if not self.keys:
            raise NoEncryptionKey(
                f"Set {KEY_ENV} to one or more Fernet keys separated by ';' "
                "(generate one with `python -m codeyard.placement generate-key`)."
            )
        self._multi = MultiFernet([_fernet(k) for k in self.keys])

    @staticmethod
    def generate_key() -> str:
        return Fernet.generate_key().decode("ascii")

    def encrypt(self, secret: dict[str, Any]) -> bytes:
        return self._multi.encrypt(json.dumps(secret, sort_keys=True).encode("utf-8"))

    def decrypt(self, token: bytes) -> dict[str, Any]:
        try:
            return json.loads(self._multi.decrypt(token))
        except InvalidToken:
            raise DecryptionFailed(
                "no configured key decrypts this credential; was a key removed before "
                "`rotate-keys` ran?"
            ) from None

    def rotate(self, token: bytes) -> bytes:
        """Re-encrypt under the first key (raises DecryptionFailed if no key opens it)."""
        try:
            return self._multi.rotate(token)
        except InvalidToken:
            raise DecryptionFailed("no configured key decrypts this credential") from None


def _sha256(data: bytes) -> str:
    return "SHA256:" + hashlib.sha256(data).hexdigest()


def cert_fingerprint(pem: str) -> str:
    cert = x509.load_pem_x509_certificate(pem.encode())
    return _sha256(cert.public_bytes(serialization.Encoding.DER))


def private_key_fingerprint(pem: str) -> str:
    """Fingerprint of the PUBLIC half, so it matches what the remote side sees."""
    data = pem.encode()
    key: Any
    try:
        key = serialization.load_ssh_private_key(data, password=None)
    except ValueError:
        key = serialization.load_pem_private_key(data, password=None)
    return _public_fingerprint(key.public_key())


def _public_fingerprint(public_key: Any) -> str:
    public = public_key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    blob = base64.b64decode(public.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def known_hosts_fingerprint(lines: str) -> str:
    """SHA256 fingerprint of the first host key in known_hosts lines (as `ssh-keygen -l`)."""
    for line in lines.splitlines():
        fields = line.split()
        if len(fields) >= 3 and not line.startswith("#"):
            blob = base64.b64decode(fields[2])
            return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    raise ValueError("known_hosts has no host key line")


def fingerprints(kind: str, secret: dict[str, Any]) -> dict[str, str]:
    """Public fingerprints for a credential; validates the material on the way (ValueError)."""
    if kind == "tls":
        missing = [k for k in ("ca", "cert", "key") if not secret.get(k)]
        if missing:
            raise ValueError(f"a TLS credential needs PEM fields {missing}")
        prints = {
            "ca": cert_fingerprint(secret["ca"]),
            "cert": cert_fingerprint(secret["cert"]),
            "key": private_key_fingerprint(secret["key"]),
        }
        cert_key = x509.load_pem_x509_certificate(secret["cert"].encode()).public_key()
        if _public_fingerprint(cert_key) != prints["key"]:
            raise ValueError("the client certificate and the key do not match")
        return prints
    if kind == "ssh":
        if not secret.get("key"):
            raise ValueError("an SSH credential needs a private 'key'")
        prints = {"key": private_key_fingerprint(secret["key"])}
        if secret.get("known_hosts"):
            prints["host"] = known_hosts_fingerprint(secret["known_hosts"])
        return prints
    if kind == "token":
        if not secret.get("token"):
            raise ValueError("a token credential needs a 'token'")
        return {"token": "sha256:" + hashlib.sha256(secret["token"].encode()).hexdigest()[:12]}
    raise ValueError(f"unknown credential kind {kind!r}")
