"""The drain intent: a drained host that dies is marked down and comes back draining.

Revision ID: 0003_drain_intent
Revises: 0002_manual_pins
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_drain_intent"
down_revision = "0002_manual_pins"
branch_labels = None
depends_on = None

servers = sa.table(
    "servers", sa.column("state", sa.String), sa.column("drain_requested", sa.Boolean)
)


def upgrade() -> None:
    # A plain ADD COLUMN, not a batch (copy-and-move) table: on SQLite with foreign keys on,
    # dropping the old `servers` table would null every placement's server_id.
    op.add_column(
        "servers",
        sa.Column("drain_requested", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.execute(servers.update().where(servers.c.state == "draining").values(drain_requested=True))


def downgrade() -> None:
    # a down host's drain intent is lost: it comes back active
    # DROP COLUMN in place (SQLite >= 3.35, PostgreSQL), for the same reason as above
    op.execute("ALTER TABLE servers DROP COLUMN drain_requested")
