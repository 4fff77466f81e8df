"""Git credentials of workspaces: one encrypted user name and token per user and workspace.

The Hub stores what a user gives in the New-workspace form's Credential field here, so it
is never part of `user_options` (which the status API returns and the Hub logs); the clone
helper gets it through a credential helper. `encrypted` is a MultiFernet token under keys
derived from the Hub's own `CryptKeeper` keys (`codeyard.spawner.credentials`).

Revision ID: 0005_git_credentials
Revises: 0004_host_addresses
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_git_credentials"
down_revision = "0004_host_addresses"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "git_credentials",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("workspace", sa.String(255), nullable=False),
        sa.Column("encrypted", sa.LargeBinary, nullable=False),
        sa.Column("created", sa.DateTime, nullable=False),
        sa.Column("updated", sa.DateTime, nullable=False),
        sa.UniqueConstraint("user", "workspace"),
    )


def downgrade() -> None:
    op.drop_table("git_credentials")
