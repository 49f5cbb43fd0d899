"""The cross-process fan-out engine: what every backend shares.

Every process serving a document subscribes to that document's *stream* while its room
is loaded. The room decides what goes out (documents/room.py, the fan-out rule): an
update accepted from a client is published once it is durable; an awareness change from
a client is published as it is relayed. This engine carries the entries between
processes and hands what other processes published back to the room, which applies it
and broadcasts to its own connections only what changed (so nothing is broadcast twice,
whatever path it came by). Entries carry the publishing process's `host` id, and a
process skips its own (python-socketio's pub/sub managers do the same with `host_id`).

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
  process; every process writes an `alive` entry every `heartbeat` seconds, and the
  states of a process not heard from for `host_ttl` seconds are removed (a process
  killed with kill -9 leaves no state behind for longer than that). A process that
  loads a document, or comes back after an outage, asks the others for their clients'
  states (`query`).

Redis faults never stop collaboration inside a process: nothing here is waited on by a
room or a message loop. Publishing is queued for a publisher greenlet, which runs each
update's `on_sent` (the room's echo) once the update is in the stream or could not be
put there; while Redis is down nothing is sent (no timeouts paid per message), updates
that could not be sent are remembered per document (for the `reconcile` entry) and the
reader retries with capped back-off. Subscribing asks Redis for one tail id with a short
timeout, and not at all while Redis is known to be down. Errors are logged at most once per 10 s.

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
from collections import deque
from collections.abc import Callable

import gevent
from gevent.event import Event

from .. import metrics
from ..logs import Throttled
from ..support.backoff import Backoff
from ..support.liveness import Beat, Liveness
from ..support.redis import FailFast

log = logging.getLogger(__name__)

# Entry kinds (field "t"); "h" is the publishing host, "d" the payload.
UPDATE = b"u"  # a durable Yjs update
AWARENESS = b"a"  # an awareness update (y-protocols encoding)
QUERY = b"q"  # "send me your clients' awareness states"
RECONCILE = b"r"  # "I could not publish some updates of this document: reload it"
ALIVE = b"h"  # heartbeat on the hosts stream
BYE = b"x"  # clean shutdown on the hosts stream: drop my clients' states now

RECONNECT_RETRY = (0.1, 2.0)  # Backoff(first, cap) of the reader's reconnects
MAX_QUEUED = 10_000  # publish queue; beyond it the oldest are dropped (and reconciled)
BATCH = 512  # entries per publish round trip

Fields = dict[bytes, bytes]
OnSent = Callable[[], object] | None
Queued = tuple[str, bytes, Fields, OnSent]  # waiting for the publisher


def parse_id(entry_id):
    """A stream id ("1700000000000-3", str or bytes) as a comparable (ms, seq)."""
    if isinstance(entry_id, bytes):
        entry_id = entry_id.decode()
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class Subscription:
    """One loaded document's stream: its room and the last id read (None: unknown,
    the subscription must be resynced)."""

    __slots__ = ("room", "stream", "position")

    def __init__(self, room, stream, position):
        self.room = room
        self.stream = stream
        self.position = position


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
        # (stream, kind, fields, on_sent) waiting for the publisher
        self._queue: deque[Queued] = deque()
        self._wake_publisher = Event()
        self._unpublished: set[str] = set()  # streams with updates that could not be published
        self._alive: dict[bytes, float] = {}  # other host -> monotonic time last heard from
        self._errors = Throttled(log)
        self._closed = False
        self._down_since = None
        self.lag_ms = None  # delivery delay of the last entry read from another process
        self.resyncs = 0
        self._greenlets: list[gevent.Greenlet] = []

    # --- names (a backend may override) ---------------------------------------------

    def stream_of(self, key):
        raise NotImplementedError

    hosts_stream = None
    wake_stream = None

    # --- life cycle -----------------------------------------------------------------

    def start(self):
        try:
            self._connect()
            self._recovered()
        except Exception as e:
            self._failed("connect", e)
        self._greenlets = [gevent.spawn(self._read_loop), gevent.spawn(self._publish_loop)]
        self._beat = self.liveness.subscribe("fan-out", self._heartbeat)
        if self._own_liveness:
            self.liveness.start()
        return self

    def close(self, timeout=2.0):
        """Publish what is queued (awareness removals of the clients just closed) and a
        goodbye, within `timeout`; then stop."""
        deadline = time.monotonic() + timeout
        while self._queue and self.state == "up" and time.monotonic() < deadline:
            self._wake_publisher.set()
            gevent.sleep(0.01)
        if self.state == "up":
            self._send([(self.hosts_stream, {b"h": self.host, b"t": BYE})])
        self._closed = True
        if self._beat is not None:
            self._beat.cancel()
        if self._own_liveness:
            self.liveness.stop()
        while self._queue:  # not sent in time: their callbacks still run, in order
            self._lost(*self._dropped(self._queue.popleft()))
        for greenlet in self._greenlets:
            greenlet.kill(block=False)
        self._disconnect()

    # --- what rooms and the room manager call ---------------------------------------

    def subscribe(self, room):
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

    def unsubscribe(self, room):
        stream = self.stream_of(room.key)
        sub = self.subs.get(stream)
        if sub is not None and sub.room is room:
            del self.subs[stream]

    def publish_update(self, key, update, on_sent=None):
        """`update` is durable: let the other processes apply it. `on_sent()` runs once
        it is appended to the stream, or could not be (Redis down or failing: it is then
        announced for reconciliation), in publishing order; never blocks."""
        self._enqueue(self.stream_of(key), UPDATE, update, on_sent)

    def publish_awareness(self, key, update, user=None):
        """An awareness update from a connection of `user` (token `sub`, or None)."""
        self._enqueue(self.stream_of(key), AWARENESS, update, user=user)

    def health(self):
        """What /healthz shows: state, subscriptions, lag; never asks Redis."""
        return {
            "state": self.state,
            "streams": len(self.subs),
            "lag_ms": self.lag_ms,
            "queued": len(self._queue),
            "unpublished": len(self._unpublished),
            "peers": len(self._alive),
            "resyncs": self.resyncs,
            "down_for_s": (
                round(time.monotonic() - self._down_since, 1)
                if self._down_since is not None
                else None
            ),
        }

    # --- publishing -----------------------------------------------------------------

    def _enqueue(self, stream, kind, data, on_sent=None, user=None):
        if self._closed or (self.state != "up" and not self._queue):
            # Nothing queued ahead of it (whose `on_sent` must run first): drop it now.
            self._lost(stream, kind, on_sent)
            return
        if len(self._queue) >= MAX_QUEUED:
            self._lost(*self._dropped(self._queue.popleft()))
        fields = {b"h": self.host, b"t": kind, b"d": data}
        if user is not None:
            fields[b"u"] = user.encode()
        self._queue.append((stream, kind, fields, on_sent))
        self._wake_publisher.set()

    @staticmethod
    def _dropped(entry):
        stream, kind, _, on_sent = entry
        return stream, kind, on_sent

    def _lost(self, stream, kind, on_sent=None):
        """An entry that will not be sent: updates are announced for reconciliation
        later; awareness is renewed by the clients, and answered to a query."""
        if kind == UPDATE:
            self._unpublished.add(stream)
        self._done(on_sent)

    @staticmethod
    def _done(on_sent):
        if on_sent is not None:
            try:
                on_sent()
            except Exception:
                log.exception("fanout: a publish callback failed")

    def _publish_loop(self):
        while not self._closed:
            self._wake_publisher.wait()
            self._wake_publisher.clear()
            while self._queue:
                batch = []
                while self._queue and len(batch) < BATCH:
                    batch.append(self._queue.popleft())
                if self.state != "up":
                    for entry in batch:
                        self._lost(*self._dropped(entry))
                    continue
                if self._send([(stream, fields) for stream, _, fields, _ in batch]):
                    for _, _, _, on_sent in batch:
                        self._done(on_sent)
                else:
                    for entry in batch:
                        self._lost(*self._dropped(entry))

    def _send(self, items):
        try:
            self._publish(items)
            return True
        except Exception as e:
            self._failed("publish", e)
            return False

    # --- reading --------------------------------------------------------------------

    def _read_loop(self):
        backoff = Backoff(*RECONNECT_RETRY)
        last_read = time.monotonic()
        while not self._closed:
            if self.state != "up":
                try:
                    self._connect()
                    self._recovered()
                except Exception as e:
                    self._failed("reconnect", e)
                    backoff.sleep()
                    continue
                backoff.reset()
            try:
                self._resync_unknown()
                if time.monotonic() - last_read > self.retention_seconds / 2:
                    self._check_trimmed()  # this process was stalled: were we trimmed past?
                positions = {
                    s.stream: s.position for s in list(self.subs.values()) if s.position is not None
                }
                positions[self.hosts_stream] = self._hosts_position
                positions[self.wake_stream] = self._wake_position
                batches = self._read(positions, self.block_ms)
                last_read = time.monotonic()
            except Exception as e:
                self._failed("read", e)
                continue
            full = []
            for stream, entries in batches:
                if self._deliver(stream, entries):
                    full.append(stream)
            if full:
                self._check_trimmed(full)

    def _deliver(self, stream, entries):
        """Apply entries read from `stream`; True when the read was capped (the reader
        may be behind: check for trimming)."""
        if stream == self.hosts_stream:
            self._hosts_position = entries[-1][0]
            now = time.monotonic()
            for _, fields in entries:
                host = fields.get(b"h")
                if host == self.host:
                    continue
                if fields.get(b"t") == BYE:
                    self._forget_host(host)
                else:
                    self._alive[host] = now
            return False
        if stream == self.wake_stream:
            self._wake_position = entries[-1][0]
            return False
        sub = self.subs.get(stream)
        if sub is None or sub.position is None:
            return False
        sub.position = entries[-1][0]
        room = sub.room
        now_ms = time.time() * 1000
        updates = []  # consecutive updates from others, applied together
        for entry_id, fields in entries:
            host = fields.get(b"h")
            if host == self.host:
                continue  # ours: already applied and broadcast here
            self._alive[host] = time.monotonic()
            kind, data = fields.get(b"t"), fields.get(b"d", b"")
            if kind == UPDATE:
                updates.append(data)
                lag_ms = max(0.0, now_ms - parse_id(entry_id)[0])
                self.lag_ms = round(lag_ms, 1)
                metrics.FANOUT_LAG.observe(lag_ms / 1000)
                continue
            self._apply_updates(room, updates)
            try:
                if kind == AWARENESS:
                    user = fields.get(b"u")
                    room.apply_remote_awareness(
                        data, host, user.decode() if user is not None else None
                    )
                elif kind == QUERY:
                    for update, user in room.local_awareness():
                        self.publish_awareness(room.key, update, user)
                elif kind == RECONCILE:
                    gevent.spawn(self._reconcile, sub)
            except Exception:
                # One bad entry must not stop the reader for every other document.
                log.exception("fanout: %r: applying a remote %s entry failed", room, kind)
        self._apply_updates(room, updates)
        return len(entries) >= self.read_count

    def _apply_updates(self, room, updates):
        if not updates:
            return
        try:
            room.apply_remote_updates(updates)
        except Exception:
            log.exception("fanout: %r: applying %d remote updates failed", room, len(updates))
        updates.clear()

    def _resync_unknown(self):
        """Give every subscription whose position is unknown a fresh one, then reload
        its document from the store (what was published before that id is stored).
        Its clients announce themselves again (`Room.renew_awareness`): after an outage
        longer than `host_ttl` the other processes removed them, at the clocks the
        answers to a `query` carry, which their clients ignore."""
        for sub in list(self.subs.values()):
            if sub.position is None:
                sub.position = self._tail(sub.stream)
                self._enqueue(sub.stream, QUERY, b"")
                sub.room.renew_awareness()
                gevent.spawn(self._reconcile, sub)

    def _check_trimmed(self, streams=None):
        subs = [self.subs[s] for s in (streams or list(self.subs)) if s in self.subs]
        subs = [s for s in subs if s.position is not None]
        if not subs:
            return
        for stream in self._trimmed_past({s.stream: s.position for s in subs}):
            log.warning(
                "fanout: stream %s was trimmed past this process's position; "
                "reloading the document from the store",
                stream,
            )
            self.subs[stream].position = None

    def _reconcile(self, sub):
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

    def _recovered(self):
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
        unpublished, self._unpublished = self._unpublished, set()
        for stream in unpublished:
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
        now = time.monotonic()
        for host, seen in list(self._alive.items()):
            if now - seen > self.host_ttl:
                log.info(
                    "fanout: no news from process %s for %.0fs; removing its "
                    "clients' awareness states",
                    host.decode(),
                    now - seen,
                )
                self._forget_host(host)

    def _forget_host(self, host):
        self._alive.pop(host, None)
        for sub in list(self.subs.values()):
            try:
                sub.room.expire_remote_awareness(host)
            except Exception:
                log.exception("fanout: %r: removing a process's awareness states failed", sub.room)

    # --- faults ---------------------------------------------------------------------

    def _failed(self, what, error):
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

    def _connect(self):
        raise NotImplementedError

    def _disconnect(self):
        """Release connections."""

    def _tail(self, stream):
        raise NotImplementedError

    def _publish(self, items):
        raise NotImplementedError

    def _read(self, positions, block_ms):
        raise NotImplementedError

    def _trimmed_past(self, positions):
        raise NotImplementedError

    def _trim(self):
        raise NotImplementedError


class NoFanout:
    """One process per region (no `redis`): nothing to share. Same interface."""

    enabled = False

    def subscribe(self, room):
        pass

    def unsubscribe(self, room):
        pass

    def publish_update(self, key, update, on_sent=None):
        if on_sent is not None:
            on_sent()

    def publish_awareness(self, key, update, user=None):
        pass

    def health(self):
        return {"state": "off"}

    def start(self):
        return self

    def close(self, timeout=0):
        pass
