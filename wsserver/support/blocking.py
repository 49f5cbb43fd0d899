"""Blocking backend calls (SQLite), run off the gevent hub.

A backend with `threaded = True` runs every `_call` in one worker thread of its own: a
slow disk or an fsync never stalls the other greenlets, and the calls run one at a time
in the order they were made, which is what orders, say, a compaction after the appends
it covers. With `threaded = False` (in-memory backends, redis-py's cooperative sockets)
`_call` is a plain call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gevent.threadpool import ThreadPool


class BlockingCalls:
    threaded = True

    def _start_calls(self):
        self._pool = ThreadPool(1) if self.threaded else None

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._pool is None:
            return fn(*args)
        return self._pool.apply(fn, args)

    def _stop_calls(self):
        if self._pool is not None:
            self._pool.kill()
