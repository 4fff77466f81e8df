"""The token ledger: every per-user limit and every charge goes through `TokenLedger`.

A call is admitted by `reserve`, which takes one of the user's concurrency slots and sets
aside the most the call can cost (its prompt, estimated, plus the `max_tokens` it may
generate). When the call ends the handler calls exactly one of

- `settle(reservation, tokens)`: charge what vLLM reported (its `usage` block), or the whole
  reservation when the answer was cut short (the caller hung up, vLLM broke off or timed
  out) and nothing reported how much was generated;
- `refund(reservation)`: nothing was generated (vLLM unreachable, or it refused the call).

Why reserve instead of counting after the fact: a charge that waits for the answer's `usage`
block is lost when the caller hangs up before it (forty streams closed after their first
kilobytes cost nothing), and calls that start together all see the same unspent budget. A
reservation is in the ledger from the moment the call is admitted, so concurrent calls see
each other's, and an abandoned stream still costs its reservation.

Admission: a call is let in if the user's spent tokens in the last `WINDOW` seconds plus the
reservations of their calls in flight plus this call's reservation fit in the budget, or if
the user has nothing spent or reserved at all (so one call larger than the whole budget can
still run, alone). The budget can therefore be exceeded only by the difference between a
call's estimated and real prompt size, or by that one lone call.

Shared state: the ledger is a SQLite database (`GatewayApp.ledger_path`, WAL journal), so
every pre-forked gateway process admits against the same rows and a user's limits hold
exactly however the kernel spreads their connections. Each admission is one `BEGIN
IMMEDIATE` transaction (read the user's open reservations and window, insert the new one),
which SQLite serialises across processes; it takes tens of microseconds, so it runs on the
event loop rather than paying a thread hop. Commits are not fsynced (`synchronous=NORMAL`
in WAL): a power cut may forget the last seconds of a 60-second window, which is all the
ledger is for. A Hub page can read the same file for per-user usage.

Writers queue on an `flock` of `<ledger>.lock` before they open their transaction. SQLite's
own wait for a busy write lock is a sleep-and-retry loop (1, 2, 5, 10 ms ...), and the
gateway's processes run it on their event loops: when 16 calls start at once on two
workers, their reservations collide, and a collision stalls every stream of the waiting
worker for at least a millisecond, even when the other worker's transaction was done after
50 us. The kernel hands an `flock` over as soon as it is released. SQLite's
locking still guards the file (a writer that does not take the `flock`, e.g. a tool, is
still serialised, only by polling).

Checkpoints (copying the write-ahead log back into the database file, with an fsync of
both) do not run on the event loops either: SQLite runs one inside whichever commit finds
the log past 1,000 pages, i.e. every hundred-odd calls, and its fsyncs took 1-45 ms on this
machine's shared disk, stalling every stream of that worker, and (holding the lock file)
the other workers' reservations too. The gateway's workers open the ledger with
`auto_checkpoint=False`, and one `Checkpointer` thread per gateway checkpoints every
`Checkpointer.INTERVAL` seconds, passively (it never blocks a writer; sqlite3 lets go of the
GIL while it works). Both together, two processes writing with every core busy
(tests/bench/bench_gateway.py): 161 of 2,267 reservations took over 1 ms (p99 4.3 ms)
before, 4 of 4,544 (p99 0.2 ms) after.

Reservations of a process that died (killed while relaying) are charged in full by
`close_process`, which the supervisor calls when it reaps the process, and any left from an
earlier run by `close_all_open` at start, before a process serves: like a stream cut short,
nobody knows how much they generated.
"""

from __future__ import annotations

