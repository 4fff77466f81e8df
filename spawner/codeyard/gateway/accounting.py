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

Shared state: the ledger is a small table of fixed size in a memory-mapped file
(`GatewayApp.ledger_path`), so every pre-forked gateway process admits against the same
counts and a user's limits hold exactly however the kernel spreads their connections. Each
admission reads and updates the table under an `flock` of the file, which the kernel hands
from process to process as soon as it is let go. Nothing on the way to vLLM writes a file
or waits for a disk: an admission is a hash, a lookup and a few integers, about ten
microseconds of Python, so it runs on the event loop.

Why not SQLite (what the ledger was before): a reservation was a write transaction
(`BEGIN IMMEDIATE`, a read, an insert, `COMMIT`) under the same `flock`, and its checkpoints
fsynced. In a burst of 16 calls on two workers each worker admits its calls one after
another before the later ones go out, so the ledger was the largest single step a call
queued behind: without contention, a call's `forward` time (request read to request sent
upstream) was 1.6-1.9 ms p50 with it and 1.1-1.3 ms with the ledger replaced by no-ops; and
on busy cores, a worker preempted inside its transaction held the lock for the other one.
The table keeps no history a Hub page reads: per-user usage comes from the audit log.

What the table holds, per user (keyed by a 128-bit BLAKE2b of the name, in an open-addressed
table of `USERS` entries): calls in flight, tokens they reserved, and the tokens charged in
each of the last `WINDOW + 1` whole seconds, with their running total. The window is kept in
whole seconds: a charge counts from its second until `WINDOW` seconds after the end of that
second, so for 60 to 61 s, never less. Per call in flight (`CALLS` entries): its user, its
reservation and the process that holds it, so that a dead process's calls can be charged.
A user with nothing in flight and nothing charged in the window is forgotten when the table
fills up. A full table (more users active in one minute, or more calls in flight, than it
has entries) refuses new calls with a clear message rather than losing count.

A process killed in the middle of an update (a few microseconds under the lock) can leave a
user's counters off by its call; `close_process` and `close_all_open` recount every user's
calls in flight from the per-call entries, so the counts heal when the process is reaped.

Reservations of a process that died (killed while relaying) are charged in full by
`close_process`, which the supervisor calls when it reaps the process, and any left from an
earlier run by `close_all_open` at start, before a process serves: like a stream cut short,
nobody knows how much they generated.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import math
import mmap
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

WINDOW = 60  # seconds a charge counts for (whole seconds, see the module doc)
SECONDS = WINDOW + 1  # buckets per user: the current second and the WINDOW before it
USERS = 4096  # users with calls in flight or charges in the window, at most
CALLS = 4096  # calls in flight over all users and processes, at most
MAGIC = b"cyledg01"  # the file's layout and version


class _Bucket(ctypes.Structure):
    _fields_ = [("second", ctypes.c_int64), ("tokens", ctypes.c_int64)]


class _User(ctypes.Structure):
    # key 0/0 marks a free entry. `spent` is the total of the buckets whose second lies in
    # the window ending at `now`; buckets older than that hold 0 tokens.
    _fields_ = [
        ("k0", ctypes.c_uint64),
        ("k1", ctypes.c_uint64),
        ("in_flight", ctypes.c_int64),
        ("reserved", ctypes.c_int64),
        ("spent", ctypes.c_int64),
        ("now", ctypes.c_int64),
        ("buckets", _Bucket * SECONDS),
    ]


class _Call(ctypes.Structure):
    # id 0 marks a free entry.
    _fields_ = [
        ("id", ctypes.c_int64),
        ("k0", ctypes.c_uint64),
        ("k1", ctypes.c_uint64),
        ("tokens", ctypes.c_int64),
        ("pid", ctypes.c_int64),
    ]


class _Header(ctypes.Structure):
    _fields_ = [
        ("magic", ctypes.c_char * 8),
        ("next_id", ctypes.c_int64),
        ("users_used", ctypes.c_int64),
    ]


class _Table(ctypes.Structure):
    _fields_ = [("header", _Header), ("users", _User * USERS), ("calls", _Call * CALLS)]


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
    id: int = 0  # unique per ledger file
    slot: int = -1  # its entry in the table of calls in flight
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


def _key(user: str) -> tuple[int, int]:
    digest = hashlib.blake2b(user.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    k0, k1 = int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:], "little")
    return (k0, k1 or 1)  # never 0/0, the mark of a free entry


