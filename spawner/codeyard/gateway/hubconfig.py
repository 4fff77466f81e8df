"""Register the LLM gateway with JupyterHub.

From jupyterhub_config.py::

    from codeyard.gateway.hubconfig import configure_llm_service
    configure_llm_service(
        c,
        port=8002,
        upstream_url="http://127.0.0.1:8003",
        key_file="/var/lib/codeyard/vllm.key",
        audit_log="/var/lib/codeyard/llm-audit.jsonl",
    )

Adds the managed service `codeyard-llm` (the gateway; the Hub starts and restarts it), the
custom scope `custom:codeyard-llm`, and grants that scope to every user and to every
server's `JUPYTERHUB_API_TOKEN`, so a workspace can call the model with the token it
already has. vLLM itself is not a Hub service: `make up` starts it (hub_config/up.d), so a
Hub restart does not reload the model.

Every value reaches the gateway as a `--GatewayApp.<name>=<value>` argument; the gateway
reads no `CODEYARD_*` variables. The caller computes where vLLM, its key and the audit file
are (Codeyard's Hub config takes them from `CodeyardHub`), and any `c.GatewayApp.<name>`
set in the Hub's config (the site config) is passed on too and wins over those.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

from traitlets import Container, Dict

from .app import SCOPE, GatewayApp

SERVICE_NAME = "codeyard-llm"
# JupyterHub's own scopes for the `server` role; the gateway's scope is added to them.
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


def _cli_value(value: Any) -> str:
    """`value` as one command-line word that traitlets parses back to it."""
    if isinstance(value, str | bool | int | float):
        return str(value)
    raise TypeError(f"cannot pass {value!r} to the gateway on its command line")


def _names_in(args: Sequence[str]) -> set[str]:
    """GatewayApp settings that `args` set, as `--GatewayApp.<name>` or through an alias."""
    names = set()
    for arg in args:
        option = arg.lstrip("-").split("=", 1)[0]
        target = GatewayApp.aliases.get(option, option)
        if isinstance(target, tuple):  # (name, help) in traitlets' own aliases
            target = target[0]
        if isinstance(target, str) and target.startswith(("GatewayApp.", "Application.")):
            names.add(target.split(".", 1)[1])
    return names


def gateway_args(settings: Mapping[str, Any]) -> list[str]:
    """`--GatewayApp.<name>=<value>` arguments for `settings` (trait name -> value).

    Unknown names are refused here, at Hub start, instead of being ignored by the gateway.
    """
    traits = GatewayApp.class_traits(config=True)
    args: list[str] = []
    for name, value in settings.items():
        trait = traits.get(name)
        if trait is None:
            raise ValueError(
                f"GatewayApp has no setting {name!r} (python -m codeyard.gateway --help-all)"
            )
        flag = f"--GatewayApp.{name}="
        if isinstance(trait, Dict):
            args += [f"{flag}{key}={_cli_value(item)}" for key, item in dict(value).items()]
        elif isinstance(trait, Container):
            items = list(value)
            # An empty list is spelled `[]`; each item otherwise is one argument.
            args += [flag + _cli_value(item) for item in items] if items else [f"{flag}[]"]
        else:
            args.append(flag + _cli_value(value))
    return args


def configure_llm_service(
    c: Any,
    *,
    port: int,
    upstream_url: str,
    key_file: str,
    audit_log: str,
    model: str = "",
    central_audit_url: str = "",
    name: str = SERVICE_NAME,
    ip: str = "127.0.0.1",
    python: str = sys.executable,
    extra_args: Sequence[str] = (),
    grant_to_users: bool = True,
) -> dict[str, Any]:
    """Add the gateway service, its scope and the role grants to the Hub config `c`.

    `upstream_url` is vLLM's base URL, `key_file` the file with vLLM's API key, `audit_log`
    the gateway's JSONL audit file. `model`, if given, is the one model name callers may ask
    for (`GatewayApp.allowed_models`; without it the gateway learns vLLM's names).
    `central_audit_url`, if given, is where the gateway sends its audit records
    (`GatewayApp.central_audit_url`; the audit service must grant it its write scope).
    `extra_args` come last on the gateway's command line, so they win over the site
    config's `c.GatewayApp`. Returns the service definition added.
    """
    settings: dict[str, Any] = {
        "upstream_url": upstream_url,
        "upstream_api_key_file": key_file,
        "audit_log_path": audit_log,
    }
    if model:
        settings["allowed_models"] = [model]
    if central_audit_url:
        settings["central_audit_url"] = central_audit_url
    if "GatewayApp" in c:
        settings.update(c["GatewayApp"])
    # traitlets refuses a setting given twice on one command line: `extra_args` replace.
    for given in _names_in(extra_args):
        settings.pop(given, None)
    service = {
        "name": name,
        "url": f"http://{ip}:{port}",
        "command": [python, "-m", "codeyard.gateway", *gateway_args(settings), *extra_args],
        "display": False,
    }
    hub = c.JupyterHub
    hub.services = [*(hub.services if "services" in hub else []), service]
    scopes = dict(hub.custom_scopes if "custom_scopes" in hub else {})
    scopes[SCOPE] = {"description": "Use the shared language model through the Codeyard gateway."}
    hub.custom_scopes = scopes
    if grant_to_users:
        roles = list(hub.load_roles if "load_roles" in hub else [])
        _merge_role(roles, "user", ["self"], SCOPE)
        _merge_role(roles, "server", DEFAULT_SERVER_SCOPES, SCOPE)
        hub.load_roles = roles
    return service
