"""Registry credentials stored encrypted, and the outcome of each host's image pull.

`registry_credentials` holds one login per registry (`host[:port]`): the user name in clear
(the host page shows it) and the password only as a MultiFernet token under the same keys as
hosts' credentials (`CODEYARD_PLACEMENT_CRYPT_KEY`), so a database dump does not leak it.
`host_images.state` records whether a background pull is running, succeeded or failed, so
the host page can show a pull's error (wrong URL, bad login, disk full) next to the host.

Revision ID: 0007_registry_credentials
Revises: 0006_host_images
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_registry_credentials"
down_revision = "0006_host_images"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "registry_credentials",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("registry", sa.String(512), nullable=False, unique=True),
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("encrypted", sa.LargeBinary, nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("updated_by", sa.String(255), nullable=False),
        sa.Column("created", sa.DateTime, nullable=False),
        sa.Column("updated", sa.DateTime, nullable=False),
    )
    with op.batch_alter_table("host_images") as batch:
        batch.add_column(sa.Column("state", sa.String(16), nullable=False, server_default="ok"))


def downgrade() -> None:
    with op.batch_alter_table("host_images") as batch:
        batch.drop_column("state")
    op.drop_table("registry_credentials")
