"""The per-connection message budget behind `max_ops_per_minute` (close code 4006).

The rule, for a connection whose effective limit is N messages per minute: a token
bucket that holds at most N tokens, starts full, and refills continuously at N/60
tokens per second; each binary message the client sends (sync step 1 and 2, update,
awareness, query-awareness: every one costs the server work) takes one token, and a
message that finds the bucket empty closes the connection with 4006.

What that guarantees: a client that never sends more than N messages in any 60
seconds is never closed (an honest typist at 10 keystrokes a second sends 600 a
minute, far below a plan's thousands); one that keeps sending faster is closed once it
has sent N + N*t/60 messages in t seconds. Pings and pongs are not counted.

It is local to the connection (no shared state, no Redis round trip): one clock read
and a few float operations per message, on the hot path.
"""

import time
from collections.abc import Callable

from ..errors import RateLimited


class MessageBudget:
    """The bucket of one connection; `clock()` gives monotonic seconds (injectable)."""

    __slots__ = ("capacity", "rate", "tokens", "stamp", "on_exhausted", "clock")

    def __init__(
        self,
        per_minute: int,
        on_exhausted: Callable[[RateLimited], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0  # tokens per second
        self.tokens = self.capacity
        self.clock = clock
        self.stamp = clock()
        self.on_exhausted = on_exhausted  # called with the RateLimited error, before it is raised

    def spend(self) -> None:
        """Take one token for a received message, or raise RateLimited (4006)."""
        now = self.clock()
        tokens = self.tokens + (now - self.stamp) * self.rate
        if tokens > self.capacity:
            tokens = self.capacity
        self.stamp = now
        if tokens < 1.0:
            self.tokens = tokens
            error = RateLimited("too many messages")
            if self.on_exhausted is not None:
                self.on_exhausted(error)
            raise error
        self.tokens = tokens - 1.0
