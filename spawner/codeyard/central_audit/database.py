"""Opening the central audit's database, and upgrading its schema with its own alembic history.

The history keeps its revision in `codeyard_audit_alembic_version`, not alembic's default
table, so the tables can share a database with the Hub (which has its own `alembic_version`)
or with the placement registry. As the Hub does: a new database is created at the newest
revision; one at another revision is refused until `python -m codeyard.central_audit
upgrade-db` has run (which backs an SQLite file up first). The mechanics are shared with the
placement registry's database (`codeyard.service_db`).
"""

from __future__ import annotations

from codeyard.service_db import DatabaseSchemaMismatch, ServiceDatabase

__all__ = [
    "AUDIT_DB",
    "VERSION_TABLE",
    "DatabaseSchemaMismatch",
    "alembic_config",
    "current_revision",
    "head_revision",
    "make_engine",
    "open_db",
    "upgrade",
]

VERSION_TABLE = "codeyard_audit_alembic_version"

#: FULL sync: a workspace deletes its spooled copy of a record once the service acknowledged
#: it, so an acknowledged record must be on disk.
AUDIT_DB = ServiceDatabase(
    package="codeyard.central_audit",
    marker_table="codeyard_audit_records",
    upgrade_command="python -m codeyard.central_audit upgrade-db",
    label="The central audit's tables",
    version_table=VERSION_TABLE,
    sqlite_synchronous="FULL",
)

alembic_config = AUDIT_DB.alembic_config
head_revision = AUDIT_DB.head_revision
make_engine = AUDIT_DB.make_engine
current_revision = AUDIT_DB.current_revision
upgrade = AUDIT_DB.upgrade
open_db = AUDIT_DB.open_db
