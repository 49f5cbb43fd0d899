"""Waiting for a condition: the one polling rule (backoff.py is the one retry rule).

Wait on an event when the code that changes the condition can signal it (gevent's
Event, AsyncResult, a greenlet's join): that wakes at once and costs nothing meanwhile.
Poll only what nothing signals, a state several parts change (the connections left
open at shutdown, a queue and its senders, a compaction under way):

    if not wait_until(lambda: not endpoint.connections, timeout=5.0):
        log.warning("clients still connected")

A loop that does something at a fixed pace (a heartbeat, a ping, a flush) sleeps its
interval and is not a wait; a loop that retries a failure uses `Backoff`.
"""

import time
from collections.abc import Callable

import gevent

# How often a wait checks by default: short next to the timeouts waited for (seconds),
# long enough to cost nothing while it lasts.
INTERVAL = 0.05


def wait_until(
    predicate: Callable[[], object],
    timeout: float,
    interval: float = INTERVAL,
    sleep: Callable[[float], object] = gevent.sleep,
) -> bool:
    """Check `predicate` now, then every `interval` seconds: True as soon as it holds,
    False once `timeout` seconds have passed without (its last check at the deadline).
    `sleep` is injectable like Backoff's (gevent's by default: other greenlets run)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        sleep(min(interval, left))
    return True
