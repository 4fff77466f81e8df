"""The site setting `CodeyardHub.patch_only` reaches a real workspace started by the Hub.

A Hub run with `CODEYARD_PATCH_ONLY=1` starts a workspace container whose Contents API
refuses a save with the message that points to the panel, whose terminals are off, and whose
patch path still writes; the same save works on a workspace of a Hub without the setting
(the `hub` fixture's), so the refusal is the setting's doing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from conftest import HubLauncher, Users
from support.browser import signed_in, start_workspace
from support.contents_api import put_text
from support.hub import HubProcess

pytestmark = pytest.mark.slow

PASSWORD = "correct-horse-battery-7"
WS = "strict"


@pytest.fixture(scope="module")
def strict_hub(hubs: HubLauncher) -> Iterator[HubProcess]:
    with hubs.running("hub-patch-only", extra_env={"CODEYARD_PATCH_ONLY": "1"}) as hub:
        yield hub


def _workspace(hub: HubProcess, user: str) -> tuple[str, dict[str, str]]:
    b = signed_in(hub.url, user, PASSWORD)
    auth = start_workspace(hub, b, user, WS)
    return f"{hub.url}/user/{user}/{WS}", auth


def _save(base: str, auth: dict[str, str], name: str) -> requests.Response:
    return put_text(base, name, "print('saved')\n", auth, timeout=60)


def test_patch_only_workspace_refuses_saves_and_terminals_but_takes_patches(
    strict_hub: HubProcess, hub: HubProcess, users: Users
) -> None:
    base, auth = _workspace(strict_hub, users.alice)

    r = _save(base, auth, "saved.py")
    assert r.status_code == 403, r.text
    assert "patch_only" in r.text and "patch/apply" in r.text, r.text
    listing = requests.get(f"{base}/api/contents", headers=auth, timeout=60).json()
    assert "saved.py" not in [item["name"] for item in listing["content"]]

    r = requests.post(f"{base}/api/terminals", headers=auth, timeout=60)
    assert r.status_code == 404, r.text

    diff = "--- /dev/null\n+++ b/patched.py\n@@ -0,0 +1 @@\n+print('patched')\n"
    r = requests.post(
        f"{base}/codeyard/api/patch/apply", json={"diff": diff}, headers=auth, timeout=60
    )
    assert r.status_code == 200, r.text
    r = requests.get(f"{base}/api/contents/patched.py", headers=auth, timeout=60)
    assert r.status_code == 200 and r.json()["content"] == "print('patched')\n", r.text

    # Control: on a Hub without the setting, the same save is taken.
    other_base, other_auth = _workspace(hub, users.bob)
    r = _save(other_base, other_auth, "saved.py")
    assert r.status_code in (200, 201), r.text
    names: list[Any] = [
        item["name"]
        for item in requests.get(
            f"{other_base}/api/contents", headers=other_auth, timeout=60
        ).json()["content"]
    ]
    assert "saved.py" in names
