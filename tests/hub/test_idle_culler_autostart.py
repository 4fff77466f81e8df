"""Workspaces that stop and start by themselves, on the real Hub, proxy and dockerd: the idle
culler (a short timeout here) stops an idle workspace, and opening a link into it in
Chromium starts it again, shows the progress, and lands in JupyterLab with its files intact.

Screenshots: /tmp/codeyard-shots/culled-*.png.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from conftest import HubLauncher, Users
from support.browser import signed_in, start_workspace
from support.chromium import HubPage, chromium
from support.contents_api import write_text
from support.hub import HubProcess

pytestmark = pytest.mark.slow

PASSWORD = "correct-horse-battery-7"
WS = "idle"
CULL_TIMEOUT = 45
CULL_EVERY = 10
NOTE = "written before the culler stopped me\n"

# The idle culler reads each workspace's last activity from the Hub. A workspace reports
# its own activity every JUPYTERHUB_ACTIVITY_INTERVAL seconds (default 300), so with a short
# cull timeout it must report often, or JupyterLab in use would be culled as idle.
SITE_CONFIG = f"""
c.CodeyardHub.cull_every = {CULL_EVERY}
c.Spawner.environment = {{"JUPYTERHUB_ACTIVITY_INTERVAL": "10"}}
"""


@pytest.fixture(scope="module")
def culling_hub(hubs: HubLauncher) -> Iterator[HubProcess]:
    with hubs.running(
        "hubstate-cull",
        extra_env={"CODEYARD_CULL_TIMEOUT": str(CULL_TIMEOUT)},
        site_config=SITE_CONFIG,
    ) as proc:
        yield proc


def servers(hub: HubProcess, user: str) -> dict[str, Any]:
    return dict(hub.api("GET", f"/users/{user}").json()["servers"])


def test_culler_stops_an_idle_workspace_and_opening_it_starts_it_with_its_files(
    culling_hub: HubProcess, users: Users
) -> None:
    hub = culling_hub
    alice = signed_in(hub.url, users.alice, PASSWORD)
    auth = start_workspace(hub, alice, users.alice, WS)
    base = f"{hub.url}/user/{users.alice}/{WS}"
    notes = f"{base}/api/contents/notes.txt"
    write_text(base, "notes.txt", NOTE, auth)

    # Nobody touches it now: the culler stops it after CULL_TIMEOUT (checked every CULL_EVERY).
    started = time.monotonic()
    deadline = started + CULL_TIMEOUT + 6 * CULL_EVERY + 120
    while WS in servers(hub, users.alice):
        assert time.monotonic() < deadline, f"not culled\n{hub.log_tail()}"
        time.sleep(2)
    waited = time.monotonic() - started
    assert waited >= CULL_TIMEOUT - 15, f"stopped after {waited:.0f}s, before the timeout"
    log = hub.log_path.read_text(errors="replace")
    assert f"Culling server {users.alice}/{WS}" in log, hub.log_tail()
    status = alice.api("GET", f"/codeyard/workspaces/{users.alice}/{WS}/status").json()
    assert status["state"] == "STOPPED", status

    # A link into the stopped workspace starts it, with progress, and opens JupyterLab.
    with chromium() as browser:
        user = HubPage(browser, hub.url)
        try:
            user.login(users.alice, PASSWORD)
            user.goto(f"/user/{users.alice}/{WS}/lab/tree/notes.txt")
            user.page.wait_for_selector("#cy-heading")
            assert f"Starting workspace {WS}" in user.page.inner_text("#cy-heading")
            user.page.wait_for_function(
                "() => document.querySelector('#progress-log')"
                ".textContent.includes('Placing workspace')"
            )
            user.shot("culled-autostart-progress")
            user.page.wait_for_url(
                f"**/user/{users.alice}/{WS}/lab/tree/notes.txt**", timeout=300_000
            )
            user.page.wait_for_selector("#jp-main-dock-panel", state="visible", timeout=120_000)
            user.page.wait_for_selector(".jp-DirListing-item[title*='notes.txt']", timeout=60_000)
            # The file opened from the link shows what was written before the stop.
            user.page.wait_for_function(
                "(t) => [...document.querySelectorAll('.jp-FileEditor .cm-content')]"
                ".some(e => e.innerText.includes(t))",
                arg=NOTE.strip(),
                timeout=60_000,
            )
            user.shot("culled-reopened-lab")
        finally:
            user.close()
    r = requests.get(notes, headers=auth, timeout=30)
    assert r.status_code == 200 and r.json()["content"] == NOTE
