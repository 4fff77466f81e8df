"""The central audit's tables (SQLAlchemy 2.0), all prefixed `codeyard_audit_`.

The prefix and alembic's own version table (`database.VERSION_TABLE`) let these tables live
in the Hub's own database (PostgreSQL at scale) next to JupyterHub's. Schema changes go
through alembic (`alembic/versions/`), never `create_all` on a database that holds data.

No column holds file content, diff text, prompts or answers: a record is the workspace's own
audit record (hashes and metadata) as canonical JSON, plus the columns the filters use.
"""

from __future__ import annotations

from sqlalchemy import Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Chain(Base):
    """One source's keyed chain: a workspace (`alice/ws1`) or a service (`service/name`).

    `last_pos`/`head_mac` are the newest link; `anchor_pos`/`anchor_mac` the link that
    verification starts from (0 and the genesis values until retention prunes the oldest
    records, then the MAC and digest of the last pruned record).
    """

    __tablename__ = "codeyard_audit_chains"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(512), unique=True, nullable=False)
    owner: Mapped[str] = mapped_column(String(255), nullable=False)
    workspace: Mapped[str] = mapped_column(String(255), nullable=False)
    last_pos: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    head_mac: Mapped[str] = mapped_column(String(64), nullable=False)
    head_digest: Mapped[str] = mapped_column(String(64), nullable=False)
    anchor_pos: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    anchor_mac: Mapped[str] = mapped_column(String(64), nullable=False)
    anchor_digest: Mapped[str] = mapped_column(String(64), nullable=False)
    created: Mapped[float] = mapped_column(Float, nullable=False)
    updated: Mapped[float] = mapped_column(Float, nullable=False)


class Record(Base):
    """One record as its source wrote it, at position `pos` of its chain.

    (`chain_id`, `epoch`, `seq`) is the idempotency key: `epoch` is the hash of the first
    record of the source's local log (a new log after the old one was deleted starts a new
    epoch at seq 1), `seq` the record's number in it. `body` is the canonical JSON that is
    chained: `digest` = sha256(previous digest || body), which anyone can recompute from an
    export, and `mac` = HMAC(key, previous mac || body), which only the service can.
    """

    __tablename__ = "codeyard_audit_records"
    __table_args__ = (
        UniqueConstraint("chain_id", "epoch", "seq", name="uq_codeyard_audit_record_seq"),
        UniqueConstraint("chain_id", "pos", name="uq_codeyard_audit_record_pos"),
        Index("ix_codeyard_audit_records_owner_ts", "owner", "ts"),
        Index("ix_codeyard_audit_records_action", "action"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    chain_id: Mapped[int] = mapped_column(
        ForeignKey("codeyard_audit_chains.id", ondelete="CASCADE"), nullable=False
    )
    pos: Mapped[int] = mapped_column(Integer, nullable=False)
    epoch: Mapped[str] = mapped_column(String(64), nullable=False)
    seq: Mapped[int] = mapped_column(Integer, nullable=False)
    owner: Mapped[str] = mapped_column(String(255), nullable=False)
    workspace: Mapped[str] = mapped_column(String(255), nullable=False)
    action: Mapped[str] = mapped_column(String(128), nullable=False)
    outcome: Mapped[str] = mapped_column(String(32), nullable=False)
    ts: Mapped[float] = mapped_column(Float, nullable=False)
    received: Mapped[float] = mapped_column(Float, nullable=False)
    record_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    prev_digest: Mapped[str] = mapped_column(String(64), nullable=False)
    digest: Mapped[str] = mapped_column(String(64), nullable=False)
    mac: Mapped[str] = mapped_column(String(64), nullable=False)


class RecordPath(Base):
    """sha256 of each path a record names: the `path_hash` filter, without a LIKE scan."""

    __tablename__ = "codeyard_audit_record_paths"
    __table_args__ = (Index("ix_codeyard_audit_record_paths_hash", "path_sha256"),)

    record_id: Mapped[int] = mapped_column(
        ForeignKey("codeyard_audit_records.id", ondelete="CASCADE"), primary_key=True
    )
    path_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)


class Conflict(Base):
    """A record sent again under a stored (epoch, seq) with another hash: the source's log
    was rewritten after the service got the first version, which stays the stored one."""

    __tablename__ = "codeyard_audit_conflicts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    chain_id: Mapped[int] = mapped_column(
        ForeignKey("codeyard_audit_chains.id", ondelete="CASCADE"), nullable=False
    )
    epoch: Mapped[str] = mapped_column(String(64), nullable=False)
    seq: Mapped[int] = mapped_column(Integer, nullable=False)
    stored_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    sent_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    received: Mapped[float] = mapped_column(Float, nullable=False)


class Checkpoint(Base):
    """A signed statement "chain `source` had `pos` links, the last one `head_mac`"."""

    __tablename__ = "codeyard_audit_checkpoints"
    __table_args__ = (Index("ix_codeyard_audit_checkpoints_chain", "chain_id", "pos"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    chain_id: Mapped[int] = mapped_column(
        ForeignKey("codeyard_audit_chains.id", ondelete="CASCADE"), nullable=False
    )
    pos: Mapped[int] = mapped_column(Integer, nullable=False)
    head_mac: Mapped[str] = mapped_column(String(64), nullable=False)
    head_digest: Mapped[str] = mapped_column(String(64), nullable=False)
    signed_at: Mapped[float] = mapped_column(Float, nullable=False)
    payload: Mapped[str] = mapped_column(Text, nullable=False)
    signature: Mapped[str] = mapped_column(String(128), nullable=False)
