"""Per-user limits: concurrent requests and tokens per minute.

Kept apart from HTTP so the arithmetic can be tested directly. A refusal carries the number
of seconds after which a retry can succeed, for the `Retry-After` header.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict, deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Refusal:
    reason: str
    message: str
    retry_after: int


class UserLimiter:
    """Counts in-flight requests and a 60-second sliding window of tokens for each user.

    `acquire` is called before forwarding and `release` when the response has ended, with the
    tokens the upstream reported. Tokens are counted after the fact (the answer's length is
    unknown before), so a user can overshoot the budget by one request; the next one waits.
    """

    WINDOW = 60.0

    def __init__(self, max_concurrent: int, tokens_per_minute: int) -> None:
        self.max_concurrent = max_concurrent
        self.tokens_per_minute = tokens_per_minute
        self._in_flight: dict[str, int] = defaultdict(int)
        self._spent: dict[str, deque[tuple[float, int]]] = defaultdict(deque)

    def _window(self, user: str, now: float) -> deque[tuple[float, int]]:
        spent = self._spent[user]
        while spent and spent[0][0] <= now - self.WINDOW:
            spent.popleft()
        return spent

    def acquire(self, user: str, now: float | None = None) -> Refusal | None:
        now = time.monotonic() if now is None else now
        if self.max_concurrent > 0 and self._in_flight[user] >= self.max_concurrent:
            return Refusal(
                "concurrency",
                f"too many concurrent requests: at most {self.max_concurrent} per user",
                1,
            )
        if self.tokens_per_minute > 0:
            spent = self._window(user, now)
            used = sum(n for _, n in spent)
            if used >= self.tokens_per_minute:
                # Wait until enough of the window has expired to fall under the budget.
                excess = used - self.tokens_per_minute
                wait = self.WINDOW
                for stamp, n in spent:
                    excess -= n
                    if excess < 0:
                        wait = stamp + self.WINDOW - now
                        break
                return Refusal(
                    "tokens_per_minute",
                    f"token budget of {self.tokens_per_minute} tokens per minute used up",
                    max(1, math.ceil(wait)),
                )
        self._in_flight[user] += 1
        return None

    def release(self, user: str, tokens: int, now: float | None = None) -> None:
        self._in_flight[user] = max(0, self._in_flight[user] - 1)
        if tokens > 0:
            self._spent[user].append((time.monotonic() if now is None else now, tokens))