import fcntl
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS reservation (
    id INTEGER PRIMARY KEY,
    user TEXT NOT NULL,
    tokens INTEGER NOT NULL,
    pid INTEGER NOT NULL,
    since REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS reservation_user ON reservation (user);
CREATE TABLE IF NOT EXISTS charge (
    user TEXT NOT NULL,
    at REAL NOT NULL,
    tokens INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS charge_user_at ON charge (user, at);
"""


class LimitExceeded(Exception):
    """A call refused by a per-user limit. `retry_after` is seconds until a retry can pass."""

    def __init__(self, reason: str, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retry_after = retry_after


@dataclass(eq=False)  # identity: two calls reserving the same amount are still two calls
class Reservation:
    """One admitted call's hold on the ledger; ended by exactly one `settle` or `refund`."""

    user: str
    tokens: int
    id: int = 0  # its row in the ledger
    charged: int | None = None  # set when the reservation ends

    @property
    def open(self) -> bool:
        return self.charged is None


@dataclass(frozen=True)
class Usage:
    """A user's position in the ledger at one moment."""

    spent: int  # tokens charged in the last WINDOW seconds
    reserved: int  # tokens set aside by calls in flight
    in_flight: int


class TokenLedger:
    """Per-user concurrency and a sliding window of tokens, in a SQLite file shared by every
    gateway process (or in memory, for one process: `path=":memory:"`).

    `max_concurrent` or `tokens_per_minute` of 0 turn that limit off; reservations and
    charges are still recorded, so `usage` stays meaningful. `clock` must be the same for
    every process of the ledger: wall-clock time, not a per-process counter.
    """

    WINDOW = 60.0

    def __init__(
        self,
        max_concurrent: int,
        tokens_per_minute: int,
        clock: Callable[[], float] = time.time,
        path: str | os.PathLike[str] = ":memory:",
        busy_timeout_ms: int = 10_000,
        auto_checkpoint: bool = True,
    ) -> None:
        self.max_concurrent = max_concurrent
        self.tokens_per_minute = tokens_per_minute
        self._clock = clock
        self.path = str(path)
        # Autocommit mode: every transaction below is opened explicitly.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        if self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            if not auto_checkpoint:
                self._db.execute("PRAGMA wal_autocheckpoint = 0")  # a `Checkpointer` does it
        self._db.executescript(SCHEMA)
        self._lock_fd: int | None = None
        if self.path != ":memory:":
            os.chmod(self.path, 0o600)  # user names and their spending
            self._lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)

    def close(self) -> None:
        self._db.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction holding SQLite's write lock from its start, so the rows read in
        it are still the truth when its insert commits (no other process writes between).
        Writers of this class queue on the lock file first (see the module doc)."""
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        finally:
            if self._lock_fd is not None:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _spent(self, db: sqlite3.Connection, user: str, now: float) -> list[tuple[float, int]]:
        rows = db.execute(
            "SELECT at, tokens FROM charge WHERE user = ? AND at > ? ORDER BY at",
            (user, now - self.WINDOW),
        ).fetchall()
        return [(float(at), int(n)) for at, n in rows]

    def _open(self, db: sqlite3.Connection, user: str) -> tuple[int, int]:
        count, total = db.execute(
            "SELECT count(*), coalesce(sum(tokens), 0) FROM reservation WHERE user = ?", (user,)
        ).fetchone()
        return int(count), int(total)

    def usage(self, user: str) -> Usage:
        now = self._clock()
        spent = self._spent(self._db, user, now)
        count, reserved = self._open(self._db, user)
        return Usage(sum(n for _, n in spent), reserved, count)

    def reserve(self, user: str, tokens: int) -> Reservation:
        """Admit a call that may cost up to `tokens`, or raise `LimitExceeded`."""
        tokens = max(0, tokens)
        with self._write() as db:
            now = self._clock()
            budget = self.tokens_per_minute
            if budget > 0:
                # One statement for the user's position: this runs before the call goes to
                # vLLM. Expired charges are deleted by `settle`, after the answer.
                count, reserved, spent_total = db.execute(
                    "SELECT count(*), coalesce(sum(tokens), 0), (SELECT coalesce(sum(tokens), "
                    "0) FROM charge WHERE user = ?1 AND at > ?2) FROM reservation "
                    "WHERE user = ?1",
                    (user, now - self.WINDOW),
                ).fetchone()
            else:
                count, reserved = self._open(db, user)
            if self.max_concurrent > 0 and count >= self.max_concurrent:
                raise LimitExceeded(
                    "concurrency",
                    f"too many concurrent requests: at most {self.max_concurrent} per user",
                    1,
                )
            if budget > 0:
                committed = spent_total + reserved
                if committed > 0 and committed + tokens > budget:
                    spent = self._spent(db, user, now)
                    raise LimitExceeded(
                        "tokens_per_minute",
                        f"token budget of {budget} tokens per minute used up: {committed} "
                        "spent or reserved by calls in flight, and this call may cost "
                        f"{tokens} (its prompt plus max_tokens; a smaller max_tokens may fit)",
                        self._retry_after(spent, reserved, max(0, budget - tokens), now),
                    )
            row = db.execute(
                "INSERT INTO reservation (user, tokens, pid, since) VALUES (?, ?, ?, ?)",
                (user, tokens, os.getpid(), now),
            ).lastrowid
        return Reservation(user, tokens, int(row or 0))

    def _retry_after(
        self, spent: list[tuple[float, int]], reserved: int, target: int, now: float
    ) -> int:
        """Seconds until enough of the window expires for `committed <= target`. Calls in
        flight are charged when they end, so what they hold frees a whole window later."""
        remaining = reserved + sum(n for _, n in spent)
        for stamp, n in spent:
            remaining -= n
            if remaining <= target:
                return max(1, math.ceil(stamp + self.WINDOW - now))
        return max(1, math.ceil(self.WINDOW))

    def settle(self, reservation: Reservation, tokens: int) -> None:
        """End the call: free its slot and reservation and charge `tokens` now."""
        if not reservation.open:
            return
        reservation.charged = max(0, tokens)
        with self._write() as db:
            now = self._clock()
            gone = db.execute("DELETE FROM reservation WHERE id = ?", (reservation.id,)).rowcount
            # A row already gone was charged in full by `close_process`/`close_all_open`.
            if gone and reservation.charged:
                db.execute(
                    "INSERT INTO charge (user, at, tokens) VALUES (?, ?, ?)",
                    (reservation.user, now, reservation.charged),
                )
            # Charges out of the window count for nothing: forget them here, after the
            # answer, rather than in `reserve`, on the way to the first token.
            db.execute(
                "DELETE FROM charge WHERE user = ? AND at <= ?",
                (reservation.user, now - self.WINDOW),
            )

    def refund(self, reservation: Reservation) -> None:
        """End a call that generated nothing: free its slot, charge nothing."""
        self.settle(reservation, 0)

    def _close_where(self, pid: int | None) -> int:
        """Charge in full and end the open reservations of `pid`, or all of them."""
        with self._write() as db:
            now = self._clock()
            rows = db.execute(
                "SELECT id, user, tokens FROM reservation WHERE ? IS NULL OR pid = ?", (pid, pid)
            ).fetchall()
            db.executemany(
                "INSERT INTO charge (user, at, tokens) VALUES (?, ?, ?)",
                [(user, now, tokens) for _, user, tokens in rows if tokens],
            )
            db.executemany("DELETE FROM reservation WHERE id = ?", [(rid,) for rid, _, _ in rows])
        return len(rows)

    def close_process(self, pid: int) -> int:
        """Charge in full and end the reservations of a gateway process that is gone."""
        return self._close_where(pid)

    def close_all_open(self) -> int:
        """Charge in full and end every open reservation: at start, before any process of
        this gateway serves, every one is left over from a run that ended."""
        return self._close_where(None)


class Checkpointer(threading.Thread):
    """Checkpoints a ledger file's write-ahead log in the background (see the module doc),
    on a connection of its own, until `stop`."""

    INTERVAL = 1.0

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(name="codeyard-ledger-checkpoint", daemon=True)
        self.path = str(path)
        self.stopped = threading.Event()

    def run(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA busy_timeout = 10000")
            while not self.stopped.wait(self.INTERVAL):
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error:
                    continue  # busy or gone: the next round tries again
        finally:
            db.close()

    def stop(self) -> None:
        self.stopped.set()
