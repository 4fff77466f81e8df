"""Sign-up with admin approval switched on (`CODEYARD_REQUIRE_APPROVAL=1`): the configured
admin signs up without approval, everyone else waits for an admin."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from conftest import HubLauncher
from support.browser import Browser
from support.hub import HubProcess

PASSWORD = "correct-horse-battery-7"


@pytest.fixture(scope="module")
def approval_hub(hubs: HubLauncher) -> Iterator[HubProcess]:
    admin = f"boss{secrets.token_hex(3)}"
    env = {"CODEYARD_REQUIRE_APPROVAL": "1", "CODEYARD_ADMIN": admin}
    with hubs.running("approval", extra_env=env) as hub:
        yield hub


def test_new_users_wait_for_an_admin_and_the_first_admin_comes_from_the_setting(
    approval_hub: HubProcess,
) -> None:
    hub = approval_hub
    admin_name = hub.extra_env["CODEYARD_ADMIN"]
    admin = Browser(hub.url)
    # an admin name is registered only through the one-time link `make up` prints
    secret = (hub.state_dir / "admin_bootstrap").read_text().strip()
    admin.signup(admin_name, PASSWORD, bootstrap=secret)
    assert admin.login(admin_name, PASSWORD).url.endswith("/hub/home")
    assert admin.api("GET", f"/users/{admin_name}").json()["admin"] is True

    carol = Browser(hub.url)
    r = carol.signup("carol", PASSWORD)
    assert "admin" in r.text.lower()  # told to wait for approval
    assert not carol.login("carol", PASSWORD).url.endswith("/hub/home")

    r = admin.s.get(f"{hub.url}/hub/authorize/carol", timeout=30)
    assert r.status_code == 200
    assert carol.login("carol", PASSWORD).url.endswith("/hub/home")
    assert carol.api("GET", "/users/carol").json()["admin"] is False
