"""The cross-process fan-out engine: what every backend shares.

Every process serving a document subscribes to that document's *stream* while its room
is loaded. The room decides what goes out (documents/room.py, the fan-out rule): an
update accepted from a client is published once it is durable; an awareness change from
a client is published as it is relayed. This engine carries the entries between
processes and hands what other processes published back to the room, which applies it
and broadcasts to its own connections only what changed (so nothing is broadcast twice,
whatever path it came by). Entries carry the publishing process's `host` id (the
process's id, support/liveness.py), and a process skips its own (python-socketio's
pub/sub managers do the same with `host_id`).

Positions, catch-up and reconciliation (the store is the source of truth, the stream
is only the fast path):

- subscribing reads the stream's tail id *before* the room reads the store, so an
  update is either in what the store returns or after that id;
- one reader greenlet, on its own connection, blocks on the streams of every loaded
  document at once and remembers the last id it saw of each;
- after any Redis failure, every subscription is *resynced* once Redis answers again:
  a new tail id, then a reload from the store applied as a remote update (Yjs updates
  are idempotent: clients get only what they lack). The same happens when a stream was
  trimmed past the reader's position, and when another process announces that it could
  not publish some of its updates (a `reconcile` entry, sent once it is reconnected);
- awareness: states announced through other processes are remembered per publishing
  process; on the process's heartbeat every process writes an `alive` entry, and the
  states of a process silent for the process TTL are removed (peers.py). A process that
  loads a document, or comes back after an outage, asks the others for their clients'
  states (`query`).

Redis faults never stop collaboration inside a process: nothing here is waited on by a
room or a message loop. Publishing is queued (publisher.py); the reader (reader.py)
retries with capped back-off. Subscribing asks Redis for one tail id with a short timeout, and not
at all while Redis is known to be down. Errors are logged at most once per 10 s.

Backends implement the wire (see redis_streams.py):

    _connect()                          open or check connections (raises when down)
    _tail(stream) -> id                 the stream's last id ("0-0" when empty)
    _publish(items) -> [id]             append [(stream, fields)] in one round trip
    _read(positions, block_ms)          [(stream, [(id, fields)])] after the positions
    _trimmed_past(positions) -> set     streams trimmed past the given positions
    _trim()                             drop entries older than the retention
    _disconnect()
"""

from __future__ import annotations

import logging
import time
from typing import Any

import gevent

from .. import metrics
from ..logs import Throttled
from ..support.liveness import Beat, Liveness
from ..support.redis import FailFast
from .entries import (
    ALIVE,
    AWARENESS,
    BYE,
    QUERY,
    RECONCILE,
    UPDATE,
    Fields,
    OnSent,
    Subscription,
)
from .peers import Peers
from .publisher import Publisher
from .reader import Entries, Reader

log = logging.getLogger(__name__)

DocKey = tuple[str, str, str]


