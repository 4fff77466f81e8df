"""The registry: servers, credentials, placements, policy settings, decisions.

Revision ID: 0001_registry
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_registry"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "servers",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("endpoint", sa.String(1024), nullable=False),
        sa.Column("region", sa.String(255), nullable=False),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("storage_root", sa.String(1024), nullable=False),
        sa.Column("storage_shared", sa.Boolean, nullable=False),
        sa.Column("max_workspaces", sa.Integer, nullable=False),
        sa.Column("cpu_capacity", sa.Float, nullable=False),
        sa.Column("mem_capacity", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("consecutive_failures", sa.Integer, nullable=False),
        sa.Column("last_seen", sa.DateTime, nullable=True),
        sa.Column("last_test", sa.JSON, nullable=True),
        sa.Column("created", sa.DateTime, nullable=False),
    )
    op.create_table(
        "credentials",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "server_id",
            sa.Integer,
            sa.ForeignKey("servers.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("encrypted", sa.LargeBinary, nullable=False),
        sa.Column("fingerprints", sa.JSON, nullable=False),
        sa.Column("created", sa.DateTime, nullable=False),
        sa.Column("rotated", sa.DateTime, nullable=True),
    )
    op.create_table(
        "placements",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("workspace", sa.String(255), nullable=False),
        sa.Column(
            "server_id",
            sa.Integer,
            sa.ForeignKey("servers.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("mem_reserved", sa.Integer, nullable=False),
        sa.Column("updated", sa.DateTime, nullable=False),
        sa.UniqueConstraint("user", "workspace"),
    )
    op.create_table(
        "policy_settings",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("group", sa.String(255), nullable=False, unique=True),
        sa.Column("policy", sa.String(255), nullable=False),
        sa.Column("options", sa.JSON, nullable=False),
    )
    op.create_table(
        "decisions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("workspace", sa.String(255), nullable=False),
        sa.Column("policy", sa.String(255), nullable=False),
        sa.Column(
            "server_id",
            sa.Integer,
            sa.ForeignKey("servers.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("server_name", sa.String(255), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("candidates", sa.Integer, nullable=False),
        sa.Column("duration_us", sa.Integer, nullable=False),
    )
    op.create_table(
        "policy_cursors",
        sa.Column("scope", sa.String(255), primary_key=True),
        sa.Column("last_server", sa.String(255), nullable=False),
    )


def downgrade() -> None:
    for table in (
        "policy_cursors",
        "decisions",
        "policy_settings",
        "placements",
        "credentials",
        "servers",
    ):
        op.drop_table(table)
