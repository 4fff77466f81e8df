"""The Hub's own settings: the state folder, who is admin, sign-up approval, the login lock,
the database and the addresses the Hub and its proxy listen on.

The base of `CodeyardHub` (hub_settings.py); the other settings groups read `cache_dir`,
`state_dir` and `hub_ip` from here, and every default can come from a `CODEYARD_*`
environment variable. The Hub's services do not read those variables themselves:
jupyterhub_config.py passes each one the values computed here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from traitlets import Bool, HasTraits, Integer, Unicode, default, validate


def env(name: str, fallback: str) -> str:
    """The variable's value, or `fallback` when it is unset or empty."""
    return os.environ.get(name) or fallback


def env_bool(name: str, fallback: bool) -> bool:
    """A yes/no variable (1/true/yes/on); unset or empty means `fallback`."""
    value = os.environ.get(name)
    if value is None or value == "":
        return fallback
    return value.strip().lower() in {"1", "true", "yes", "on"}


class CoreSettings(HasTraits):
    """Settings every Hub needs; a plain HasTraits so only `c.CodeyardHub.*` configures them."""

    cache_dir = Unicode(
        help="""Folder for what Codeyard builds and can rebuild: virtual environments, the
        converted model, the proxy, image inputs. The shell scripts default to the same
        folder. Env: CODEYARD_CACHE. Default: ~/.cache/codeyard.""",
    ).tag(config=True)

    @default("cache_dir")
    def _default_cache_dir(self) -> str:
        return env("CODEYARD_CACHE", str(Path.home() / ".cache" / "codeyard"))

    @validate("cache_dir")
    def _check_cache_dir(self, proposal: dict[str, Any]) -> str:
        return os.path.abspath(os.path.expanduser(proposal["value"]))

    state_dir = Unicode(
        help="""Folder for the Hub's database, secrets, workspace homes and logs.

        Env: CODEYARD_STATE. Default: `state` in `cache_dir` (~/.cache/codeyard/state).
        """,
    ).tag(config=True)

    @default("state_dir")
    def _default_state_dir(self) -> str:
        return env("CODEYARD_STATE", os.path.join(self.cache_dir, "state"))

    @validate("state_dir")
    def _check_state_dir(self, proposal: dict[str, Any]) -> str:
        return os.path.abspath(os.path.expanduser(proposal["value"]))

    admin_user = Unicode(
        help="""User name that becomes admin with Codeyard's sign-up (the default login).

        Nobody can claim it by signing up first: it is registered only through the one-time
        link `make up` prints, which carries the secret in `<state_dir>/admin_bootstrap`
        (`admin_bootstrap_file`). NativeAuthenticator approves it without an admin (there is
        none yet). With another authenticator (LDAP, OAuth) this name is not made admin:
        admins are the site config's `c.Authenticator.admin_users`, or users given the Hub's
        admin flag. Env: CODEYARD_ADMIN. Default: admin.
        """,
    ).tag(config=True)

    @default("admin_user")
    def _default_admin_user(self) -> str:
        return env("CODEYARD_ADMIN", "admin")

    @validate("admin_user")
    def _check_admin_user(self, proposal: dict[str, Any]) -> str:
        value = proposal["value"].strip().lower()
        if not value or "/" in value:
            raise ValueError(f"Bad admin user name {proposal['value']!r}")
        return value

    require_approval = Bool(
        help="""Whether an admin must approve each sign-up before it can log in.

        Env: CODEYARD_REQUIRE_APPROVAL (1/0). Default: off (open sign-up).
        """,
    ).tag(config=True)

    @default("require_approval")
    def _default_require_approval(self) -> bool:
        return env_bool("CODEYARD_REQUIRE_APPROVAL", False)

    failed_logins_before_lock = Integer(
        help="""Failed logins in a row after which a user name is locked for
        `login_lock_seconds` (NativeAuthenticator's `allowed_failed_logins`). While locked,
        even the right password is refused and the login page says how long to wait; after
        that, each further failure locks it again until a login succeeds. Unknown names are
        counted too, so a lock does not reveal which names exist. Anybody can lock a name
        this way, which is the price of slowing down password guessing.
        Env: CODEYARD_FAILED_LOGINS. Default 5; 0 turns the lock off.""",
    ).tag(config=True)

    @default("failed_logins_before_lock")
    def _default_failed_logins_before_lock(self) -> int:
        return int(env("CODEYARD_FAILED_LOGINS", "5"))

    @validate("failed_logins_before_lock")
    def _check_failed_logins_before_lock(self, proposal: dict[str, Any]) -> int:
        if proposal["value"] < 0:
            raise ValueError("failed_logins_before_lock must be 0 (off) or more")
        return int(proposal["value"])

    login_lock_seconds = Integer(
        help="""Seconds a user name stays locked after `failed_logins_before_lock` failed
        logins (NativeAuthenticator's `seconds_before_next_try`).
        Env: CODEYARD_LOGIN_LOCK_SECONDS. Default 300.""",
    ).tag(config=True)

    @default("login_lock_seconds")
    def _default_login_lock_seconds(self) -> int:
        return int(env("CODEYARD_LOGIN_LOCK_SECONDS", "300"))

    @validate("login_lock_seconds")
    def _check_login_lock_seconds(self, proposal: dict[str, Any]) -> int:
        if proposal["value"] <= 0:
            raise ValueError("login_lock_seconds must be positive")
        return int(proposal["value"])

    database_url = Unicode(
        help="""SQLAlchemy URL of the Hub database, e.g.
        postgresql+psycopg://user:password@db/jupyterhub (psycopg 3 comes with the `hub`
        extra; the placement registry needs a database of its own, `placement_db_url`).
        Env: CODEYARD_DATABASE_URL. Default: SQLite in the state folder.
        """,
    ).tag(config=True)

    @default("database_url")
    def _default_database_url(self) -> str:
        url = os.environ.get("CODEYARD_DATABASE_URL", "")
        return url or f"sqlite:///{os.path.join(self.state_dir, 'jupyterhub.sqlite')}"

    @validate("database_url")
    def _check_database_url(self, proposal: dict[str, Any]) -> str:
        value = proposal["value"]
        if not value.startswith(("sqlite://", "postgresql", "mysql")):
            raise ValueError(f"Unsupported database URL {value!r}")
        return value

    bind_url = Unicode(
        help="""Public URL of the Hub (its proxy). Env: CODEYARD_BIND_URL.

        Default http://127.0.0.1:8000: local only. Put a TLS-terminating reverse proxy in
        front for other machines.
        """,
    ).tag(config=True)

    @default("bind_url")
    def _default_bind_url(self) -> str:
        return env("CODEYARD_BIND_URL", "http://127.0.0.1:8000")

    subdomain_host = Unicode(
        help="""Serve each user's workspaces on a subdomain of this URL's host
        (JupyterHub's `subdomain_host`), e.g. `https://codeyard.example.org`, so that
        `https://alice.codeyard.example.org/user/alice/ws/`. Env: CODEYARD_SUBDOMAIN_HOST.

        Default "": path mode, every workspace on the Hub's own origin. There a file a user
        serves from a workspace (`/files/...`) runs its scripts only inside a CSP sandbox with
        an opaque origin, and JupyterLab's own pages are the user's code. A site where users
        open each other's shared workspaces, or where admins open users' servers, should set
        it: the browser then keeps every user's servers apart from the Hub and from other
        users by origin, without relying on each page's CSP. It needs a wildcard DNS record
        and a wildcard TLS certificate for the host (docs/hub.md, "Same origin").
        """,
    ).tag(config=True)

    @default("subdomain_host")
    def _default_subdomain_host(self) -> str:
        return env("CODEYARD_SUBDOMAIN_HOST", "")

    hub_ip = Unicode(
        help="""Address the Hub API and the LLM gateway listen on, reachable from workspace
        containers of every registered host.

        Default: the docker0 gateway 172.17.0.1, so containers of the Hub's own engine reach
        the Hub and nothing outside does. With Docker hosts on other machines, 0.0.0.0 (each
        host's containers are then told the Hub's address on their route, and a firewall
        admits only the hosts) or one address every host reaches; docs/multi-machine.md.
        Env: CODEYARD_HUB_IP.
        """,
    ).tag(config=True)

    @property
    def hub_listens_everywhere(self) -> bool:
        """Whether `hub_ip` is the wildcard (every interface)."""
        return self.hub_ip in ("0.0.0.0", "::")  # noqa: S104 - compares, binds nothing

    @default("hub_ip")
    def _default_hub_ip(self) -> str:
        return env("CODEYARD_HUB_IP", "172.17.0.1")

    hub_port = Integer(
        help="""Port of the Hub API on `hub_ip`. Env: CODEYARD_HUB_PORT. Default 8081.""",
    ).tag(config=True)

    @default("hub_port")
    def _default_hub_port(self) -> int:
        return int(env("CODEYARD_HUB_PORT", "8081"))

    proxy_api_port = Integer(
        help="""Loopback port of the proxy's REST API. Env: CODEYARD_PROXY_API_PORT.""",
    ).tag(config=True)

    @default("proxy_api_port")
    def _default_proxy_api_port(self) -> int:
        return int(env("CODEYARD_PROXY_API_PORT", "8001"))

    proxy_command = Unicode(
        help="""configurable-http-proxy executable.

        Default: the copy `hub_config/bin/install-proxy.sh` put in
        $CODEYARD_PROXY_DIR (`proxy` in `cache_dir`), else one on PATH.
        """,
    ).tag(config=True)

    @default("proxy_command")
    def _default_proxy_command(self) -> str:
        folder = env("CODEYARD_PROXY_DIR", os.path.join(self.cache_dir, "proxy"))
        local = Path(folder) / "node_modules" / ".bin" / "configurable-http-proxy"
        return str(local) if local.exists() else "configurable-http-proxy"

    site_config = Unicode(
        help="""Extra JupyterHub config file loaded first (OAuth, LDAP, overrides).

        Env: CODEYARD_SITE_CONFIG. Default: <state_dir>/site_config.py if it exists.
        """,
    )

    @default("site_config")
    def _default_site_config(self) -> str:
        return env("CODEYARD_SITE_CONFIG", os.path.join(self.state_dir, "site_config.py"))

    def state_path(self, *parts: str) -> str:
        return os.path.join(self.state_dir, *parts)

    @property
    def admin_bootstrap_file(self) -> str:
        """The one-time admin sign-up secret (0600; renamed to `.used` once used)."""
        return self.state_path("admin_bootstrap")
