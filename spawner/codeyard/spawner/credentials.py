"""The Hub's store of workspace git credentials: one user name and token per workspace.

A private repository is cloned with a credential the user gives once, in the New-workspace
form (or `PUT /hub/api/codeyard/workspaces/<user>/<ws>/credential`). It must never be part of
`user_options`: the Hub keeps those in its database in clear, returns them from the status
API and logs them. So it is stored here, encrypted. The clone helper container receives it
through a git credential helper (`clone.CREDENTIAL_HELPER`); later pulls and pushes from the
panel get it from `GET .../git-credential` (`handlers.WorkspaceGitCredentialFillHandler`),
asked by the workspace's own credential helper with the server's own token at each
operation, and only for the repository's host (`credential_host_allowed`).

Where: the `git_credentials` table of the placement registry's database (migration
`0005_git_credentials`). That database already lives beside the Hub, is upgraded with alembic
and backed up with the rest of the Hub's state, and works with SQLite or PostgreSQL; a
spawner-owned SQLite file would be one more file to back up and would not follow a Hub
moved to PostgreSQL.

Keys: the Hub's own `CryptKeeper` keys (`JUPYTERHUB_CRYPT_KEY`, `c.CryptKeeper.keys`), not
the registry's: the placement service, which holds the registry's key, never needs a git
credential. Each Hub key is stretched with HKDF for this one purpose, so a token made here
can never be read as one of JupyterHub's own `auth_state` tokens, or the other way round.
Rotation follows `CryptKeeper`: the first key encrypts, every key decrypts.
"""

from __future__ import annotations

import base64
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker
from traitlets import Unicode, default
from traitlets.config import SingletonConfigurable

from codeyard.placement.crypto import CredentialCipher, DecryptionFailed, NoEncryptionKey
from codeyard.placement.database import db_url_from_env, open_db
from codeyard.placement.models import WorkspaceGitCredential

from .clone import GitCredential
from .profiles import git_host

#: HKDF `info`: what the derived keys are for.
_PURPOSE = b"codeyard workspace git credentials v1"
MAX_FIELD = 4096


class CredentialStoreUnavailable(RuntimeError):
    """No database or no Hub encryption key: refuse to take a secret rather than drop it."""


class InvalidCredential(ValueError):
    """The user name or secret cannot be handed to git (empty, too long, a line break)."""


def derive_keys(hub_keys: list[bytes]) -> list[str]:
    """Fernet keys for this store, one per Hub key, in the Hub keys' order."""
    derived = []
    for key in hub_keys:
        raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_PURPOSE).derive(key)
        derived.append(base64.urlsafe_b64encode(raw).decode("ascii"))
    return derived


def check_credential(username: Any, secret: Any) -> tuple[str, str]:
    """Both strings, the secret non-empty, no control characters: git's credential protocol
    is line-based, so a line break would let the value smuggle in other attributes."""
    if not isinstance(username, str) or not isinstance(secret, str):
        raise InvalidCredential("username and secret must be strings")
    if not secret:
        raise InvalidCredential("the secret (token or password) is empty")
    for name, value in (("username", username), ("secret", secret)):
        if len(value) > MAX_FIELD:
            raise InvalidCredential(f"the {name} is longer than {MAX_FIELD} characters")
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise InvalidCredential(f"the {name} may not contain control characters")
    # Many hosts take any user name with a token; git needs one to ask for the password.
    return username or "git", secret


def credential_host_allowed(repo_url: str, protocol: str, host: str) -> bool:
    """Whether git may get the workspace's credential for `protocol://host`: only for the
    host of the repository the workspace was cloned from, and only over http(s), the
    transports that send it (a credential for an ssh or git:// remote is never asked)."""
    want = git_host(repo_url)
    scheme = repo_url.split("://", 1)[0].lower() if "://" in repo_url else ""
    if not want or scheme not in ("https", "http"):
        return False
    return protocol == scheme and host.lower() == want.lower()


