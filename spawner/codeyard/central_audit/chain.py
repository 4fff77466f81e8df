"""The cryptography of the central audit: canonical JSON, the two chains, the keys, the
signed checkpoints, and the check of an export that needs only the public key.

Each stored record is one canonical JSON text (`body`). Per source it is linked twice:

- `digest_n = sha256(digest_{n-1} || body_n)`: public; anyone holding an export recomputes it;
- `mac_n = HMAC-SHA256(secret, mac_{n-1} || body_n)`: keyed with a secret only the Hub holds,
  so someone who can write the database but cannot read that secret cannot re-link a chain
  after deleting or editing a row.

A checkpoint signs `{source, pos, head_mac, head_digest, signed_at}` with an Ed25519 key only
the Hub holds; with the public key, an export's rows up to a checkpoint are shown to be the
rows the service had when it signed.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

#: The `prev` of a chain's first link, for both the MAC and the digest chain.
GENESIS = "0" * 64


def canonical(value: Any) -> str:
    """One JSON text per value: sorted keys, no spaces, ASCII only (as the workspace log's
    own hashes are computed), so the same record always chains to the same bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def next_digest(prev: str, body: str) -> str:
    return hashlib.sha256((prev + body).encode("ascii")).hexdigest()


def next_mac(secret: bytes, prev: str, body: str) -> str:
    return hmac.new(secret, (prev + body).encode("ascii"), hashlib.sha256).hexdigest()


def sha256_text(text: str) -> str:
    """The `path_hash` of a path (and of any other text the filters take as a hash)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def load_secret(path: str | os.PathLike[str]) -> bytes:
    """The HMAC secret in `path`, made once (32 random bytes, hex, mode 0600)."""
    file = Path(path)
    if not file.exists():
        with contextlib.suppress(FileExistsError):  # another process made it first
            _write_private(file, secrets.token_hex(32).encode("ascii"))
    secret = file.read_text("ascii").strip()
    if len(secret) < 32:
        raise ValueError(f"{file} holds no usable HMAC secret")
    return secret.encode("ascii")


def load_signing_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """The Ed25519 private key in `path` (PEM, PKCS8), made once with mode 0600."""
    file = Path(path)
    if not file.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        with contextlib.suppress(FileExistsError):
            _write_private(file, pem)
    loaded = serialization.load_pem_private_key(file.read_bytes(), password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ValueError(f"{file} is not an Ed25519 private key")
    return loaded


def public_pem(key: Ed25519PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )


def load_public_key(pem: str | bytes) -> Ed25519PublicKey:
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


def checkpoint_payload(
    source: str, pos: int, head_mac: str, head_digest: str, signed_at: float
) -> str:
    return canonical(
        {
            "source": source,
            "pos": pos,
            "head_mac": head_mac,
            "head_digest": head_digest,
            "signed_at": signed_at,
        }
    )


def sign(key: Ed25519PrivateKey, payload: str) -> str:
    return base64.b64encode(key.sign(payload.encode("ascii"))).decode("ascii")


def signature_ok(public: Ed25519PublicKey, payload: str, signature: str) -> bool:
    try:
        public.verify(base64.b64decode(signature), payload.encode("ascii"))
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass
class ExportCheck:
    """What `verify_export` found: `ok` only with no `problems` and at least one checkpoint
    covering rows of every chain in the export."""

    rows: int = 0
    checkpoints: int = 0
    covered: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.checkpoints > 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "rows": self.rows,
            "checkpoints": self.checkpoints,
            "covered": self.covered,
            "problems": self.problems,
        }


def verify_export(lines: Iterable[dict[str, Any]], public: Ed25519PublicKey) -> ExportCheck:
    """Check an export (`kind: record` and `kind: checkpoint` objects, as JSONL gives them).

    Every record's digest must be sha256(its `prev_digest` || its `body`), consecutive
    positions must link, and every checkpoint must carry a valid signature whose
    `head_digest` equals the digest of the record at its position when that record is in
    the export. A record is `covered` when a checkpoint at or after it is reached from it by
    an unbroken run of exported records: those are proven to be what the service signed.
    """
    check = ExportCheck()
    chains: dict[str, dict[int, dict[str, Any]]] = {}
    points: list[dict[str, Any]] = []
    for line in lines:
        kind = line.get("kind")
        if kind == "record":
            check.rows += 1
            src, pos = str(line.get("source")), int(line.get("pos", 0))
            if next_digest(str(line.get("prev_digest")), str(line.get("body"))) != line.get(
                "digest"
            ):
                check.problems.append(f"{src} pos {pos}: body does not match its digest")
            chains.setdefault(src, {})[pos] = line
        elif kind == "checkpoint":
            points.append(line)
    for src, rows in chains.items():
        for pos, row in rows.items():
            before = rows.get(pos - 1)
            if before is not None and before["digest"] != row["prev_digest"]:
                check.problems.append(f"{src} pos {pos}: does not link to pos {pos - 1}")
    covered: set[tuple[str, int]] = set()
    for point in points:
        payload = str(point.get("payload", ""))
        if not signature_ok(public, payload, str(point.get("signature", ""))):
            check.problems.append(f"checkpoint {point.get('source')}: bad signature")
            continue
        signed = json.loads(payload)
        src, pos = signed["source"], int(signed["pos"])
        rows = chains.get(src, {})
        check.checkpoints += 1
        if pos in rows:
            if rows[pos]["digest"] != signed["head_digest"]:
                check.problems.append(f"{src} pos {pos}: differs from the signed checkpoint")
                continue
            at = pos
            while at in rows:
                covered.add((src, at))
                at -= 1
    check.covered = len(covered)
    for src in chains:
        if not any((src, pos) in covered for pos in chains[src]):
            check.problems.append(f"{src}: no signed checkpoint covers its records")
    return check