class TokenLedger:
    """Per-user concurrency and a sliding window of tokens, in a table shared by every
    gateway process through a memory-mapped file (or in this process's memory only:
    `path=":memory:"`).

    `max_concurrent` or `tokens_per_minute` of 0 turn that limit off; reservations and
    charges are still recorded, so `usage` stays meaningful. `clock` must be the same for
    every process of the ledger: wall-clock time, not a per-process counter.
    """

    WINDOW = float(WINDOW)
    USERS = USERS
    CALLS = CALLS

    def __init__(
        self,
        max_concurrent: int,
        tokens_per_minute: int,
        clock: Callable[[], float] = time.time,
        path: str | os.PathLike[str] = ":memory:",
    ) -> None:
        self.max_concurrent = max_concurrent
        self.tokens_per_minute = tokens_per_minute
        self._clock = clock
        self.path = str(path)
        size = ctypes.sizeof(_Table)
        self._fd: int | None = None
        self._thread_lock = threading.Lock()  # threads of one process; the flock: processes
        if self.path == ":memory:":
            self._map = mmap.mmap(-1, size)
        else:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            os.fchmod(self._fd, 0o600)  # user names' hashes and their spending
            with self._locked():
                if os.fstat(self._fd).st_size != size or os.pread(self._fd, 8, 0) != MAGIC:
                    # New, or another layout (an older ledger): start empty. What it held
                    # is at most a minute of accounting.
                    os.ftruncate(self._fd, 0)
                    os.ftruncate(self._fd, size)
                    os.pwrite(self._fd, MAGIC, 0)
            self._map = mmap.mmap(self._fd, size, mmap.MAP_SHARED)
        self._table: _Table | None = _Table.from_buffer(self._map)
        if self.path == ":memory:":
            self._table.header.magic = MAGIC

    def close(self) -> None:
        if self._table is None:
            return
        self._table = None  # the map cannot close while a ctypes view holds it
        self._map.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._thread_lock:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                if self._fd is not None:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)

    @property
    def _t(self) -> _Table:
        if self._table is None:
            raise ValueError("the ledger is closed")
        return self._table

    # The table of users: open addressing, linear probing, no deletion but a rebuild.

    def _probe(self, key: tuple[int, int]) -> tuple[_User, bool]:
        """The user's entry and True, or the free entry where it would go and False. The
        table is never full: `_insert` keeps a quarter of it free."""
        users = self._t.users
        k0, k1 = key
        i = k0 % self.USERS
        for _ in range(self.USERS):
            entry = users[i]
            if entry.k0 == k0 and entry.k1 == k1:
                return entry, True
            if entry.k0 == 0 and entry.k1 == 0:
                return entry, False
            i = (i + 1) % self.USERS
        raise RuntimeError(f"the ledger's table of users has no free entry: {self.path}")

    def _find(self, key: tuple[int, int]) -> _User | None:
        entry, found = self._probe(key)
        return entry if found else None

    def _insert(self, key: tuple[int, int], now: int) -> _User:
        """The user's entry, made if new. Raises `LimitExceeded` if the table is full."""
        entry, found = self._probe(key)
        if found:
            return entry
        header = self._t.header
        if header.users_used + 1 > self.USERS * 3 // 4:
            self._rebuild(now)
            if header.users_used + 1 > self.USERS * 3 // 4:
                raise LimitExceeded(
                    "capacity",
                    f"the gateway's ledger is full: {header.users_used} users have calls in "
                    "flight or tokens charged in the last minute, the most it counts",
                    1,
                )
            entry, _ = self._probe(key)  # the rebuild moved the entries
        entry.k0, entry.k1, entry.now = key[0], key[1], now
        header.users_used += 1
        return entry

    def _rebuild(self, now: int) -> None:
        """Forget the users with nothing in flight and nothing in the window."""
        users = self._t.users
        live = []
        for i in range(self.USERS):
            entry = users[i]
            if entry.k0 or entry.k1:
                self._advance(entry, now)
                if entry.in_flight or entry.spent:
                    live.append(bytes(entry))
        ctypes.memset(ctypes.addressof(users), 0, ctypes.sizeof(users))
        for raw in live:
            kept = _User.from_buffer_copy(raw)
            entry, _ = self._probe((kept.k0, kept.k1))
            ctypes.memmove(ctypes.addressof(entry), raw, len(raw))
        self._t.header.users_used = len(live)

    # One user's window of charges.

    @staticmethod
    def _advance(user: _User, now: int) -> None:
        """Move the user's window to end at second `now`: drop what fell out of it."""
        if now <= user.now:
            return  # the same second, or a clock stepped back: keep the later window
        buckets = user.buckets
        if now - user.now >= SECONDS:
            for bucket in buckets:
                bucket.tokens = 0
            user.spent = 0
        else:
            for second in range(user.now - WINDOW, now - WINDOW):
                bucket = buckets[second % SECONDS]
                if bucket.second == second:
                    user.spent -= bucket.tokens
                    bucket.tokens = 0
        user.now = now

    @staticmethod
    def _charge(user: _User, tokens: int) -> None:
        """Charge `tokens` in the user's current second (after `_advance`)."""
        if tokens <= 0:
            return
        bucket = user.buckets[user.now % SECONDS]
        if bucket.second != user.now:
            bucket.second, bucket.tokens = user.now, 0  # out of the window: its tokens are 0
        bucket.tokens += tokens
        user.spent += tokens

    def _seconds(self) -> tuple[float, int]:
        now = self._clock()
        return now, math.floor(now)

    def usage(self, user: str) -> Usage:
        with self._locked():
            entry = self._find(_key(user))
            if entry is None:
                return Usage(0, 0, 0)
            self._advance(entry, self._seconds()[1])
            return Usage(int(entry.spent), int(entry.reserved), int(entry.in_flight))

    def reserve(self, user: str, tokens: int) -> Reservation:
        """Admit a call that may cost up to `tokens`, or raise `LimitExceeded`."""
        tokens = max(0, tokens)
        key = _key(user)
        with self._locked():
            now, second = self._seconds()
            entry = self._insert(key, second)
            self._advance(entry, second)
            if self.max_concurrent > 0 and entry.in_flight >= self.max_concurrent:
                raise LimitExceeded(
                    "concurrency",
                    f"too many concurrent requests: at most {self.max_concurrent} per user",
                    1,
                )
            budget = self.tokens_per_minute
            committed = entry.spent + entry.reserved
            if budget > 0 and committed > 0 and committed + tokens > budget:
                raise LimitExceeded(
                    "tokens_per_minute",
                    f"token budget of {budget} tokens per minute used up: {committed} "
                    "spent or reserved by calls in flight, and this call may cost "
                    f"{tokens} (its prompt plus max_tokens; a smaller max_tokens may fit)",
                    self._retry_after(entry, max(0, budget - tokens), now),
                )
            slot, call_id = self._take_call_entry()
            call = self._t.calls[slot]
            call.k0, call.k1, call.tokens, call.pid = key[0], key[1], tokens, os.getpid()
            call.id = call_id  # last: the entry counts once it has all its fields
            entry.in_flight += 1
            entry.reserved += tokens
        return Reservation(user, tokens, call_id, slot)

    def _take_call_entry(self) -> tuple[int, int]:
        header, calls = self._t.header, self._t.calls
        start = header.next_id % self.CALLS
        for step in range(self.CALLS):
            slot = (start + step) % self.CALLS
            if calls[slot].id == 0:
                header.next_id += 1
                return slot, int(header.next_id)
        raise LimitExceeded(
            "capacity",
            f"the gateway has {self.CALLS} calls in flight, the most its ledger counts",
            1,
        )

    def _retry_after(self, user: _User, target: int, now: float) -> int:
        """Seconds until enough of the window expires for `committed <= target`. Calls in
        flight are charged when they end, so what they hold frees a whole window later."""
        in_window = sorted(
            (b.second, b.tokens) for b in user.buckets if b.tokens and b.second > user.now - SECONDS
        )
        remaining = user.reserved + user.spent
        for second, tokens in in_window:
            remaining -= tokens
            if remaining <= target:
                return max(1, math.ceil(second + SECONDS - now))
        return SECONDS

    def settle(self, reservation: Reservation, tokens: int) -> None:
        """End the call: free its slot and reservation and charge `tokens` now."""
        if not reservation.open:
            return
        reservation.charged = max(0, tokens)
        with self._locked():
            call = self._t.calls[reservation.slot]
            if call.id != reservation.id:
                return  # already charged in full by `close_process`/`close_all_open`
            call.id = 0
            entry = self._find((call.k0, call.k1))
            if entry is None:  # cannot happen while the call was in flight; count it anyway
                entry = self._insert((call.k0, call.k1), self._seconds()[1])
            self._end(entry, call.tokens, reservation.charged)

    def _end(self, entry: _User, reserved: int, charged: int) -> None:
        entry.in_flight = max(0, entry.in_flight - 1)
        entry.reserved = max(0, entry.reserved - reserved)
        self._advance(entry, self._seconds()[1])
        self._charge(entry, charged)

    def refund(self, reservation: Reservation) -> None:
        """End a call that generated nothing: free its slot, charge nothing."""
        self.settle(reservation, 0)

    def _close_where(self, pid: int | None) -> int:
        """Charge in full and end the calls in flight of `pid`, or all of them; then recount
        every user's calls in flight from the calls' entries (see the module doc)."""
        closed = 0
        with self._locked():
            second = self._seconds()[1]
            calls = self._t.calls
            for slot in range(self.CALLS):
                call = calls[slot]
                if call.id and (pid is None or call.pid == pid):
                    call.id = 0
                    closed += 1
                    entry = self._insert((call.k0, call.k1), second)
                    self._advance(entry, second)
                    self._charge(entry, call.tokens)
            self._recount()
        return closed

    def _recount(self) -> None:
        held: dict[tuple[int, int], tuple[int, int]] = {}
        for call in self._t.calls:
            if call.id:
                count, tokens = held.get((call.k0, call.k1), (0, 0))
                held[(call.k0, call.k1)] = (count + 1, tokens + call.tokens)
        for entry in self._t.users:
            if entry.k0 or entry.k1:
                entry.in_flight, entry.reserved = held.get((entry.k0, entry.k1), (0, 0))

    def close_process(self, pid: int) -> int:
        """Charge in full and end the reservations of a gateway process that is gone."""
        return self._close_where(pid)

    def close_all_open(self) -> int:
        """Charge in full and end every open reservation: at start, before any process of
        this gateway serves, every one is left over from a run that ended."""
        return self._close_where(None)
