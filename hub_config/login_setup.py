"""The Hub's login: Codeyard's sign-up authenticator by default, its admin bootstrap and the
failed-login lock.

`jupyterhub_config.py` calls `configure_login(c, settings)`. Run as a script
(`hub_config/bin/up.sh` does), it prints the one-time admin sign-up link, making its secret
first, or nothing when there is none to use (the admin was registered, or the site config
chose another authenticator).

Only Codeyard's authenticator (`codeyard.hubauth.native.CodeyardNativeAuthenticator`) makes
`CodeyardHub.admin_user` an admin, because only it guarantees that name can be registered
only by the holder of the bootstrap secret. With LDAP, OAuth or any other authenticator a
directory account that happens to have that name must not become admin: admins are the site
config's `c.Authenticator.admin_users`, or users given the Hub's admin flag.
"""

from __future__ import annotations

import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from hub_settings import CodeyardHub

from codeyard.hubauth.bootstrap import AdminBootstrap

CODEYARD_AUTHENTICATOR = "codeyard.hubauth.native.CodeyardNativeAuthenticator"
# Names JupyterHub accepts for NativeAuthenticator, and ours, which extends it.
NATIVE_AUTHENTICATORS = {
    "native",
    "nativeauthenticator.NativeAuthenticator",
    "nativeauthenticator.nativeauthenticator.NativeAuthenticator",
    CODEYARD_AUTHENTICATOR,
}


def authenticator_name(c: Any) -> str:
    """The configured authenticator as an import string (a class is named by its module)."""
    value = c.JupyterHub.get("authenticator_class", CODEYARD_AUTHENTICATOR)
    if isinstance(value, str):
        return value
    return f"{value.__module__}.{value.__qualname__}"


def uses_codeyard_signup(c: Any) -> bool:
    """Whether the authenticator is Codeyard's (or a site config's subclass of it)."""
    value = c.JupyterHub.get("authenticator_class", CODEYARD_AUTHENTICATOR)
    if isinstance(value, str):
        return value == CODEYARD_AUTHENTICATOR
    from codeyard.hubauth.native import CodeyardNativeAuthenticator

    return isinstance(value, type) and issubclass(value, CodeyardNativeAuthenticator)


def uses_native_signup(c: Any) -> bool:
    """Whether users sign up on the Hub (NativeAuthenticator or a subclass of it)."""
    return uses_codeyard_signup(c) or authenticator_name(c) in NATIVE_AUTHENTICATORS


def configure_login(c: Any, settings: CodeyardHub) -> None:
    """Login defaults, each only where the site config left it unset."""
    if "authenticator_class" not in c.JupyterHub:
        c.JupyterHub.authenticator_class = CODEYARD_AUTHENTICATOR
    if uses_codeyard_signup(c):
        if "admin_users" not in c.Authenticator:
            c.Authenticator.admin_users = {settings.admin_user}
        auth = c.CodeyardNativeAuthenticator
        if "admin_bootstrap_file" not in auth:
            auth.admin_bootstrap_file = settings.admin_bootstrap_file
        AdminBootstrap(auth.admin_bootstrap_file).ensure()
    native = c.NativeAuthenticator
    if uses_native_signup(c) and "allow_all" not in c.Authenticator:
        # NativeAuthenticator itself refuses users an admin has not approved; JupyterHub 5's
        # own allow list would refuse everyone else. Other authenticators keep JupyterHub's
        # default (nobody) until the site config says who is allowed.
        c.Authenticator.allow_all = True
    defaults = {
        "open_signup": not settings.require_approval,
        "minimum_password_length": 8,
        "check_common_password": True,
        "allowed_failed_logins": settings.failed_logins_before_lock,
        "seconds_before_next_try": settings.login_lock_seconds,
    }
    for name, value in defaults.items():
        if name not in native:
            native[name] = value


def admin_signup_url(c: Any, settings: CodeyardHub) -> str | None:
    """The one-time admin sign-up link (its secret made now if needed), or None."""
    if not uses_codeyard_signup(c):
        return None
    path = c.CodeyardNativeAuthenticator.get("admin_bootstrap_file", settings.admin_bootstrap_file)
    bootstrap = AdminBootstrap(path)
    bootstrap.ensure()
    return bootstrap.signup_url(settings.bind_url)


def _site_config() -> Any:
    """The site config as the Hub loads it (empty when there is no file)."""
    from traitlets.config import Config
    from traitlets.config.loader import PyFileConfigLoader

    site = CodeyardHub().site_config
    if not os.path.exists(site):
        return Config()
    folder, name = os.path.split(os.path.abspath(site))
    return PyFileConfigLoader(name, path=folder).load_config()


if __name__ == "__main__":
    config = _site_config()
    hub_settings = CodeyardHub(config=config)
    os.makedirs(hub_settings.state_dir, mode=0o700, exist_ok=True)
    url = admin_signup_url(config, hub_settings)
    if url:
        print(url)
