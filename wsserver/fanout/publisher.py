"""The fan-out's publishing side: a queue drained by one greenlet, so nothing a room
or a message loop does waits on Redis.

Each update's `on_sent` (the room's echo) runs once the update is in the stream or
could not be put there, in publishing order. While Redis is down nothing is sent (no
timeouts paid per message): what could not be sent is dropped at once, and the streams
of updates that were not published are remembered (`unpublished`) so that the engine
announces them for reconciliation once Redis is back. Beyond MAX_QUEUED entries the
oldest are dropped the same way.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

from gevent.event import Event

from ..support.wait import wait_until
from .entries import UPDATE, Fields, OnSent, Queued

log = logging.getLogger(__name__)

MAX_QUEUED = 10_000  # publish queue; beyond it the oldest are dropped (and reconciled)
BATCH = 512  # entries per publish round trip
DRAIN_POLL = 0.01  # seconds between a drain's checks of the queue


class Publisher:
    """`host`: this process's id in every entry; `is_up()`: Redis answers (the engine's
    state); `send(items)`: append [(stream, fields)] in one round trip, True when done."""

    def __init__(
        self,
        host: bytes,
        is_up: Callable[[], bool],
        send: Callable[[list[tuple[str, Fields]]], bool],
    ) -> None:
        self.host = host
        self.is_up = is_up
        self.send = send
        self.queue: deque[Queued] = deque()
        self.unpublished: set[str] = set()  # streams with updates not published
        self.closed = False
        self._wake = Event()

    def enqueue(
        self,
        stream: str,
        kind: bytes,
        data: bytes,
        on_sent: OnSent = None,
        user: str | None = None,
    ) -> None:
        """Queue one entry (never blocks); dropped at once when nothing can be sent."""
        if self.closed or (not self.is_up() and not self.queue):
            # Nothing queued ahead of it (whose `on_sent` must run first): drop it now.
            self.lost(stream, kind, on_sent)
            return
        if len(self.queue) >= MAX_QUEUED:
            self._drop(self.queue.popleft())
        fields = {b"h": self.host, b"t": kind, b"d": data}
        if user is not None:
            fields[b"u"] = user.encode()
        self.queue.append((stream, kind, fields, on_sent))
        self._wake.set()

    def lost(self, stream: str, kind: bytes, on_sent: OnSent = None) -> None:
        """An entry that will not be sent: updates are announced for reconciliation
        later; awareness is renewed by the clients, and answered to a query."""
        if kind == UPDATE:
            self.unpublished.add(stream)
        _done(on_sent)

    def take_unpublished(self) -> set[str]:
        """The streams whose updates were not published, forgotten here."""
        streams = set(self.unpublished)
        self.unpublished.clear()
        return streams

    def drain(self, timeout: float) -> None:
        """Let the loop publish what is queued while Redis answers, within `timeout`."""
        self._wake.set()  # the loop empties the queue before it waits again
        # Polled: the queue empties and Redis goes down in other greenlets, neither
        # signalled here. A short interval: this runs inside every shutdown, which
        # should not wait longer than the publishing takes.
        wait_until(lambda: not self.queue or not self.is_up(), timeout, interval=DRAIN_POLL)

    def close(self) -> None:
        """Stop; what is still queued is dropped, its callbacks run in order."""
        self.closed = True
        while self.queue:
            self._drop(self.queue.popleft())
        self._wake.set()

    def run(self) -> None:
        """The publisher greenlet's loop."""
        while not self.closed:
            self._wake.wait()
            self._wake.clear()
            while self.queue and not self.closed:
                batch: list[Queued] = []
                while self.queue and len(batch) < BATCH:
                    batch.append(self.queue.popleft())
                if self.is_up() and self.send([(stream, f) for stream, _, f, _ in batch]):
                    for _, _, _, on_sent in batch:
                        _done(on_sent)
                else:
                    for entry in batch:
                        self._drop(entry)

    def _drop(self, entry: Queued) -> None:
        stream, kind, _, on_sent = entry
        self.lost(stream, kind, on_sent)


def _done(on_sent: OnSent) -> None:
    if on_sent is not None:
        try:
            on_sent()
        except Exception:
            log.exception("fanout: a publish callback failed")
