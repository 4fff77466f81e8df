"""Opening the registry database, and upgrading its schema with alembic.

Like the Hub: a new database is created at the newest revision; an existing one must be at
the newest revision or `open_db` refuses it (run `python -m codeyard.placement upgrade-db`,
which backs SQLite files up first). The mechanics are shared with the central audit's
database (`codeyard.service_db`).
"""

from __future__ import annotations

import os

from codeyard.service_db import DatabaseSchemaMismatch, ServiceDatabase

__all__ = [
    "DB_ENV",
    "DEFAULT_DB_URL",
    "REGISTRY_DB",
    "DatabaseSchemaMismatch",
    "alembic_config",
    "current_revision",
    "db_url_from_env",
    "head_revision",
    "make_engine",
    "open_db",
    "upgrade",
]

#: The environment variable every default registry URL comes from: the Hub hands it to the
#: service it starts, so the service and the Hub's provider open the same database.
DB_ENV = "CODEYARD_PLACEMENT_DB_URL"
#: The registry URL when neither a setting nor `DB_ENV` names one.
DEFAULT_DB_URL = "sqlite:///codeyard_placement.sqlite"


def db_url_from_env(default: str = DEFAULT_DB_URL) -> str:
    """The registry URL `DB_ENV` names, else `default`: the one place that reads it, so the
    Hub's provider, the service, the command line and the Hub config agree on it."""
    return os.environ.get(DB_ENV, default)


#: NORMAL sync: the service reads while the Hub's provider writes decisions, and a decision
#: lost at a crash is made again at the next spawn; it cuts a placement from ~28 ms to ~1 ms.
REGISTRY_DB = ServiceDatabase(
    package="codeyard.placement",
    marker_table="servers",
    upgrade_command="python -m codeyard.placement upgrade-db",
    label="The placement database",
)

alembic_config = REGISTRY_DB.alembic_config
head_revision = REGISTRY_DB.head_revision
make_engine = REGISTRY_DB.make_engine
current_revision = REGISTRY_DB.current_revision
upgrade = REGISTRY_DB.upgrade
open_db = REGISTRY_DB.open_db
