"""The fan-out's reading side: one greenlet, on a connection of its own, blocks on the
streams of every loaded document at once (plus the hosts stream and this process's wake
stream), remembers the last id it saw of each and hands what other processes published
to the rooms. After a failure it reconnects with capped back-off, and the engine
resyncs every subscription (base.py: catch-up)."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import gevent

from .. import metrics
from ..support.backoff import Backoff
from .entries import AWARENESS, BYE, QUERY, RECONCILE, UPDATE, Fields, Subscription, parse_id

if TYPE_CHECKING:
    from .base import Fanout

log = logging.getLogger(__name__)

RECONNECT_RETRY = (0.1, 2.0)  # Backoff(first, cap) of the reader's reconnects
Entries = list[tuple[str, Fields]]  # (id, fields) read from one stream


class Reader:
    """Reads for `engine` (the Fanout: its subscriptions, positions and backend)."""

    def __init__(self, engine: Fanout) -> None:
        self.engine = engine

    def run(self) -> None:
        """The reader greenlet's loop, until the engine is closed."""
        engine = self.engine
        backoff = Backoff(*RECONNECT_RETRY)
        last_read = time.monotonic()
        while not engine._closed:
            if engine.state != "up":
                try:
                    engine._connect()
                    engine._recovered()
                except Exception as e:
                    engine._failed("reconnect", e)
                    backoff.sleep()
                    continue
                backoff.reset()
            try:
                engine._resync_unknown()
                if time.monotonic() - last_read > engine.retention_seconds / 2:
                    engine._check_trimmed()  # this process was stalled: were we trimmed past?
                batches = engine._read(self.positions(), engine.block_ms)
                last_read = time.monotonic()
            except Exception as e:
                engine._failed("read", e)
                continue
            full = [stream for stream, entries in batches if self.deliver(stream, entries)]
            if full:
                engine._check_trimmed(full)

    def positions(self) -> dict[str, str]:
        """Every stream to read, with the id to read after."""
        engine = self.engine
        positions = {
            s.stream: s.position for s in list(engine.subs.values()) if s.position is not None
        }
        positions[engine.hosts_stream] = engine._hosts_position
        positions[engine.wake_stream] = engine._wake_position
        return positions

    def deliver(self, stream: str, entries: Entries) -> bool:
        """Apply entries read from `stream`; True when the read was capped (the reader
        may be behind: check for trimming)."""
        engine = self.engine
        if stream == engine.hosts_stream:
            engine._hosts_position = entries[-1][0]
            now = time.monotonic()
            for _, fields in entries:
                host = fields.get(b"h")
                if host is None or host == engine.host:
                    continue
                if fields.get(b"t") == BYE:
                    engine.peers.gone(host)
                else:
                    engine.peers.heard(host, now)
            return False
        if stream == engine.wake_stream:
            engine._wake_position = entries[-1][0]
            return False
        sub = engine.subs.get(stream)
        if sub is None or sub.position is None:
            return False
        sub.position = entries[-1][0]
        self._deliver_to(sub, entries)
        return len(entries) >= engine.read_count

    def _deliver_to(self, sub: Subscription, entries: Entries) -> None:
        """Hand `sub`'s room what other processes published: consecutive updates in one
        call, each other entry in order."""
        engine, room = self.engine, sub.room
        now_ms = time.time() * 1000
        updates: list[bytes] = []  # consecutive updates from others, applied together
        for entry_id, fields in entries:
            host = fields.get(b"h")
            if host is None or host == engine.host:
                continue  # ours: already applied and broadcast here
            engine.peers.heard(host)
            kind, data = fields.get(b"t"), fields.get(b"d", b"")
            if kind == UPDATE:
                updates.append(data)
                lag_ms = max(0.0, now_ms - parse_id(entry_id)[0])
                engine.lag_ms = round(lag_ms, 1)
                metrics.FANOUT_LAG.observe(lag_ms / 1000)
                continue
            _apply_updates(room, updates)
            try:
                self._apply_entry(sub, kind, data, host, fields.get(b"u"))
            except Exception:
                # One bad entry must not stop the reader for every other document.
                log.exception("fanout: %r: applying a remote %s entry failed", room, kind)
        _apply_updates(room, updates)

    def _apply_entry(
        self, sub: Subscription, kind: bytes | None, data: bytes, host: bytes, user: bytes | None
    ) -> None:
        room = sub.room
        if kind == AWARENESS:
            room.apply_remote_awareness(data, host, user.decode() if user is not None else None)
        elif kind == QUERY:
            for update, local_user in room.local_awareness():
                self.engine.publish_awareness(room.key, update, local_user)
        elif kind == RECONCILE:
            gevent.spawn(self.engine._reconcile, sub)


def _apply_updates(room: Any, updates: list[bytes]) -> None:
    if not updates:
        return
    try:
        room.apply_remote_updates(updates)
    except Exception:
        log.exception("fanout: %r: applying %d remote updates failed", room, len(updates))
    updates.clear()
