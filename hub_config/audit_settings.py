"""The central audit: its port, its database, its keys and how long it keeps records
(docs/audit.md).

Part of `CodeyardHub` (hub_settings.py); jupyterhub_config.py passes these to
`codeyard.central_audit.hubconfig.configure_audit_service` and gives workspaces
CODEYARD_AUDIT_URL through `audit_url_template`.
"""

from __future__ import annotations

import os

from core_settings import CoreSettings, env
from traitlets import Float, Integer, Unicode, default

AUDIT_SERVICE = "codeyard-audit"


class AuditSettings(CoreSettings):
    """The central audit's settings; configured as `c.CodeyardHub.*`."""

    audit_port = Integer(
        help="""Port of the central audit service (`codeyard-audit`) on `hub_ip`, where
        workspace containers post their records. Env: CODEYARD_AUDIT_PORT. Default 8004.""",
    ).tag(config=True)

    @default("audit_port")
    def _default_audit_port(self) -> int:
        return int(env("CODEYARD_AUDIT_PORT", "8004"))

    audit_db_url = Unicode(
        help="""SQLAlchemy URL of the central audit's tables. They may share the Hub's own
        PostgreSQL database (they are prefixed `codeyard_audit_`, with their own alembic
        version table). Env: CODEYARD_AUDIT_DB_URL. Default: the Hub's database when that
        is a server (PostgreSQL), so one setting moves both; with the Hub on SQLite, SQLite
        `audit.sqlite` in the state folder (a file of its own: SQLite has one writer).""",
    ).tag(config=True)

    @default("audit_db_url")
    def _default_audit_db_url(self) -> str:
        url = os.environ.get("CODEYARD_AUDIT_DB_URL", "")
        if url:
            return url
        if not self.database_url.startswith("sqlite"):
            return self.database_url
        return f"sqlite:///{os.path.join(self.state_dir, 'audit.sqlite')}"

    audit_retention_days = Float(
        help="""Days the central audit keeps a record after receiving it; older ones are
        pruned hourly. 0 keeps every record. Env: CODEYARD_AUDIT_RETENTION_DAYS.
        Default 365.""",
    ).tag(config=True)

    @default("audit_retention_days")
    def _default_audit_retention_days(self) -> float:
        return float(env("CODEYARD_AUDIT_RETENTION_DAYS", "365"))

    @property
    def audit_hmac_key_file(self) -> str:
        """The secret the chains are keyed with (the service makes it, 0600)."""
        return self.state_path("audit_hmac.key")

    @property
    def audit_signing_key_file(self) -> str:
        """The Ed25519 key that signs checkpoints (the service makes it, 0600)."""
        return self.state_path("audit_ed25519.pem")

    @property
    def audit_url_template(self) -> str:
        """The service's URL for workspaces (CODEYARD_AUDIT_URL), `{hub}` standing for the
        address each host's containers reach the Hub at (`PlacementSpawner.hub_service_urls`)."""
        return f"http://{{hub}}:{self.audit_port}/services/{AUDIT_SERVICE}"
