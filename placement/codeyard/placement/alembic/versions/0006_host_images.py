"""Which images Codeyard put on each host, and by which path (registry pull or stream).

Revision ID: 0006_host_images
Revises: 0005_git_credentials
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_host_images"
down_revision = "0005_git_credentials"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "host_images",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "server_id",
            sa.Integer,
            sa.ForeignKey("servers.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("image", sa.String(512), nullable=False),
        sa.Column("digest", sa.String(255), nullable=False),
        sa.Column("path", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("server_id", "image"),
    )


def downgrade() -> None:
    op.drop_table("host_images")
