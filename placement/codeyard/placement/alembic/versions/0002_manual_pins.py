"""Manual placement: an admin's pin, a restart flag, and the data-loss confirmation.

Revision ID: 0002_manual_pins
Revises: 0001_registry
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_manual_pins"
down_revision = "0001_registry"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("placements") as batch:
        batch.add_column(sa.Column("pinned_server_id", sa.Integer, nullable=True))
        batch.add_column(
            sa.Column("restart_requested", sa.Boolean, nullable=False, server_default=sa.false())
        )
        batch.add_column(
            sa.Column("data_loss_confirmed", sa.Boolean, nullable=False, server_default=sa.false())
        )
        batch.create_foreign_key(
            "fk_placements_pinned_server",
            "servers",
            ["pinned_server_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("placements") as batch:
        batch.drop_constraint("fk_placements_pinned_server", type_="foreignkey")
        batch.drop_column("data_loss_confirmed")
        batch.drop_column("restart_requested")
        batch.drop_column("pinned_server_id")
