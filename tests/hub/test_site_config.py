"""The site config configures the Hub's services too: a `c.GatewayApp` setting in
`<state>/site_config.py` reaches the running LLM gateway of a real Hub."""

from __future__ import annotations

import time
from pathlib import Path

import requests
from support.hub import DOCKER_BRIDGE_IP, HubProcess


def test_a_gateway_setting_in_the_site_config_reaches_the_running_gateway(
    tmp_path: Path, image: str, proxy_command: str
) -> None:
    # The gateway's default answers /metrics only to a token with read:metrics (401 without
    # one, tests/gateway/test_gateway.py); the site config turns that off.
    hub = HubProcess(
        state_dir=tmp_path / "state",
        image=image,
        proxy_command=proxy_command,
        site_config="c.GatewayApp.metrics_require_auth = False",
    )
    hub.start()
    try:
        metrics = f"http://{DOCKER_BRIDGE_IP}:{hub.llm_port}/metrics"
        deadline = time.monotonic() + 60
        while True:
            try:
                r = requests.get(metrics, timeout=5)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, f"gateway not up\n{hub.log_tail()}"
                time.sleep(0.5)
        assert r.status_code == 200, r.text
        assert "codeyard_llm_requests_total" in r.text
    finally:
        hub.stop()
