"""Register the central audit with JupyterHub.

From jupyterhub_config.py::

    from codeyard.central_audit.hubconfig import configure_audit_service
    configure_audit_service(
        c,
        ip="172.17.0.1",
        port=8004,
        db_url="sqlite:////var/lib/codeyard/audit.sqlite",
        hmac_key_file="/var/lib/codeyard/audit_hmac.key",
        signing_key_file="/var/lib/codeyard/audit_ed25519.pem",
        admin_users=["admin"],
    )

Adds the managed service `codeyard-audit`, its two custom scopes, and these grants:

- the `server` role (every workspace server's `JUPYTERHUB_API_TOKEN`) gets the write scope,
  so a workspace posts its records with the token it already has. The `user` role gets it
  too, because the Hub gives a server's token only scopes its user also holds; the service
  still stores records only for a token naming exactly one server
  (`access:servers!server=<user>/<name>`), and under that server;
- the `user` role gets access to the service (to read one's own records and page);
- `codeyard-audit-admin` (the given admins and groups) gets the admin scope;
- services named in `writer_services` (the LLM gateway) get the write scope;
- the service itself may list the Hub's groups (the usage page sums per group);
- with `spawn_events_dir`, the Hub records every workspace start and stop there and sends
  them as the service `codeyard-spawn-events` (`spawn_events.SpawnEventRecorder`, added to
  `c.EventLogger.handlers`), for the usage page's workspace-hours.

Every setting reaches the service as `--CentralAudit.<name>=<value>`; a `c.CentralAudit`
section in the Hub's config (the site config) is passed on too and wins.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from .scopes import ADMIN_SCOPE, SERVICE_NAME, WRITE_SCOPE
from .spawn_events import SERVICE as EVENTS
from .spawn_events import SpawnEventRecorder, ensure_token

__all__ = ["ADMIN_SCOPE", "SERVICE_NAME", "WRITE_SCOPE", "configure_audit_service"]

# JupyterHub's own scopes for its `server` and `user` roles; ours are added to them.
DEFAULT_SERVER_SCOPES = ["users:activity!user", "access:servers!server"]
DEFAULT_USER_SCOPES = ["self"]


def _merge_role(roles: list[dict[str, Any]], name: str, base: list[str], extra: str) -> None:
    for role in roles:
        if role.get("name") == name:
            scopes = list(role.get("scopes") or base)
            if extra not in scopes:
                scopes.append(extra)
            role["scopes"] = scopes
            return
    roles.append({"name": name, "scopes": [*base, extra]})


def configure_audit_service(
    c: Any,
    *,
    port: int,
    db_url: str,
    hmac_key_file: str,
    signing_key_file: str,
    ip: str = "127.0.0.1",
    retention_days: float | None = None,
    admin_users: Sequence[str] = (),
    admin_groups: Sequence[str] = (),
    writer_services: Sequence[str] = (),
    spawn_events_dir: str | None = None,
    name: str = SERVICE_NAME,
    python: str = sys.executable,
) -> dict[str, Any]:
    """Add the service, its scopes and role grants to the Hub config `c`; return the service.

    `ip` must be an address workspace containers reach (the docker bridge), since they post
    to the service directly, not through the proxy.
    """
    settings: dict[str, Any] = {
        "db_url": db_url,
        "hmac_key_file": hmac_key_file,
        "signing_key_file": signing_key_file,
    }
    if retention_days is not None:
        settings["retention_days"] = retention_days
    if "CentralAudit" in c:
        settings.update(dict(c["CentralAudit"]))
    service = {
        "name": name,
        "url": f"http://{ip}:{port}",
        "command": [
            python,
            "-m",
            "codeyard.central_audit",
            "serve",
            *(f"--CentralAudit.{k}={v}" for k, v in sorted(settings.items())),
        ],
        "oauth_client_allowed_scopes": [ADMIN_SCOPE, f"access:services!service={name}"],
        "oauth_no_confirm": True,
        "display": True,
    }
    hub = c.JupyterHub
    hub.services = [*(hub.services if "services" in hub else []), service]
    scopes = dict(hub.custom_scopes if "custom_scopes" in hub else {})
    scopes[WRITE_SCOPE] = {"description": "Send audit records to the Codeyard central audit."}
    scopes[ADMIN_SCOPE] = {"description": "Read every Codeyard audit record and chain."}
    hub.custom_scopes = scopes
    roles = list(hub.load_roles if "load_roles" in hub else [])
    _merge_role(roles, "server", DEFAULT_SERVER_SCOPES, WRITE_SCOPE)
    _merge_role(roles, "user", DEFAULT_USER_SCOPES, f"access:services!service={name}")
    _merge_role(roles, "user", DEFAULT_USER_SCOPES, WRITE_SCOPE)
    roles.append(
        {
            "name": f"{name}-admin",
            "scopes": [ADMIN_SCOPE, f"access:services!service={name}"],
            "users": list(admin_users),
            "groups": list(admin_groups),
        }
    )
    writers = list(writer_services)
    if spawn_events_dir:
        token = ensure_token(f"{spawn_events_dir}/hub-token")
        hub.services = [*hub.services, {"name": EVENTS, "api_token": token}]
        writers.append(EVENTS)
        recorder = SpawnEventRecorder(
            spawn_events_dir, f"http://{ip}:{port}/services/{name}", token
        )
        handlers = c.EventLogger.handlers if "handlers" in c.EventLogger else None
        c.EventLogger.handlers = [*(handlers or []), recorder]
    if writers:
        roles.append({"name": f"{name}-writer", "scopes": [WRITE_SCOPE], "services": writers})
    roles.append(
        {"name": f"{name}-service", "scopes": ["list:groups", "read:groups"], "services": [name]}
    )
    hub.load_roles = roles
    return service
