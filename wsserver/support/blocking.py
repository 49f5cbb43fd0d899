"""Blocking backend calls (SQLite), run off the gevent hub.

A backend with `threaded = True` runs every `_call` in one worker thread of its own: a
slow disk or an fsync never stalls the other greenlets, and the calls run one at a time
in the order they were made, which is what orders, say, a compaction after the appends
it covers. With `threaded = False` (in-memory backends, redis-py's cooperative sockets)
`_call` is a plain call.

`shielded = True` (Postgres: psycopg and psycopg_pool under gevent) runs each call in a
greenlet of its own and waits for it: a caller that is interrupted (killed, or its own
`timeout` passing) stops waiting, but the call itself runs to its end and gives its
connection back. Interrupting psycopg_pool inside `getconn` (a gevent.Timeout or a kill
is a BaseException, which it does not catch) leaves a dead waiter in its queue that
swallows the next connection: after a few, the pool holds none and makes no new ones.
Such calls are bounded by the driver and the database instead (connect_timeout, the
pool's timeout, statement_timeout, lock_timeout).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gevent
from gevent.threadpool import ThreadPool


class CallTimeout(Exception):
    """A call did not end within the caller's `timeout` (it goes on running: `call` is
    its greenlet or AsyncResult, whose `rawlink` tells a caller when it ends)."""

    def __init__(self, message: str, call: Any) -> None:
        super().__init__(message)
        self.call = call


class BlockingCalls:
    threaded = True
    shielded = False

    def _start_calls(self):
        self._pool = ThreadPool(1) if self.threaded else None

    def _call(self, fn: Callable[..., Any], *args: Any, timeout: float | None = None) -> Any:
        """`fn(*args)` where this backend's calls run. `timeout` (threaded and shielded
        backends): raise CallTimeout after that many seconds, leaving the call running
        (in the worker thread, after the calls queued before it)."""
        if self._pool is not None:
            if timeout is None:
                return self._pool.apply(fn, args)
            queued = self._pool.spawn(fn, *args)
            queued.wait(timeout)
            if not queued.ready():
                raise CallTimeout(f"no answer within {timeout:g} s", queued)
            return queued.get()
        if not self.shielded:
            return fn(*args)
        call = gevent.spawn(_outcome, fn, args)
        call.join(timeout)
        if not call.ready():
            raise CallTimeout(f"no answer within {timeout:g} s", call)
        ok, value = call.value
        if not ok:
            raise value  # with its own traceback
        return value

    def _stop_calls(self):
        if self._pool is not None:
            self._pool.kill()


def _outcome(fn, args):
    """(True, fn(*args)) or (False, the exception it raised): returned, not raised, so
    that gevent does not report it as a greenlet's failure; the caller raises it."""
    try:
        return True, fn(*args)
    except Exception as e:
        return False, e
