"""Register the Codeyard LLM gateway with JupyterHub.

From jupyterhub_config.py:

    import sys; sys.path.insert(0, os.path.dirname(__file__))
    from services_llm import configure_llm_service
    configure_llm_service(c)

This adds the managed service `codeyard-llm` (the gateway; the Hub starts and restarts it),
the managed service `codeyard-vllm` (hub_config/vllm/serve.sh, unless an external vLLM is
configured with CODEYARD_VLLM_URL or `start_vllm=False`), the custom scope
`custom:codeyard-llm`, and grants that scope to every user and to every server's
`JUPYTERHUB_API_TOKEN`, so a workspace can call the model with the token it already has.
Everything can be overridden by keyword or by `CODEYARD_*` environment variables.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

SERVICE_NAME = "codeyard-llm"
SCOPE = "custom:codeyard-llm"
DEFAULT_SERVER_SCOPES = ["users:activity!user", "access:servers!server"]


def _merge_role(roles: list[dict[str, Any]], name: str, base: list[str], extra: str) -> None:
    for role in roles:
        if role.get("name") == name:
            scopes = list(role.get("scopes") or base)
            if extra not in scopes:
                scopes.append(extra)
            role["scopes"] = scopes
            return
    roles.append({"name": name, "scopes": [*base, extra]})


def configure_llm_service(
    c: Any,
    *,
    name: str = SERVICE_NAME,
    ip: str = "127.0.0.1",
    port: int | None = None,
    upstream_url: str | None = None,
    key_file: str | None = None,
    audit_log: str | None = None,
    python: str = sys.executable,
    extra_args: tuple[str, ...] = (),
    grant_to_users: bool = True,
    start_vllm: bool | None = None,
) -> dict[str, Any]:
    """Add the gateway service, its scope and the role grants to the Hub config `c`.

    Returns the service definition that was added.
    """
    port = port or int(os.environ.get("CODEYARD_LLM_PORT", "8002"))
    cache = Path(os.environ.get("CODEYARD_CACHE", Path.home() / ".cache" / "codeyard"))
    state = Path(os.environ.get("CODEYARD_STATE", cache / "state"))
    environment = {
        "CODEYARD_VLLM_URL": upstream_url
        or os.environ.get("CODEYARD_VLLM_URL", "http://127.0.0.1:8001"),
        "CODEYARD_VLLM_KEY_FILE": key_file
        or os.environ.get("CODEYARD_VLLM_KEY_FILE", str(state / "vllm.key")),
        "CODEYARD_LLM_AUDIT_LOG": audit_log or str(state / "llm-audit.jsonl"),
    }
    service = {
        "name": name,
        "url": f"http://{ip}:{port}",
        "command": [python, "-m", "codeyard.gateway", *extra_args],
        "environment": environment,
        "display": False,
    }
    hub = c.JupyterHub
    services = [*(hub.services if "services" in hub else []), service]
    if start_vllm is None:
        start_vllm = upstream_url is None and "CODEYARD_VLLM_URL" not in os.environ
    if start_vllm:
        upstream_port = urlparse(environment["CODEYARD_VLLM_URL"]).port or 8001
        services.append(
            {
                # No url: the Hub runs and restarts it but routes nothing to it.
                "name": "codeyard-vllm",
                "command": [str(Path(__file__).resolve().parent / "vllm" / "serve.sh")],
                "environment": {
                    # Model folder, flavor, KV cache etc. pass through from the Hub's env.
                    **{k: v for k, v in os.environ.items() if k.startswith("CODEYARD_")},
                    "HOME": str(Path.home()),
                    "CODEYARD_CACHE": str(cache),
                    "CODEYARD_VLLM_PORT": str(upstream_port),
                    "CODEYARD_VLLM_KEY_FILE": environment["CODEYARD_VLLM_KEY_FILE"],
                },
            }
        )
    hub.services = services
    scopes = dict(hub.custom_scopes if "custom_scopes" in hub else {})
    scopes[SCOPE] = {"description": "Use the shared language model through the Codeyard gateway."}
    hub.custom_scopes = scopes
    if grant_to_users:
        roles = list(hub.load_roles if "load_roles" in hub else [])
        _merge_role(roles, "user", ["self"], SCOPE)
        _merge_role(roles, "server", DEFAULT_SERVER_SCOPES, SCOPE)
        hub.load_roles = roles
    return service
