"""Capped exponential back-off: the one rule every retry loop of the server uses.

A failed attempt waits `first` seconds, then twice that after each further failure, never
more than `cap`; `reset()` after a success starts again from `first`. No jitter: the
loops that use it (storage commits, unloading a room, releasing a region claim) retry
one local operation each, not a crowd of clients against one server.

    backoff = Backoff(0.05, 5.0)
    while not try_it():
        backoff.sleep()

`sleep` is injectable (tests pass a recorder; the default is gevent's, which yields to
the other greenlets).
"""

from collections.abc import Callable

import gevent


class Backoff:
    """The delays `first, 2*first, 4*first, ...` capped at `cap`."""

    __slots__ = ("first", "cap", "delay", "_sleep")

    def __init__(
        self, first: float, cap: float, sleep: Callable[[float], object] = gevent.sleep
    ) -> None:
        if not 0 < first <= cap:
            raise ValueError("back-off needs 0 < first <= cap")
        self.first = first
        self.cap = cap
        self.delay = first  # what the next failure waits
        self._sleep = sleep

    def next(self) -> float:
        """The delay to wait now; the following one doubles (up to `cap`)."""
        delay = self.delay
        self.delay = min(delay * 2, self.cap)
        return delay

    def sleep(self) -> float:
        """Wait the next delay; return it (for the log line)."""
        delay = self.next()
        self._sleep(delay)
        return delay

    def reset(self) -> None:
        """After a success: the next failure waits `first` again."""
        self.delay = self.first
