"""What kind of Docker endpoint a host is: one engine, or the manager of a Docker Swarm.

`servers.kind` is "engine" (a single Docker engine: workspaces are containers on it) or
"swarm" (a swarm manager: workspaces are Swarm services and Swarm's scheduler picks the
node). Every host registered before this revision is a single engine.

Revision ID: 0008_host_kind
Revises: 0007_registry_credentials
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_host_kind"
down_revision = "0007_registry_credentials"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN, not a batch (copy-and-move) table: on SQLite with foreign keys on,
    # dropping the old `servers` table would null every placement's server_id.
    op.add_column(
        "servers", sa.Column("kind", sa.String(16), nullable=False, server_default="engine")
    )


def downgrade() -> None:
    # DROP COLUMN in place (SQLite >= 3.35, PostgreSQL), for the same reason as above
    op.execute("ALTER TABLE servers DROP COLUMN kind")
