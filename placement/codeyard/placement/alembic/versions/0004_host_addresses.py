"""Each host's addresses: where its containers reach the Hub, where the proxy reaches them.

Both are NULL (derived from the endpoint, `codeyard.placement.addresses`) unless an admin
sets them. A host registered with a `host_ip` label, which named the publish address, gets
that address as its `publish_ip`, and the label is removed.

Revision ID: 0004_host_addresses
Revises: 0003_drain_intent
Create Date: 2026-12-05
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0004_host_addresses"
down_revision = "0003_drain_intent"
branch_labels = None
depends_on = None

servers = sa.table(
    "servers",
    sa.column("id", sa.Integer),
    sa.column("labels", sa.JSON),
    sa.column("publish_ip", sa.String),
)


def _labels(value: object) -> dict:
    if isinstance(value, str):
        value = json.loads(value or "{}")
    return dict(value or {})  # type: ignore[call-overload]


def upgrade() -> None:
    # Plain ADD COLUMNs, not a batch (copy-and-move) table: on SQLite with foreign keys on,
    # dropping the old `servers` table would null every placement's server_id.
    op.add_column("servers", sa.Column("hub_connect_ip", sa.String(255), nullable=True))
    op.add_column("servers", sa.Column("publish_ip", sa.String(255), nullable=True))
    conn = op.get_bind()
    for row in conn.execute(sa.select(servers.c.id, servers.c.labels)).all():
        labels = _labels(row.labels)
        if "host_ip" in labels:
            address = str(labels.pop("host_ip"))
            conn.execute(
                servers.update()
                .where(servers.c.id == row.id)
                .values(publish_ip=address or None, labels=labels)
            )


def downgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(servers.c.id, servers.c.labels, servers.c.publish_ip).where(
            servers.c.publish_ip.is_not(None)
        )
    ).all()
    for row in rows:
        labels = {**_labels(row.labels), "host_ip": row.publish_ip}
        conn.execute(servers.update().where(servers.c.id == row.id).values(labels=labels))
    # DROP COLUMN in place (SQLite >= 3.35, PostgreSQL), for the same reason as above
    op.execute("ALTER TABLE servers DROP COLUMN publish_ip")
    op.execute("ALTER TABLE servers DROP COLUMN hub_connect_ip")
