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

This is the seam for sharing the ledger: `reserve`, `settle`, `refund` and `usage` are the
whole interface the handlers use. A second gateway process, or a usage page in the Hub,
would need the same four operations against a shared store (one row per user with the
window's charges and the open reservations); nothing else in the gateway reads the ledger.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass


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
    """In-process ledger of per-user concurrency and a sliding window of tokens.

    `max_concurrent` or `tokens_per_minute` of 0 turn that limit off; reservations and
    charges are still recorded, so `usage` stays meaningful.
    """

    WINDOW = 60.0

    def __init__(
        self,
        max_concurrent: int,
        tokens_per_minute: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_concurrent = max_concurrent
        self.tokens_per_minute = tokens_per_minute
        self._clock = clock
        self._spent: dict[str, deque[tuple[float, int]]] = defaultdict(deque)
        self._open: dict[str, list[Reservation]] = defaultdict(list)

    def _window(self, user: str, now: float) -> deque[tuple[float, int]]:
        spent = self._spent[user]
        while spent and spent[0][0] <= now - self.WINDOW:
            spent.popleft()
        return spent

    def usage(self, user: str) -> Usage:
        spent = self._window(user, self._clock())
        open_ = self._open.get(user, [])
        return Usage(sum(n for _, n in spent), sum(r.tokens for r in open_), len(open_))

    def reserve(self, user: str, tokens: int) -> Reservation:
        """Admit a call that may cost up to `tokens`, or raise `LimitExceeded`."""
        now = self._clock()
        tokens = max(0, tokens)
        open_ = self._open[user]
        if self.max_concurrent > 0 and len(open_) >= self.max_concurrent:
            raise LimitExceeded(
                "concurrency",
                f"too many concurrent requests: at most {self.max_concurrent} per user",
                1,
            )
        budget = self.tokens_per_minute
        if budget > 0:
            spent = self._window(user, now)
            reserved = sum(r.tokens for r in open_)
            committed = sum(n for _, n in spent) + reserved
            if committed > 0 and committed + tokens > budget:
                raise LimitExceeded(
                    "tokens_per_minute",
                    f"token budget of {budget} tokens per minute used up: {committed} spent or "
                    f"reserved by calls in flight, and this call may cost {tokens} "
                    "(its prompt plus max_tokens; a smaller max_tokens may fit)",
                    self._retry_after(spent, reserved, max(0, budget - tokens), now),
                )
        reservation = Reservation(user, tokens)
        open_.append(reservation)
        return reservation

    def _retry_after(
        self, spent: deque[tuple[float, int]], reserved: int, target: int, now: float
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
        open_ = self._open.get(reservation.user, [])
        if reservation in open_:
            open_.remove(reservation)
        if not open_:
            self._open.pop(reservation.user, None)
        if reservation.charged:
            self._spent[reservation.user].append((self._clock(), reservation.charged))

    def refund(self, reservation: Reservation) -> None:
        """End a call that generated nothing: free its slot, charge nothing."""
        self.settle(reservation, 0)
