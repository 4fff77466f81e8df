"""The warm pool: how many pre-started workspace containers each host keeps, and which.

`servers.pool_size` is the number of warm containers an admin asks a host to keep per pooled
image and size profile (0, the default, keeps none and refills nothing). `pool_containers`
holds one row per warm container the Hub made, with the memory its profile reserves, so
placement counts pooled containers against the host's capacity like workspaces.

Revision ID: 0009_warm_pool
Revises: 0008_host_kind
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_warm_pool"
down_revision = "0008_host_kind"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN, not a batch (copy-and-move) table: on SQLite with foreign keys on,
    # dropping the old `servers` table would null every placement's server_id.
    op.add_column(
        "servers", sa.Column("pool_size", sa.Integer(), nullable=False, server_default="0")
    )
    op.create_table(
        "pool_containers",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "server_id",
            sa.Integer(),
            sa.ForeignKey("servers.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("container", sa.String(255), nullable=False, unique=True),
        sa.Column("pool", sa.String(512), nullable=False, server_default=""),
        sa.Column("mem_reserved", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("pool_containers")
    op.execute("ALTER TABLE servers DROP COLUMN pool_size")
