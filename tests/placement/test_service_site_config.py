"""The site config reaches the placement service the Hub runs: `c.PlacementService.*` set in
`CodeyardHub.site_config` goes through hub_config/jupyterhub_config.py into the service's
config file, and the running service answers with it (the Hub's provider reads the same)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import requests
from support.processes import free_port

HUB_CONFIG = Path(__file__).resolve().parents[2] / "hub_config" / "jupyterhub_config.py"

# Loads the project's Hub config as JupyterHub would, and prints what the test needs of it:
# the placement service's definition and the policy the Hub's provider places with.
LOAD = """
import json, sys
from traitlets.config.loader import PyFileConfigLoader
from codeyard.placement.provider import RegistryHostProvider

c = PyFileConfigLoader(sys.argv[1]).load_config()
service = next(s for s in c.JupyterHub.services if s["name"] == "codeyard-placement")
provider = RegistryHostProvider(config=c)
print(json.dumps({"service": service, "hub_policy": provider.registry.settings.default_policy}))
"""


def _hub_config(tmp_path: Path, site_config: str) -> dict:  # type: ignore[type-arg]
    state = tmp_path / "state"
    site = tmp_path / "site_config.py"
    site.write_text(site_config)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("CODEYARD_PLACEMENT_DB_URL", "CODEYARD_PLACEMENT_CRYPT_KEY")
    }
    env.update(CODEYARD_STATE=str(state), CODEYARD_SITE_CONFIG=str(site))
    out = subprocess.run(
        [sys.executable, "-c", LOAD, str(HUB_CONFIG)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_site_config_setting_reaches_the_running_service(hub, hub_tokens, tmp_path) -> None:  # type: ignore[no-untyped-def]
    loaded = _hub_config(
        tmp_path,
        'c.PlacementService.default_policy = "round-robin"\n'
        'c.PlacementService.group_policies = {"berlin": "region"}\n',
    )
    assert loaded["hub_policy"] == "round-robin"
    service = loaded["service"]
    assert any(arg.startswith("--config=") for arg in service["command"]), service["command"]

    port = free_port()
    prefix = "/services/codeyard-placement/"
    # What the Hub gives a managed service, pointed at the test Hub that knows this service.
    env = {
        **os.environ,
        **service["environment"],
        **hub.placement_service_env(prefix, port),
    }
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            service["command"], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT
        )
        admin = {"Authorization": f"token {hub_tokens['admin']}"}
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    r = requests.get(
                        f"http://127.0.0.1:{port}{prefix}api/policies", headers=admin, timeout=5
                    )
                    break
                except requests.ConnectionError:
                    assert proc.poll() is None, log_path.read_text()
                    assert time.monotonic() < deadline, log_path.read_text()
                    time.sleep(0.2)
            assert r.status_code == 200, r.text
            policies = r.json()
            assert policies["default"]["policy"] == "round-robin"
            assert policies["groups"]["berlin"] == {
                "policy": "region",
                "options": {},
                "source": "config",
            }
        finally:
            proc.terminate()
            proc.wait(10)
