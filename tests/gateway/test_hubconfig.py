"""How the gateway gets its settings: `codeyard.gateway.hubconfig` turns the Hub config's
values into the gateway's command line, and Codeyard's Hub config computes them once from
`CodeyardHub` and the site config. No model or Hub process is needed."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.hub import HUB_CONFIG
from traitlets.config import Config, PyFileConfigLoader

from codeyard.gateway.app import GatewayApp
from codeyard.gateway.hubconfig import SERVICE_NAME, configure_llm_service

PLACES = {
    "port": 8002,
    "upstream_url": "http://127.0.0.1:8003",
    "key_file": "/srv/state/vllm.key",
    "audit_log": "/srv/state/llm-audit.jsonl",
}


def gateway_from(service: dict[str, object]) -> GatewayApp:
    """The settings the gateway process ends up with, parsed from the service's command."""
    command = service["command"]
    assert isinstance(command, list) and command[1:3] == ["-m", "codeyard.gateway"]
    app = GatewayApp()
    app.parse_command_line(command[3:])
    return app


def test_the_computed_places_reach_the_gateway_as_its_settings() -> None:
    c = Config()
    service = configure_llm_service(c, **PLACES)  # type: ignore[arg-type]
    assert service["url"] == "http://127.0.0.1:8002"
    assert "environment" not in service
    app = gateway_from(service)
    assert app.upstream_url == "http://127.0.0.1:8003"
    assert app.upstream_api_key_file == "/srv/state/vllm.key"
    assert app.audit_log_path == "/srv/state/llm-audit.jsonl"
    assert c.JupyterHub.services == [service]
    assert "custom:codeyard-llm" in c.JupyterHub.custom_scopes
    roles = {r["name"]: r["scopes"] for r in c.JupyterHub.load_roles}
    assert "custom:codeyard-llm" in roles["user"] and "custom:codeyard-llm" in roles["server"]


def test_gateway_settings_in_the_hub_config_reach_the_gateway_and_extra_args_win() -> None:
    c = Config()
    c.GatewayApp.max_concurrent_per_user = 2
    c.GatewayApp.metrics_require_auth = False
    c.GatewayApp.upstream_timeout = 12.5
    c.GatewayApp.required_scopes = ["custom:codeyard-llm", "access:services"]
    c.GatewayApp.upstream_url = "http://gpu-box:8000"
    extra = ["--GatewayApp.upstream_timeout=3"]
    app = gateway_from(configure_llm_service(c, **PLACES, extra_args=extra))  # type: ignore[arg-type]
    assert app.max_concurrent_per_user == 2
    assert app.metrics_require_auth is False
    assert app.required_scopes == ["custom:codeyard-llm", "access:services"]
    assert app.upstream_url == "http://gpu-box:8000"
    assert app.upstream_timeout == 3
    alias = ["--upstream-url=http://other:1"]
    app = gateway_from(configure_llm_service(c, **PLACES, extra_args=alias))  # type: ignore[arg-type]
    assert app.upstream_url == "http://other:1"


def test_an_empty_scope_list_and_an_unknown_setting() -> None:
    c = Config()
    c.GatewayApp.required_scopes = []
    assert gateway_from(configure_llm_service(c, **PLACES)).required_scopes == []  # type: ignore[arg-type]
    c.GatewayApp.max_concurent_per_user = 2
    with pytest.raises(ValueError, match="max_concurent_per_user"):
        configure_llm_service(c, **PLACES)  # type: ignore[arg-type]


def test_the_gateway_refuses_to_start_without_an_upstream_or_an_audit_file() -> None:
    with pytest.raises(SystemExit, match=r"upstream_url and --GatewayApp\.audit_log_path"):
        GatewayApp().initialize([])


def load_hub_config(state: Path, site_config: str, monkeypatch: pytest.MonkeyPatch) -> Config:
    """hub_config/jupyterhub_config.py as JupyterHub loads it, with this site config."""
    for name in (
        "CODEYARD_VLLM_URL",
        "CODEYARD_VLLM_PORT",
        "CODEYARD_VLLM_KEY_FILE",
        "CODEYARD_SITE_CONFIG",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CODEYARD_STATE", str(state))
    monkeypatch.setenv("CODEYARD_HOST_PROVIDER", "local")  # no registry database
    state.mkdir(mode=0o700)
    (state / "site_config.py").write_text(site_config)
    return PyFileConfigLoader("jupyterhub_config.py", path=str(HUB_CONFIG)).load_config()


def test_codeyard_hub_and_site_config_settings_reach_the_gateway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = "c.CodeyardHub.vllm_port = 9123\nc.GatewayApp.tokens_per_minute_per_user = 77\n"
    c = load_hub_config(tmp_path / "state", site, monkeypatch)
    [service] = [s for s in c.JupyterHub.services if s["name"] == SERVICE_NAME]
    app = gateway_from(service)
    assert app.upstream_url == "http://127.0.0.1:9123"
    assert app.upstream_api_key_file == str(tmp_path / "state" / "vllm.key")
    assert app.audit_log_path == str(tmp_path / "state" / "llm-audit.jsonl")
    assert app.tokens_per_minute_per_user == 77


def test_the_default_vllm_port_is_8003_not_the_proxy_api_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CODEYARD_PROXY_API_PORT", raising=False)
    c = load_hub_config(tmp_path / "state", "", monkeypatch)
    [service] = [s for s in c.JupyterHub.services if s["name"] == SERVICE_NAME]
    assert gateway_from(service).upstream_url == "http://127.0.0.1:8003"
    assert c.ConfigurableHTTPProxy.api_url == "http://127.0.0.1:8001"
