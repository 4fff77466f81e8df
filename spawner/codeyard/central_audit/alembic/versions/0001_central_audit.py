"""The central audit: chains, records, their path hashes, conflicts, signed checkpoints.

Revision ID: 0001_central_audit
Revises:
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_central_audit"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "codeyard_audit_chains",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("source", sa.String(512), nullable=False, unique=True),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("workspace", sa.String(255), nullable=False),
        sa.Column("last_pos", sa.Integer, nullable=False),
        sa.Column("head_mac", sa.String(64), nullable=False),
        sa.Column("head_digest", sa.String(64), nullable=False),
        sa.Column("anchor_pos", sa.Integer, nullable=False),
        sa.Column("anchor_mac", sa.String(64), nullable=False),
        sa.Column("anchor_digest", sa.String(64), nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("updated", sa.Float, nullable=False),
    )
    op.create_table(
        "codeyard_audit_records",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "chain_id",
            sa.Integer,
            sa.ForeignKey("codeyard_audit_chains.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("pos", sa.Integer, nullable=False),
        sa.Column("epoch", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("workspace", sa.String(255), nullable=False),
        sa.Column("action", sa.String(128), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("received", sa.Float, nullable=False),
        sa.Column("record_hash", sa.String(64), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("prev_digest", sa.String(64), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("mac", sa.String(64), nullable=False),
        sa.UniqueConstraint("chain_id", "epoch", "seq", name="uq_codeyard_audit_record_seq"),
        sa.UniqueConstraint("chain_id", "pos", name="uq_codeyard_audit_record_pos"),
    )
    op.create_index("ix_codeyard_audit_records_owner_ts", "codeyard_audit_records", ["owner", "ts"])
    op.create_index("ix_codeyard_audit_records_action", "codeyard_audit_records", ["action"])
    op.create_table(
        "codeyard_audit_record_paths",
        sa.Column(
            "record_id",
            sa.Integer,
            sa.ForeignKey("codeyard_audit_records.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("path_sha256", sa.String(64), primary_key=True),
    )
    op.create_index(
        "ix_codeyard_audit_record_paths_hash", "codeyard_audit_record_paths", ["path_sha256"]
    )
    op.create_table(
        "codeyard_audit_conflicts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "chain_id",
            sa.Integer,
            sa.ForeignKey("codeyard_audit_chains.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("epoch", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("stored_hash", sa.String(64), nullable=False),
        sa.Column("sent_hash", sa.String(64), nullable=False),
        sa.Column("received", sa.Float, nullable=False),
    )
    op.create_table(
        "codeyard_audit_checkpoints",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "chain_id",
            sa.Integer,
            sa.ForeignKey("codeyard_audit_chains.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("pos", sa.Integer, nullable=False),
        sa.Column("head_mac", sa.String(64), nullable=False),
        sa.Column("head_digest", sa.String(64), nullable=False),
        sa.Column("signed_at", sa.Float, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
    )
    op.create_index(
        "ix_codeyard_audit_checkpoints_chain", "codeyard_audit_checkpoints", ["chain_id", "pos"]
    )


def downgrade() -> None:
    op.drop_table("codeyard_audit_checkpoints")
    op.drop_table("codeyard_audit_conflicts")
    op.drop_table("codeyard_audit_record_paths")
    op.drop_table("codeyard_audit_records")
    op.drop_table("codeyard_audit_chains")
