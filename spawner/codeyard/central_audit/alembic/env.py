"""Alembic environment of the central audit (run through `codeyard.central_audit.database`).

Its revision lives in `codeyard_audit_alembic_version`, and autogenerate looks only at
`codeyard_audit_*` tables, so this history never touches the Hub's or the placement
registry's when they share one database.
"""

from codeyard.central_audit.database import VERSION_TABLE
from codeyard.central_audit.models import Base
from codeyard.service_db import run_alembic_env

run_alembic_env(Base.metadata, version_table=VERSION_TABLE, table_prefix="codeyard_audit_")
