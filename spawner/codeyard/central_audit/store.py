"""`AuditStore`: what the central audit does with records, independent of HTTP.

- `ingest` stores a batch from one source idempotently on (source, epoch, seq) and links each
  new record into the source's chains (`chain`); a record sent again with another hash is
  kept as a `Conflict`, never stored over the first version;
- `query`/`export_lines` filter what is stored; `chains` reports each chain's state, its
  sequence gaps and whether its MACs still verify;
- `checkpoint` signs chain heads; `prune` drops records older than the retention period and
  moves the chain's anchor so what remains still verifies;
- `compare_local` sets a workspace's own log beside what the service holds and names what
  differs: truncated, rewritten, never received, gaps.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Select, delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from .chain import (
    GENESIS,
    canonical,
    checkpoint_payload,
    next_digest,
    next_mac,
    public_pem,
    sha256_text,
    sign,
)
from .models import Chain, Checkpoint, Conflict, Record, RecordPath

#: How many records one POST may carry.
MAX_BATCH = 500
#: At most this many missing sequence numbers are listed per epoch (the count is exact).
GAPS_LISTED = 50
HEX = frozenset("0123456789abcdef")


class BadBatch(ValueError):
    """A batch the service refuses as a whole (HTTP 400)."""


def local_hash(record: dict[str, Any]) -> str:
    """The hash a workspace's local log gives `record` (audit.py's `_digest`)."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(canonical(body).encode("ascii")).hexdigest()