class GitCredentialStore(SingletonConfigurable):
    """Per-workspace git credentials, encrypted, in the registry database's `git_credentials`.

    One instance per Hub (`GitCredentialStore.instance(config=...)`), shared by the API
    handler and every spawner. Calls are short single-row queries.
    """

    db_url = Unicode(
        help="""SQLAlchemy URL of the database holding the `git_credentials` table: the
        placement registry's. Default: `c.RegistryHostProvider.db_url` when that is set (the
        Hub config sets it), else $CODEYARD_PLACEMENT_DB_URL. Empty: no store; the
        credential API answers 503 and clones run without a credential.""",
    ).tag(config=True)

    @default("db_url")
    def _default_db_url(self) -> str:
        provider = self.config.get("RegistryHostProvider", {})
        url = provider.get("db_url", "") if hasattr(provider, "get") else ""
        return str(url or db_url_from_env(""))

    _sessions: sessionmaker[Session] | None = None
    _cipher: CredentialCipher | None = None

    def _db(self) -> Session:
        if not self.db_url:
            raise CredentialStoreUnavailable(
                "No git credential store: set c.GitCredentialStore.db_url (the placement"
                " registry's database)."
            )
        if self._sessions is None:
            self._sessions = open_db(self.db_url)
        return self._sessions()

    def cipher(self) -> CredentialCipher:
        if self._cipher is None:
            from jupyterhub.crypto import CryptKeeper

            keys = list(CryptKeeper.instance().keys)
            try:
                self._cipher = CredentialCipher(derive_keys(keys))
            except NoEncryptionKey:
                raise CredentialStoreUnavailable(
                    "The Hub has no encryption key (JUPYTERHUB_CRYPT_KEY or"
                    " c.CryptKeeper.keys); git credentials are not stored without one."
                ) from None
        return self._cipher

    def put(self, user: str, workspace: str, username: Any, secret: Any) -> None:
        """Store (or replace) the workspace's credential; both values as a request gave
        them (`check_credential` refuses what git could not take)."""
        username, secret = check_credential(username, secret)
        token = self.cipher().encrypt({"username": username, "secret": secret})
        with self._db() as db, db.begin():
            row = db.scalar(
                select(WorkspaceGitCredential).where(
                    WorkspaceGitCredential.user == user,
                    WorkspaceGitCredential.workspace == workspace,
                )
            )
            if row is None:
                db.add(WorkspaceGitCredential(user=user, workspace=workspace, encrypted=token))
            else:
                row.encrypted = token

    def get(self, user: str, workspace: str) -> GitCredential | None:
        """The workspace's credential, or None; raises if no configured key opens it."""
        if not self.db_url:
            return None
        with self._db() as db:
            token = db.scalar(
                select(WorkspaceGitCredential.encrypted).where(
                    WorkspaceGitCredential.user == user,
                    WorkspaceGitCredential.workspace == workspace,
                )
            )
        if token is None:
            return None
        try:
            value = self.cipher().decrypt(token)
        except DecryptionFailed:
            raise CredentialStoreUnavailable(
                "The stored git credential cannot be decrypted with the Hub's keys; give it again."
            ) from None
        return GitCredential(str(value["username"]), str(value["secret"]))

    def exists(self, user: str, workspace: str) -> bool:
        if not self.db_url:
            return False
        with self._db() as db:
            return (
                db.scalar(
                    select(WorkspaceGitCredential.id).where(
                        WorkspaceGitCredential.user == user,
                        WorkspaceGitCredential.workspace == workspace,
                    )
                )
                is not None
            )

    def delete(self, user: str, workspace: str) -> bool:
        """Forget the workspace's credential; whether there was one."""
        if not self.db_url:
            return False
        with self._db() as db, db.begin():
            result = db.execute(
                delete(WorkspaceGitCredential).where(
                    WorkspaceGitCredential.user == user,
                    WorkspaceGitCredential.workspace == workspace,
                )
            )
        return bool(getattr(result, "rowcount", 0))