class Fanout:
    """See the module docstring. `liveness`: the process's heartbeat (support/liveness.py),
    whose id names this process's entries and whose beat writes its alive entry; a
    process silent for its TTL has its awareness states removed. Without one (a fan-out
    built alone) the engine runs a heartbeat of its own with the default timings."""

    enabled = True

    def __init__(
        self,
        liveness: Liveness | None = None,
        block_ms: int = 1000,
        fail_fast: FailFast | None = None,
    ) -> None:
        # The process's Redis outage window (support/redis.py), shared with the limits
        # and the registry: a subscribe on a handshake's path skips Redis while it is
        # open, and this engine's failures and recoveries open and close it too.
        self.fail_fast = fail_fast
        self._own_liveness = liveness is None
        self.liveness = liveness if liveness is not None else Liveness()
        self.host = self.liveness.process.encode()
        self.heartbeat = self.liveness.heartbeat
        self.host_ttl = self.liveness.ttl
        self._beat: Beat | None = None
        self.block_ms = block_ms
        self.state = "starting"  # "up" or "down" once the first connection was tried
        self.subs: dict[str, Subscription] = {}  # stream name -> Subscription
        self.publisher = Publisher(self.host, lambda: self.state == "up", self._send)
        self._queue = self.publisher.queue  # (the same objects: for tests)
        self._unpublished = self.publisher.unpublished
        self.peers = Peers(self.host_ttl, self._forget_host)
        self.reading = Reader(self)
        self._errors = Throttled(log)
        self._closed = False
        self._down_since: float | None = None
        self.lag_ms: float | None = None  # delay of the last entry read from another process
        self.resyncs = 0
        self._greenlets: list[gevent.Greenlet] = []

    # --- names (a backend may override) ---------------------------------------------

    def stream_of(self, key: DocKey) -> str:
        raise NotImplementedError

    hosts_stream = ""
    wake_stream = ""

    # --- life cycle -----------------------------------------------------------------

    def start(self) -> Fanout:
        try:
            self._connect()
            self._recovered()
        except Exception as e:
            self._failed("connect", e)
        self._greenlets = [gevent.spawn(self.reading.run), gevent.spawn(self.publisher.run)]
        self._beat = self.liveness.subscribe("fan-out", self._heartbeat)
        if self._own_liveness:
            self.liveness.start()
        return self

    def close(self, timeout: float = 2.0) -> None:
        """Publish what is queued (awareness removals of the clients just closed) and a
        goodbye, within `timeout`; then stop."""
        self.publisher.drain(timeout)
        if self.state == "up":
            self._send([(self.hosts_stream, {b"h": self.host, b"t": BYE})])
        self._closed = True
        if self._beat is not None:
            self._beat.cancel()
        if self._own_liveness:
            self.liveness.stop()
        self.publisher.close()  # not sent in time: their callbacks still run, in order
        for greenlet in self._greenlets:
            greenlet.kill(block=False)
        self._disconnect()

    # --- what rooms and the room manager call ---------------------------------------

    def subscribe(self, room: Any) -> None:
        """Start following `room`'s document; call before the room reads the store.
        Waits on Redis for one short call at most, not at all while it is down."""
        stream = self.stream_of(room.key)
        position = None
        if self.state == "up" and not (self.fail_fast is not None and self.fail_fast.skip()):
            try:
                position = self._tail(stream)
            except Exception as e:
                self._failed("subscribe", e)
        self.subs[stream] = Subscription(room, stream, position)
        if position is not None:
            self._enqueue(stream, QUERY, b"")  # ask the others for their awareness states
            self._enqueue(self.wake_stream, ALIVE, b"")  # the reader must add this stream

    def unsubscribe(self, room: Any) -> None:
        stream = self.stream_of(room.key)
        sub = self.subs.get(stream)
        if sub is not None and sub.room is room:
            del self.subs[stream]

    def publish_update(self, key: DocKey, update: bytes, on_sent: OnSent = None) -> None:
        """`update` is durable: let the other processes apply it. `on_sent()` runs once
        it is appended to the stream, or could not be (Redis down or failing: it is then
        announced for reconciliation), in publishing order; never blocks."""
        self._enqueue(self.stream_of(key), UPDATE, update, on_sent)

    def publish_awareness(self, key: DocKey, update: bytes, user: str | None = None) -> None:
        """An awareness update from a connection of `user` (token `sub`, or None)."""
        self._enqueue(self.stream_of(key), AWARENESS, update, user=user)

    def health(self) -> dict[str, Any]:
        """What /healthz shows: state, subscriptions, lag; never asks Redis."""
        return {
            "state": self.state,
            "streams": len(self.subs),
            "lag_ms": self.lag_ms,
            "queued": len(self._queue),
            "unpublished": len(self._unpublished),
            "peers": len(self.peers),
            "resyncs": self.resyncs,
            "down_for_s": (
                round(time.monotonic() - self._down_since, 1)
                if self._down_since is not None
                else None
            ),
        }

    # --- publishing -----------------------------------------------------------------

    def _enqueue(
        self, stream: str, kind: bytes, data: bytes, on_sent: OnSent = None, user: str | None = None
    ) -> None:
        self.publisher.enqueue(stream, kind, data, on_sent, user)

    def _send(self, items: list[tuple[str, Fields]]) -> bool:
        try:
            self._publish(items)
            return True
        except Exception as e:
            self._failed("publish", e)
            return False

    # --- reading (reader.py) ---------------------------------------------------------

    def _deliver(self, stream: str, entries: Entries) -> bool:
        return self.reading.deliver(stream, entries)

    # --- catch-up -------------------------------------------------------------------

    def _resync_unknown(self) -> None:
        """Give every subscription whose position is unknown a fresh one, then reload
        its document from the store (what was published before that id is stored).
        Its clients announce themselves again (`Room.renew_awareness`): after an outage
        longer than the TTL the other processes removed them, at the clocks the
        answers to a `query` carry, which their clients ignore."""
        for sub in list(self.subs.values()):
            if sub.position is None:
                sub.position = self._tail(sub.stream)
                self._enqueue(sub.stream, QUERY, b"")
                sub.room.renew_awareness()
                gevent.spawn(self._reconcile, sub)

    def _check_trimmed(self, streams: list[str] | None = None) -> None:
        subs = [self.subs[s] for s in (streams or list(self.subs)) if s in self.subs]
        positions = {s.stream: s.position for s in subs if s.position is not None}
        if not positions:
            return
        for stream in self._trimmed_past(positions):
            log.warning(
                "fanout: stream %s was trimmed past this process's position; "
                "reloading the document from the store",
                stream,
            )
            self.subs[stream].position = None

    def _reconcile(self, sub: Subscription) -> None:
        room = sub.room
        try:
            room.ready.get()
        except Exception:
            return  # the load failed; the room is gone
        if self.subs.get(sub.stream) is not sub:
            return
        self.resyncs += 1
        try:
            room.refresh()
        except Exception:
            log.exception("fanout: %r: reloading from the store failed", room)

    def _recovered(self) -> None:
        """Redis answers again: every position is suspect (it may have restarted empty,
        or kept entries we never read), and others may have missed our updates."""
        if self._down_since is not None:
            log.warning(
                "fanout: redis is reachable again after %.1fs; resyncing %d documents",
                time.monotonic() - self._down_since,
                len(self.subs),
            )
        self._down_since = None
        self.state = "up"
        if self.fail_fast is not None:
            self.fail_fast.answered()
        self._hosts_position = self._tail(self.hosts_stream)
        self._wake_position = self._tail(self.wake_stream)
        for sub in self.subs.values():
            sub.position = None
        for stream in self.publisher.take_unpublished():
            self._enqueue(stream, RECONCILE, b"")

    # --- heartbeat, awareness expiry, trimming --------------------------------------

    def _heartbeat(self) -> None:
        """The process's beat: an alive entry, trimming, and the expiry of processes
        silent for the TTL."""
        if self._closed:
            return
        if self.state == "up":
            self._enqueue(self.hosts_stream, ALIVE, b"")
            try:
                self._trim()
            except Exception as e:
                self._failed("trim", e)
        self.peers.expire()

    def _forget_host(self, host: bytes) -> None:
        for sub in list(self.subs.values()):
            try:
                sub.room.expire_remote_awareness(host)
            except Exception:
                log.exception("fanout: %r: removing a process's awareness states failed", sub.room)

    # --- faults ---------------------------------------------------------------------

    def _failed(self, what: str, error: Exception) -> None:
        if self._closed:
            return
        metrics.REDIS_ERRORS.labels("fanout").inc()
        if self.state != "down":
            self._down_since = time.monotonic()
        self.state = "down"
        if self.fail_fast is not None:
            self.fail_fast.failed()
        self._errors.error(
            "fanout: redis %s failed (%s: %s); local collaboration goes on, "
            "other processes are caught up when it is back",
            what,
            type(error).__name__,
            error,
        )

    # --- backend --------------------------------------------------------------------

    retention_seconds = 60.0
    read_count = 1000
    _hosts_position = "$"
    _wake_position = "$"

    def _connect(self) -> None:
        raise NotImplementedError

    def _disconnect(self) -> None:
        """Release connections."""

    def _tail(self, stream: str) -> str:
        raise NotImplementedError

    def _publish(self, items: list[tuple[str, Fields]]) -> list[bytes]:
        raise NotImplementedError

    def _read(self, positions: dict[str, str], block_ms: int) -> list[tuple[str, Entries]]:
        raise NotImplementedError

    def _trimmed_past(self, positions: dict[str, str]) -> set[str]:
        raise NotImplementedError

    def _trim(self) -> None:
        raise NotImplementedError
