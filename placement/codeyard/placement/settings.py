"""`PlacementService`: the placement settings a site config sets as `c.PlacementService.*`.

Two processes act on them: the admin service (`python -m codeyard.placement serve`) runs
with all of them, and the Hub's `RegistryHostProvider` places workspaces with the policy
ones. Both read this one class from their own config, so a policy is declared once and the
service shows the policy the Hub places with. The Hub passes its `c.PlacementService`
section to the service as a config file (`service.hubconfig.configure_placement_service`).

A plain `Configurable` (no tornado, no JupyterHub imports): the Hub process builds one
inside the provider, where only the settings are wanted.
"""

from __future__ import annotations

from traitlets import Bool, Dict, Float, Integer, List, Unicode, default
from traitlets.config import Configurable

from .database import db_url_from_env
from .shapes import PlacementSettings

ADMIN_SCOPE = "custom:codeyard-admin"
#: The scope of JupyterHub's own `admin` role that only admins hold by default.
HUB_ADMIN_SCOPE = "admin-ui"


class PlacementService(Configurable):
    """The placement admin service's settings and the deployment's placement policy."""

    db_url = Unicode(
        help="""SQLAlchemy URL of the registry database (its own, or the Hub's database server).

        Defaults to `$CODEYARD_PLACEMENT_DB_URL`, else a SQLite file in the working directory.
        """
    ).tag(config=True)

    @default("db_url")
    def _default_db_url(self) -> str:
        return db_url_from_env()

    admin_scope = Unicode(
        ADMIN_SCOPE,
        help="""The Hub scope an admin needs for every endpoint and page (others get 403).

        Declare it in `c.JupyterHub.custom_scopes` and grant it through `load_roles`.
        """,
    ).tag(config=True)

    hub_admin_scope = Unicode(
        HUB_ADMIN_SCOPE,
        help="""A second scope that admits to every endpoint and page: by default `admin-ui`,
        which JupyterHub's `admin` role holds. That role follows the Hub's admin flag, also for
        a user promoted or demoted later in the Hub's admin UI, so Hub admins are placement
        admins with no restart and no role to edit (JupyterHub refuses extra scopes on its
        `admin` role). Empty: only `admin_scope` admits.
        """,
    ).tag(config=True)

    default_policy = Unicode(
        "least-loaded",
        help="""Placement policy used unless a group override applies (entry point group
        `codeyard.placement_policies`: least-loaded, round-robin, region, or added ones).
        The Hub places with it; the service shows it.""",
    ).tag(config=True)

    group_policies = Dict(
        help="""Per-group policy overrides, `{group: policy}`; the first of a user's groups in
        alphabetical order that has one wins. Admin overrides in the database win over this.
        The Hub places with it; the service shows it.""",
    ).tag(config=True)

    policy_options = Dict(
        help="""Options per policy, e.g. `{"region": {"group_regions": {"berlin": "eu"},
        "fallback": "any"}}`. The Hub places with them; the service shows them.""",
    ).tag(config=True)

    health_interval = Float(
        30.0, help="""Seconds between health pings of every host (0 disables the monitor)."""
    ).tag(config=True)

    failure_threshold = Integer(
        3, help="""Consecutive failed pings after which an active host is marked down."""
    ).tag(config=True)

    probe_timeout = Float(5.0, help="""Seconds a ping or `test` may take per host.""").tag(
        config=True
    )

    images = List(
        Unicode(),
        help="""Images every host should hold: the service pulls them onto a host when it is
        registered, and onto every host that is not down when the service starts (a new
        image tag after a build arrives with the Hub restart that configures it). The Hub
        config sets the single-user image. Empty: no pulls ahead of a spawn.""",
    ).tag(config=True)

    image_registry = Unicode(
        help="""Registry (`host:port`) hosts pull `images` from; empty: they are streamed from
        the Hub's engine. The Hub config passes its `c.ImageDistribution.registry`.""",
    ).tag(config=True)

    image_registry_ca_file = Unicode(
        help="""CA the service checks the registry's certificate with (the Hub config passes
        `c.ImageDistribution.registry_ca_file`); empty: the system's CAs.""",
    ).tag(config=True)

    upgrade_db = Bool(
        False, help="""Upgrade the registry schema at start (backs SQLite up first)."""
    ).tag(config=True)

    def placement_settings(self) -> PlacementSettings:
        """What `registry.Registry` decides and marks hosts down with."""
        return PlacementSettings(
            default_policy=self.default_policy,
            group_policies=dict(self.group_policies),
            policy_options=dict(self.policy_options),
            failure_threshold=self.failure_threshold,
        )
