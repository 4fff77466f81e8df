"""Register the placement service with JupyterHub.

From jupyterhub_config.py::

    from codeyard.placement.service.hubconfig import configure_placement_service
    configure_placement_service(c, admin_users=["alice"])

Adds the managed service `codeyard-placement` (the Hub starts it), the custom scope
`custom:codeyard-admin`, a role granting that scope to the given admins (and groups), the
service's own role (it may stop/start servers for `restart`), OAuth scopes so the
service's login cookie carries the admin scope, and (`nav_link`) a "Placement" link in the
Hub's navigation bar for admins (`hub_templates/page.html`).

With `config_file`, the Hub config's `c.PlacementService` section (the site config's
settings among it) is written there and the service started with `--config` on it: a
managed service gets no config of the Hub's otherwise.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from ..crypto import KEY_ENV
from ..database import DB_ENV
from ..settings import ADMIN_SCOPE, HUB_ADMIN_SCOPE

__all__ = ["DB_ENV", "SERVICE_NAME", "configure_placement_service", "write_service_config"]

SERVICE_NAME = "codeyard-placement"
HUB_TEMPLATES = str(Path(__file__).with_name("hub_templates"))


def configure_placement_service(
    c: Any,
    *,
    name: str = SERVICE_NAME,
    ip: str = "127.0.0.1",
    port: int = 10101,
    admin_users: list[str] | None = None,
    admin_groups: list[str] | None = None,
    environment: dict[str, str] | None = None,
    python: str = sys.executable,
    nav_link: bool = True,
    config_file: str | None = None,
) -> dict[str, Any]:
    hub = c.JupyterHub
    if nav_link:
        # appended, so a deployment's own page.html wins (it can copy hub_templates/page.html)
        paths = list(hub.template_paths if "template_paths" in hub else [])
        hub.template_paths = [*paths, HUB_TEMPLATES]
    command = [python, "-m", "codeyard.placement", "serve"]
    if config_file:
        command.append(f"--config={write_service_config(c, config_file)}")
    service = {
        "name": name,
        "url": f"http://{ip}:{port}",
        "command": command,
        # the Hub passes managed services only a few variables: forward the key and DB URL
        "environment": {
            **{k: os.environ[k] for k in (KEY_ENV, DB_ENV) if k in os.environ},
            **(environment or {}),
        },
        # admin-ui: Hub admins (the admin flag) are placement admins too (`hub_admin_scope`)
        "oauth_client_allowed_scopes": [ADMIN_SCOPE, HUB_ADMIN_SCOPE],
        "display": True,
        "oauth_no_confirm": True,  # an internal admin tool: no consent page
    }
    hub.services = [*(hub.services if "services" in hub else []), service]
    scopes = dict(hub.custom_scopes if "custom_scopes" in hub else {})
    scopes[ADMIN_SCOPE] = {"description": "Administer Codeyard's Docker hosts and placement."}
    hub.custom_scopes = scopes
    roles = list(hub.load_roles if "load_roles" in hub else [])
    roles.append(
        {
            "name": "codeyard-admin",
            "scopes": [ADMIN_SCOPE, f"access:services!service={name}"],
            "users": list(admin_users or []),
            "groups": list(admin_groups or []),
        }
    )
    roles.append(
        {
            "name": f"{name}-service",
            "scopes": ["servers", "read:users", "read:groups"],
            "services": [name],
        }
    )
    hub.load_roles = roles
    return service


def write_service_config(c: Any, path: str) -> str:
    """Write `c.PlacementService` to `path` as a JSON config file (mode 0600: a database
    URL may hold a password) and return its absolute path.

    Values must be plain JSON: assign them (`c.PlacementService.group_policies = {...}`)
    rather than `.update()` them, which traitlets keeps as a deferred operation.
    """
    section = dict(c.PlacementService) if "PlacementService" in c else {}
    try:
        text = json.dumps({"PlacementService": section}, indent=2, sort_keys=True)
    except TypeError as e:
        raise ValueError(f"c.PlacementService must hold plain JSON values: {e}") from None
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text + "\n")
    os.chmod(path, 0o600)  # O_CREAT's mode applies only to a new file
    return path
