"""The Hub scopes of the central audit and what a token's scopes make its holder.

- `WRITE_SCOPE` is granted to every server's token (the Hub's `server` role) and to services
  that report (the LLM gateway). A workspace's records are stored under the workspace its
  token names (`access:servers!server=<user>/<name>`), never under one the body claims.
- `ADMIN_SCOPE` reads every record and chain, and makes checkpoints on demand.
- Everyone else signed in reads their own records only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SERVICE_NAME = "codeyard-audit"
WRITE_SCOPE = "custom:codeyard-audit-write"
ADMIN_SCOPE = "custom:codeyard-audit-admin"
SERVER_ACCESS = "access:servers!server="


@dataclass(frozen=True)
class Caller:
    """Who a request comes from, as the Hub described its token or cookie."""

    kind: str  # "user" or "service"
    name: str
    scopes: frozenset[str]

    @classmethod
    def from_model(cls, model: dict[str, Any]) -> Caller:
        return cls(
            kind=str(model.get("kind") or "user"),
            name=str(model.get("name") or ""),
            scopes=frozenset(model.get("scopes") or ()),
        )

    def has(self, scope: str) -> bool:
        """Whether the caller holds `scope` (unfiltered, or the Hub's `custom:x!...` form)."""
        return scope in self.scopes or any(s.startswith(scope + "!") for s in self.scopes)

    @property
    def admin(self) -> bool:
        return self.has(ADMIN_SCOPE)

    def source(self) -> tuple[str, str, str, bool] | None:
        """(owner, workspace, source, owner_is_caller) of a caller allowed to write, else None.

        A user token writes only when it is one server's token: exactly one
        `access:servers!server=<user>/<name>` of its own user. A service writes as itself.
        """
        if not self.has(WRITE_SCOPE):
            return None
        if self.kind == "service":
            return self.name, self.name, f"service/{self.name}", False
        servers = [s[len(SERVER_ACCESS) :] for s in self.scopes if s.startswith(SERVER_ACCESS)]
        if len(servers) != 1:
            return None
        user, _, workspace = servers[0].partition("/")
        if user != self.name:
            return None
        return user, workspace, f"{user}/{workspace}", True