def _is_hex64(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= HEX


def outcome_of(record: dict[str, Any]) -> str:
    """`ok` or `error`: the record's own `outcome`, else its `error`/HTTP `status`."""
    given = record.get("outcome")
    if isinstance(given, str) and given:
        return given[:32]
    status = record.get("status")
    if record.get("error") or (isinstance(status, int) and status >= 400):
        return "error"
    return "ok"


@dataclass
class Filters:
    """What `GET api/records` narrows by; None means any."""

    user: str | None = None
    workspace: str | None = None
    action: str | None = None
    path_hash: str | None = None
    since: float | None = None
    until: float | None = None
    outcome: str | None = None

    def apply(self, query: Select[Any]) -> Any:
        if self.user is not None:
            query = query.where(Record.owner == self.user)
        if self.workspace is not None:
            query = query.where(Record.workspace == self.workspace)
        if self.action is not None:
            query = query.where(Record.action == self.action)
        if self.outcome is not None:
            query = query.where(Record.outcome == self.outcome)
        if self.since is not None:
            query = query.where(Record.ts >= self.since)
        if self.until is not None:
            query = query.where(Record.ts < self.until)
        if self.path_hash is not None:
            query = query.where(
                Record.id.in_(
                    select(RecordPath.record_id).where(RecordPath.path_sha256 == self.path_hash)
                )
            )
        return query


def row_of(record: Record, source: str) -> dict[str, Any]:
    """A stored record as the API and exports give it."""
    return {
        "kind": "record",
        "source": source,
        "user": record.owner,
        "workspace": record.workspace,
        "pos": record.pos,
        "epoch": record.epoch,
        "seq": record.seq,
        "action": record.action,
        "outcome": record.outcome,
        "ts": record.ts,
        "received": record.received,
        "record_hash": record.record_hash,
        "body": record.body,
        "prev_digest": record.prev_digest,
        "digest": record.digest,
    }


def checkpoint_of(point: Checkpoint, source: str) -> dict[str, Any]:
    return {
        "kind": "checkpoint",
        "source": source,
        "pos": point.pos,
        "head_mac": point.head_mac,
        "head_digest": point.head_digest,
        "signed_at": point.signed_at,
        "payload": point.payload,
        "signature": point.signature,
    }


def _ranges(missing: list[int]) -> list[list[int]]:
    """[3, 4, 5, 9] -> [[3, 5], [9, 9]]: gaps as inclusive ranges."""
    out: list[list[int]] = []
    for n in missing:
        if out and out[-1][1] == n - 1:
            out[-1][1] = n
        else:
            out.append([n, n])
    return out


class AuditStore:
    """The central audit over one database; thread-safe (ingestion is serialised)."""

    def __init__(
        self, sessions: sessionmaker[Session], secret: bytes, signing_key: Ed25519PrivateKey
    ) -> None:
        self.sessions = sessions
        self._secret = secret
        self._key = signing_key
        self.public_key_pem = public_pem(signing_key)
        # One writer per process keeps each chain's links in order; across processes (a
        # second service on PostgreSQL) the chain row is locked FOR UPDATE.
        self._lock = threading.Lock()

    # ---- writing ---------------------------------------------------------------------

    def _chain(self, db: Session, source: str, owner: str, workspace: str) -> Chain:
        chain = db.scalars(
            select(Chain).where(Chain.source == source).with_for_update()
        ).one_or_none()
        if chain is None:
            now = time.time()
            chain = Chain(
                source=source,
                owner=owner,
                workspace=workspace,
                last_pos=0,
                head_mac=GENESIS,
                head_digest=GENESIS,
                anchor_pos=0,
                anchor_mac=GENESIS,
                anchor_digest=GENESIS,
                created=now,
                updated=now,
            )
            db.add(chain)
            db.flush()
        return chain

    @staticmethod
    def check_entry(entry: Any) -> tuple[str, int, str, dict[str, Any]]:
        """(epoch, seq, hash, record) of one batch entry, or BadBatch saying what is wrong."""
        if not isinstance(entry, dict):
            raise BadBatch("every entry must be an object")
        epoch, seq, digest, record = (
            entry.get("epoch"),
            entry.get("seq"),
            entry.get("hash"),
            entry.get("record"),
        )
        if not _is_hex64(epoch) or not _is_hex64(digest):
            raise BadBatch("epoch and hash must be 64 lowercase hex digits")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise BadBatch("seq must be a positive integer")
        if not isinstance(record, dict):
            raise BadBatch("record must be an object")
        if record.get("seq") != seq or record.get("hash") != digest:
            raise BadBatch(f"seq {seq}: the record's own seq and hash differ from the entry's")
        if local_hash(record) != digest:
            raise BadBatch(f"seq {seq}: the record does not hash to its hash")
        return epoch, seq, digest, record  # type: ignore[return-value]

    def ingest(
        self, owner: str, workspace: str, source: str, entries: list[Any], *, override_user: bool
    ) -> list[dict[str, Any]]:
        """Store `entries` of `source`; one result per entry, in order.

        `status` is `stored` (new, linked at `pos`), `duplicate` (the same record was stored
        before: a resend) or `conflict` (another record is stored under that epoch and seq).
        With `override_user` each record's owner is `owner` (a workspace's records belong to
        the workspace's user, whatever they say); otherwise the record's own `user` (the
        gateway reports calls of many users).
        """
        if len(entries) > MAX_BATCH:
            raise BadBatch(f"at most {MAX_BATCH} records per request")
        checked = [self.check_entry(e) for e in entries]
        results: list[dict[str, Any]] = []
        with self._lock, self.sessions.begin() as db:
            chain = self._chain(db, source, owner, workspace)
            for epoch, seq, digest, record in checked:
                stored = db.scalars(
                    select(Record).where(
                        Record.chain_id == chain.id, Record.epoch == epoch, Record.seq == seq
                    )
                ).one_or_none()
                result: dict[str, Any] = {"epoch": epoch, "seq": seq}
                if stored is not None:
                    if stored.record_hash == digest:
                        result.update(status="duplicate", pos=stored.pos)
                    else:
                        db.add(
                            Conflict(
                                chain_id=chain.id,
                                epoch=epoch,
                                seq=seq,
                                stored_hash=stored.record_hash,
                                sent_hash=digest,
                                received=time.time(),
                            )
                        )
                        result.update(status="conflict", pos=stored.pos)
                    results.append(result)
                    continue
                received = round(time.time(), 6)
                record_owner = owner if override_user else str(record.get("user") or owner)
                body = canonical(
                    {
                        "source": source,
                        "epoch": epoch,
                        "seq": seq,
                        "received": received,
                        "record": record,
                    }
                )
                pos = chain.last_pos + 1
                row = Record(
                    chain_id=chain.id,
                    pos=pos,
                    epoch=epoch,
                    seq=seq,
                    owner=record_owner[:255],
                    workspace=workspace,
                    action=str(record.get("action") or record.get("path") or "")[:128],
                    outcome=outcome_of(record),
                    ts=float(record.get("ts") or received),
                    received=received,
                    record_hash=digest,
                    body=body,
                    prev_digest=chain.head_digest,
                    digest=next_digest(chain.head_digest, body),
                    mac=next_mac(self._secret, chain.head_mac, body),
                )
                db.add(row)
                db.flush()
                paths = record.get("paths")
                if isinstance(paths, list):
                    for h in {sha256_text(str(p)) for p in paths}:
                        db.add(RecordPath(record_id=row.id, path_sha256=h))
                chain.last_pos, chain.head_mac, chain.head_digest = pos, row.mac, row.digest
                chain.updated = received
                result.update(status="stored", pos=pos)
                results.append(result)
        return results

    # ---- reading ---------------------------------------------------------------------

    def query(self, filters: Filters, limit: int | None = None) -> Iterator[dict[str, Any]]:
        """Stored records matching `filters`, oldest first (by chain, then position)."""
        base: Any = select(Record, Chain.source).join(Chain, Chain.id == Record.chain_id)
        query = filters.apply(base).order_by(Record.chain_id, Record.pos)
        if limit is not None:
            query = query.limit(limit)
        with self.sessions() as db:
            for record, source in db.execute(query.execution_options(yield_per=500)):
                yield row_of(record, source)

    def export_lines(self, filters: Filters) -> Iterator[dict[str, Any]]:
        """The records `filters` select, then every kept checkpoint of their chains.

        Chains with records after their last checkpoint are checkpointed first, so an
        export verifies in full with the public key alone.
        """
        sources: set[str] = set()
        for row in self.query(filters):
            sources.add(row["source"])
            yield row
        if not sources:
            return
        for source in sorted(sources):
            self.checkpoint(source)
        with self.sessions() as db:
            points = db.execute(
                select(Checkpoint, Chain.source)
                .join(Chain, Chain.id == Checkpoint.chain_id)
                .where(Chain.source.in_(sources))
                .order_by(Checkpoint.chain_id, Checkpoint.pos)
            )
            for point, source in points:
                yield checkpoint_of(point, source)

    def verify_chain(self, db: Session, chain: Chain) -> list[str]:
        """Recompute the chain's MACs and digests from its anchor; what does not hold."""
        problems: list[str] = []
        mac, digest, expect = chain.anchor_mac, chain.anchor_digest, chain.anchor_pos + 1
        rows = db.scalars(select(Record).where(Record.chain_id == chain.id).order_by(Record.pos))
        for row in rows:
            if row.pos != expect:
                problems.append(f"positions {expect}..{row.pos - 1} are missing")
            mac_ok = next_mac(self._secret, mac, row.body) == row.mac
            if not mac_ok or next_digest(digest, row.body) != row.digest:
                problems.append(f"position {row.pos} does not verify")
            mac, digest, expect = row.mac, row.digest, row.pos + 1
        if expect - 1 != chain.last_pos:
            problems.append(f"positions {expect}..{chain.last_pos} are missing")
        elif mac != chain.head_mac:
            problems.append("the stored head is not the last record's")
        return problems

    def _epochs(self, db: Session, chain: Chain) -> list[dict[str, Any]]:
        epochs = []
        stats = db.execute(
            select(
                Record.epoch,
                func.min(Record.seq),
                func.max(Record.seq),
                func.count(),
                func.min(Record.pos),
            )
            .where(Record.chain_id == chain.id)
            .group_by(Record.epoch)
            .order_by(func.min(Record.pos))
        ).all()
        for epoch, low, high, count, _first in stats:
            start = 1 if chain.anchor_pos == 0 else low
            missing_count = high - start + 1 - count
            listed: list[int] = []
            if missing_count:
                have = set(
                    db.scalars(
                        select(Record.seq).where(Record.chain_id == chain.id, Record.epoch == epoch)
                    )
                )
                for n in range(start, high + 1):
                    if n not in have:
                        listed.append(n)
                        if len(listed) >= GAPS_LISTED:
                            break
            epochs.append(
                {
                    "epoch": epoch,
                    "first_seq": low,
                    "last_seq": high,
                    "records": count,
                    "missing": missing_count,
                    "gaps": _ranges(listed),
                }
            )
        return epochs

    def chains(self, user: str | None = None, *, verify: bool = True) -> list[dict[str, Any]]:
        """Every chain's state (of `user`'s workspaces only, when given)."""
        out = []
        with self.sessions() as db:
            query = select(Chain).order_by(Chain.owner, Chain.workspace)
            if user is not None:
                query = query.where(Chain.owner == user)
            for chain in db.scalars(query):
                last = db.scalars(
                    select(Checkpoint)
                    .where(Checkpoint.chain_id == chain.id)
                    .order_by(Checkpoint.pos.desc(), Checkpoint.id.desc())
                    .limit(1)
                ).one_or_none()
                conflicts = db.scalar(select(func.count()).where(Conflict.chain_id == chain.id))
                epochs = self._epochs(db, chain)
                problems = self.verify_chain(db, chain) if verify else None
                out.append(
                    {
                        "source": chain.source,
                        "user": chain.owner,
                        "workspace": chain.workspace,
                        "last_pos": chain.last_pos,
                        "head_mac": chain.head_mac,
                        "head_digest": chain.head_digest,
                        "anchor_pos": chain.anchor_pos,
                        "updated": chain.updated,
                        "epochs": epochs,
                        "gaps": sum(e["missing"] for e in epochs),
                        "conflicts": conflicts,
                        "mac_ok": None if problems is None else not problems,
                        "problems": problems or [],
                        "last_checkpoint": None
                        if last is None
                        else {"pos": last.pos, "signed_at": last.signed_at},
                    }
                )
        return out

    # ---- checkpoints and retention -----------------------------------------------------

    def checkpoint(self, source: str | None = None) -> list[dict[str, Any]]:
        """Sign the head of every chain (or of `source`) that moved since its last checkpoint."""
        made = []
        with self._lock, self.sessions.begin() as db:
            query = select(Chain).where(Chain.last_pos > 0)
            if source is not None:
                query = query.where(Chain.source == source)
            for chain in db.scalars(query):
                last = db.scalar(
                    select(func.max(Checkpoint.pos)).where(Checkpoint.chain_id == chain.id)
                )
                if last is not None and last >= chain.last_pos:
                    continue
                now = round(time.time(), 6)
                payload = checkpoint_payload(
                    chain.source, chain.last_pos, chain.head_mac, chain.head_digest, now
                )
                point = Checkpoint(
                    chain_id=chain.id,
                    pos=chain.last_pos,
                    head_mac=chain.head_mac,
                    head_digest=chain.head_digest,
                    signed_at=now,
                    payload=payload,
                    signature=sign(self._key, payload),
                )
                db.add(point)
                db.flush()
                made.append(checkpoint_of(point, chain.source))
        return made

    def prune(self, retention_days: float, now: float | None = None) -> int:
        """Drop records received more than `retention_days` ago; return how many.

        Per chain only a prefix goes (every position up to the newest expired one), and the
        chain's anchor moves to the last dropped link, so the rest still verifies from there.
        """
        if retention_days <= 0:
            return 0
        cutoff = (now or time.time()) - retention_days * 86400
        dropped = 0
        with self._lock, self.sessions.begin() as db:
            for chain in db.scalars(select(Chain)):
                upto = db.scalar(
                    select(func.max(Record.pos)).where(
                        Record.chain_id == chain.id, Record.received < cutoff
                    )
                )
                if upto is None:
                    continue
                last = db.scalars(
                    select(Record).where(Record.chain_id == chain.id, Record.pos == upto)
                ).one()
                chain.anchor_pos, chain.anchor_mac, chain.anchor_digest = (
                    last.pos,
                    last.mac,
                    last.digest,
                )
                ids = select(Record.id).where(Record.chain_id == chain.id, Record.pos <= upto)
                db.execute(delete(RecordPath).where(RecordPath.record_id.in_(ids)))
                result = db.execute(
                    delete(Record).where(Record.chain_id == chain.id, Record.pos <= upto)
                )
                dropped += int(getattr(result, "rowcount", 0) or 0)
                db.execute(
                    delete(Checkpoint).where(
                        Checkpoint.chain_id == chain.id, Checkpoint.pos <= upto
                    )
                )
                db.execute(
                    delete(Conflict).where(
                        Conflict.chain_id == chain.id, Conflict.received < cutoff
                    )
                )
        return dropped

    # ---- a workspace's own log beside the stored chain ---------------------------------

    def compare_local(self, source: str, local: list[dict[str, Any]]) -> dict[str, Any]:
        """What differs between a workspace's local log (its records, in file order) and
        what the service stored for `source`.

        - `rewritten`: seqs both hold with different hashes (edited in place, or the chain
          recomputed after an edit), or whose local line no longer hashes to its `hash`;
        - `truncated`: the service holds records after the local log's last one;
        - `removed_locally`: seqs the service holds that are gone from inside the local log;
        - `missing_at_service`: local seqs the service never got (still spooled, or lost);
        - `gaps`: seqs missing at the service between ones it has, and breaks in the local
          numbering;
        - `conflicts`: resends the service refused because it already held another version.
        """
        report: dict[str, Any] = {
            "source": source,
            "local_records": len(local),
            "truncated": None,
            "rewritten": [],
            "removed_locally": [],
            "missing_at_service": [],
            "gaps": {"service": [], "local": []},
            "conflicts": 0,
            "epoch": None,
        }
        local_by_seq: dict[int, str] = {}
        prev_seq = 0
        for rec in local:
            seq = rec.get("seq")
            if not isinstance(seq, int):
                continue
            if seq != prev_seq + 1:
                report["gaps"]["local"].append([prev_seq + 1, seq - 1])
            prev_seq = seq
            digest = str(rec.get("hash"))
            local_by_seq[seq] = digest if local_hash(rec) == digest else "!" + digest
        first = local[0] if local else None
        with self.sessions() as db:
            chain = db.scalars(select(Chain).where(Chain.source == source)).one_or_none()
            if chain is None:
                report["missing_at_service"] = sorted(local_by_seq)
                return report
            epochs = list(
                db.execute(
                    select(Record.epoch, func.min(Record.pos))
                    .where(Record.chain_id == chain.id)
                    .group_by(Record.epoch)
                    .order_by(func.min(Record.pos))
                ).all()
            )
            known = {e for e, _ in epochs}
            epoch = None
            if first is not None and first.get("seq") == 1 and first.get("hash") in known:
                epoch = first["hash"]
            elif epochs and not (first is not None and first.get("action") == "state_lost"):
                # An unknown first hash on a log that did not start over after a loss: the
                # service's newest epoch, rewritten from its first record on.
                epoch = epochs[-1][0]
            report["epoch"] = epoch
            stored: dict[int, str] = {}
            if epoch is not None:
                stored = dict(
                    db.execute(
                        select(Record.seq, Record.record_hash).where(
                            Record.chain_id == chain.id, Record.epoch == epoch
                        )
                    ).all()
                )
            report["conflicts"] = db.scalar(
                select(func.count()).where(Conflict.chain_id == chain.id)
            )
        local_last = max(local_by_seq, default=0)
        service_last = max(stored, default=0)
        for seq in sorted(set(local_by_seq) & set(stored)):
            if local_by_seq[seq] != stored[seq]:
                report["rewritten"].append(seq)
        report["missing_at_service"] = sorted(set(local_by_seq) - set(stored))
        only_service = sorted(set(stored) - set(local_by_seq))
        report["removed_locally"] = [s for s in only_service if s <= local_last]
        after = [s for s in only_service if s > local_last]
        if after:
            report["truncated"] = {
                "local_last_seq": local_last,
                "service_last_seq": service_last,
                "records_gone": len(after),
            }
        if stored:
            low = 1 if chain.anchor_pos == 0 else min(stored)
            holes = [n for n in range(low, service_last + 1) if n not in stored]
            report["gaps"]["service"] = _ranges(holes[:GAPS_LISTED])
        report["ok"] = not (
            report["truncated"]
            or report["rewritten"]
            or report["removed_locally"]
            or report["missing_at_service"]
            or report["gaps"]["service"]
            or report["gaps"]["local"]
            or report["conflicts"]
        )
        return report


def parse_jsonl(text: str) -> list[dict[str, Any]]:
    """The records of a JSONL text; unreadable lines become `{}` (they then show as gaps)."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            value = {}
        out.append(value if isinstance(value, dict) else {})
    return out
