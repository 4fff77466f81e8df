"""The admin name is not claimable: with Codeyard's sign-up it is registered only through the
one-time bootstrap link (its secret in the state folder, 0600), and with another
authenticator (LDAP, OAuth; here JupyterHub's dummy one) that name is not made admin at all."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import HubLauncher
from support.browser import Browser
from support.hub import HubProcess

PASSWORD = "correct-horse-battery-7"


@pytest.fixture(scope="module")
def signup_hub(hubs: HubLauncher) -> Iterator[HubProcess]:
    admin = {"CODEYARD_ADMIN": f"chief{secrets.token_hex(3)}"}
    with hubs.running("bootstrap", extra_env=admin) as hub:
        yield hub


def test_the_admin_name_is_registered_only_through_the_one_time_link(
    signup_hub: HubProcess,
) -> None:
    hub = signup_hub
    admin = hub.extra_env["CODEYARD_ADMIN"]
    secret_file = hub.state_dir / "admin_bootstrap"
    assert secret_file.stat().st_mode & 0o777 == 0o600
    secret = secret_file.read_text().strip()

    # whoever comes first with a plain sign-up under the admin name is refused, and told why
    squatter = Browser(hub.url)
    r = squatter.signup(admin, PASSWORD)
    assert "is an admin name" in r.text and "one-time admin sign-up link" in r.text
    assert not squatter.login(admin, PASSWORD).url.endswith("/hub/home")
    # so is a made-up secret
    r = Browser(hub.url).signup(admin, PASSWORD, bootstrap="not-the-secret")
    assert "not valid or was already used" in r.text
    assert not Browser(hub.url).login(admin, PASSWORD).url.endswith("/hub/home")

    # the link printed by `make up` registers the admin, who needs no approval
    owner = Browser(hub.url)
    page = owner.s.get(f"{hub.url}/hub/signup?bootstrap={secret}", timeout=30)
    assert "one-time link registers an admin account" in page.text
    r = owner.signup(admin, PASSWORD, bootstrap=secret)
    assert "The signup was successful" in r.text, r.text
    assert owner.login(admin, PASSWORD).url.endswith("/hub/home")
    assert owner.api("GET", f"/users/{admin}").json()["admin"] is True

    # the secret is consumed: the file is gone and the link no longer works
    assert not secret_file.exists()
    assert (hub.state_dir / "admin_bootstrap.used").exists()
    page = Browser(hub.url).s.get(f"{hub.url}/hub/signup?bootstrap={secret}", timeout=30)
    assert "not valid or was already used" in page.text
    other = f"deputy{secrets.token_hex(3)}"
    r = Browser(hub.url).signup(other, PASSWORD, bootstrap=secret)
    assert "not valid or was already used" in r.text
    assert not Browser(hub.url).login(other, PASSWORD).url.endswith("/hub/home")

    # everybody else signs up as before, without admin rights
    dana = f"dana{secrets.token_hex(3)}"
    user = Browser(hub.url)
    assert "The signup was successful" in user.signup(dana, PASSWORD).text
    assert user.login(dana, PASSWORD).url.endswith("/hub/home")
    assert user.api("GET", f"/users/{dana}").json()["admin"] is False

    # a restart makes no new secret: the admin was bootstrapped once
    hub.stop()
    hub.start()
    assert not secret_file.exists()
    assert owner.login(admin, PASSWORD).url.endswith("/hub/home")


def test_another_authenticator_does_not_make_the_admin_name_admin(
    tmp_path_factory: pytest.TempPathFactory, image: str, proxy_command: str
) -> None:
    """A directory account that happens to be called like `CodeyardHub.admin_user` is an
    ordinary user; the site config's `admin_users` are the admins."""
    admin_name = f"chief{secrets.token_hex(3)}"
    site_admin = f"carol{secrets.token_hex(3)}"
    site = (
        'c.JupyterHub.authenticator_class = "dummy"\n'
        "c.Authenticator.allow_all = True\n"
        f"c.Authenticator.admin_users = {{{site_admin!r}}}\n"
    )
    state = Path(tmp_path_factory.mktemp("directory"))
    hub = HubProcess(
        state_dir=state,
        image=image,
        proxy_command=proxy_command,
        extra_env={"CODEYARD_ADMIN": admin_name},
        site_config=site,
    )
    hub.start()
    try:
        assert not (state / "admin_bootstrap").exists()
        directory_user = Browser(hub.url)
        assert directory_user.login(admin_name, "anything").url.endswith("/hub/home")
        assert hub.api_json("GET", f"users/{admin_name}")["admin"] is False
        named = Browser(hub.url)
        assert named.login(site_admin, "anything").url.endswith("/hub/home")
        assert hub.api_json("GET", f"users/{site_admin}")["admin"] is True
        # nor is the name an admin of the placement service
        assert "codeyard-admin" not in hub.api_json("GET", f"users/{admin_name}")["roles"]
        assert "codeyard-admin" in hub.api_json("GET", f"users/{site_admin}")["roles"]
    finally:
        hub.stop()
