"""The document manager: the rooms of this process, shared loads, unloading when empty,
flushing on shutdown.

`join` (a connection) and `hold` (an HTTP API request, for as long as it needs the
document) are the only ways into a room. The first of them for an unloaded document
creates the room and loads it; those that arrive meanwhile wait on the same load, for
at most `LOAD_WAIT` seconds (storage hung: 1011 then, the load goes on). A failed load
fails every waiting one (1011) and is forgotten, so the next tries again; a load that
ends after everyone stopped waiting leaves an idle room, unloaded as usual.

When a room's last connection leaves (and nothing holds it), an unloader waits
`unload_after` seconds, waits for the room's queued updates to be durable, compacts the
log, and only then drops the room. If any of that fails the room stays loaded and the
unloader retries.

With several processes (wsserver/fanout), a room follows its document's stream from
just before its load until it is dropped: `subscribe` comes before the store is read,
so an update published by another process is either in what the load returns or read
from the stream after it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import gevent

from .. import metrics
from ..errors import DocumentDeleted, InternalError
from ..fanout import NoFanout
from ..logs import Throttled
from ..support.backoff import Backoff
from ..support.wait import wait_until
from .key import DocKey
from .room import Room
from .storage import Store, StoreError

if TYPE_CHECKING:
    from ..errors import WsServerError
    from ..fanout import Fanout
    from ..settings import Config
    from ..transport.connection import Connection

log = logging.getLogger(__name__)

UNLOAD_RETRY = (0.5, 30.0)  # Backoff(first, cap) of a failed flush before unloading
# Seconds a join or hold waits for its document's load: the README promises a refusal
# (1011) within 5 s while storage does not answer.
LOAD_WAIT = 5.0
# Seconds an eviction waits for a compaction under way before it gives up (retried).
COMPACTION_WAIT = 10.0
# Seconds a drop (a delete, the trash) keeps closing the joins that still come in.
DROP_WAIT = 5.0


class DocumentManager:
    """Every live document of this process, by DocKey; `join` is the way in."""

    def __init__(
        self,
        store: Store,
        config: Config,
        before_compact: Callable[[DocKey], bool] | None = None,
        on_stored: Callable | None = None,
        fanout: Fanout | NoFanout | None = None,
    ) -> None:
        self.store = store
        self.fanout = fanout if fanout is not None else NoFanout()
        self.before_compact = before_compact  # see Compaction.before_compact
        self.on_stored = on_stored  # see Room.on_stored
        self.unload_after = config.unload_after
        self.compact_after_updates = config.compact_after_updates
        self.compact_after_bytes = config.compact_after_bytes
        self.rooms: dict[DocKey, Room] = {}
        # Documents an operator is deleting (http/admin): nobody may load them meanwhile.
        self.deleting: set[DocKey] = set()
        self._load_errors = Throttled(log)

    def __len__(self) -> int:
        return len(self.rooms)

    def get(self, key: DocKey) -> Room | None:
        """The loaded room of `key`, or None."""
        return self.rooms.get(key)

    def refresh(self, key: DocKey) -> None:
        """Refresh the loaded room of `key` from storage (Room.refresh), if any; raises
        StoreError when storage does not answer within LOAD_WAIT seconds."""
        room = self.rooms.get(key)
        if room is not None and room.ready.ready() and room.ready.exception is None:
            room.refresh(LOAD_WAIT)

    def close(self, key: DocKey, error: WsServerError) -> None:
        """Close every connection of the document `key` with `error` (a WsServerError);
        nothing when it is not loaded here."""
        room = self.rooms.get(key)
        if room is None:
            return
        for conn in list(room.connections):
            conn.close(error)

    def join(self, key: DocKey, conn: Connection, early: bool = False) -> Room:
        """Add `conn` to the room of `key`, loading it if needed; return the room.
        `early` (a client's connection): while the room's copy is still being built from
        what storage held, return once storage has answered: the room answers the
        connection's step 1 from that meanwhile (documents/cold.py)."""
        room = self._loaded(key, early)
        room.join(conn)
        return room

    @contextmanager
    def hold(self, key: DocKey) -> Iterator[Room]:
        """The room of `key`, loaded if needed and kept loaded while the block runs;
        afterwards it is unloaded as usual once nobody uses it."""
        room = self._loaded(key)
        room.holds += 1
        try:
            yield room
        finally:
            room.holds -= 1
            self._unload_when_idle(room)

    def _loaded(self, key, early=False):
        """The room of `key` once loaded (sharing a load under way), its unloader stopped;
        DocumentDeleted (4404) while an operator deletes it. `early`: or once storage's
        state of it can answer a joiner (ColdState.building)."""
        if key in self.deleting:
            raise DocumentDeleted()
        room = self.rooms.get(key)
        if room is None:
            room = Room(
                key,
                self.store,
                self.compact_after_updates,
                self.compact_after_bytes,
                self.before_compact,
                self.on_stored,
                self.fanout,
            )
            self.rooms[key] = room
            metrics.DOCUMENTS_LOADED.inc()
            gevent.spawn(self._load, room)
        deadline = time.monotonic() + LOAD_WAIT
        try:
            if early and not room.ready.ready():  # (gevent.wait yields even then)
                gevent.wait([room.ready, room.cold.available], count=1, timeout=LOAD_WAIT)
            if not (early and room.cold.building and not room.ready.ready()):
                room.ready.get(timeout=max(0.0, deadline - time.monotonic()))
        except gevent.Timeout:
            raise InternalError("document could not be loaded in time") from None
        except DocumentDeleted:
            raise  # in the trash (documents/history.py): 4404, not a failure
        except Exception as e:
            raise InternalError("document could not be loaded") from e
        if room.unloader is not None:
            room.unloader.kill(block=False)
            room.unloader = None
        return room

    def _load(self, room):
        try:
            self.fanout.subscribe(room)
            room.load()
        except Exception as e:
            # Once per 10 s: while storage is down every connection attempt fails here.
            # A document in the trash (DocumentDeleted, 4404) is a refusal, not a failure.
            if not isinstance(e, DocumentDeleted):
                self._load_errors.error(
                    "%r: load failed (%s: %s); refusing with 1011, the next connection retries",
                    room,
                    type(e).__name__,
                    e,
                )
            self._drop(room)
            room.ready.set_exception(e)
            room.cold.failed()  # closes those who joined while it was built
        else:
            room.ready.set(room)
            # Those who asked may all have stopped waiting (LOAD_WAIT): unloaded unless
            # someone joins first (a join stops the unloader).
            self._unload_when_idle(room)

    def leave(self, room: Room, conn: Connection) -> None:
        room.leave(conn)
        if room.ready.ready() and room.ready.exception is not None:
            return  # a failed load, already dropped (a connection that joined early)
        self._unload_when_idle(room)

    def _unload_when_idle(self, room):
        if room.idle and room.unloader is None:
            room.unloader = gevent.spawn(self._unload, room)

    def _unload(self, room):
        gevent.sleep(self.unload_after)
        backoff = Backoff(*UNLOAD_RETRY)
        while room.idle:
            try:
                self.flush(room)
            except StoreError as e:  # storage failing: no traceback per retry
                log.warning("%r: flush before unload failed (%s); keeping it loaded", room, e)
                backoff.sleep()
                continue
            except Exception:
                log.exception("%r: flush before unload failed; keeping it loaded", room)
                backoff.sleep()
                continue
            if not room.idle or room.pending:
                break  # someone joined (or wrote) during the flush: stay loaded
            self._drop(room)
            log.debug("%r unloaded", room)
            return
        room.unloader = None

    def drop(self, key: DocKey) -> int:
        """Close this process's connections to `key` with 4404 (DocumentDeleted:
        providers do not come back with their copy) and drop its room without writing
        anything more (a deleted or trashed document). Returns the number of connections
        closed. Nobody joins meanwhile (`deleting`); a join or an API write already under
        way when the drop began may still enter the room, and is closed in turn, until
        the room is gone or DROP_WAIT seconds have passed. Raises what the room's flush
        raises (StoreError)."""
        mine = key not in self.deleting  # a delete may be holding it already
        self.deleting.add(key)
        try:
            room = self.rooms.get(key)
            closed = len(room.connections) if room is not None else 0
            deadline = time.monotonic() + DROP_WAIT
            while True:
                self.close(key, DocumentDeleted())
                if self.evict(key, compact=False) or time.monotonic() >= deadline:
                    break
                gevent.sleep(0.02)
        finally:
            if mine:
                self.deleting.discard(key)
        return closed

    def evict(self, key: DocKey, compact: bool = True) -> bool:
        """Drop the room of `key` now if nobody uses it; True when no room of
        `key` is loaded afterwards.

        The region registry releases a document's claim only once this returns True:
        every update of the room is durable first, so the next region loads it all from
        storage, and this process keeps no copy that a later join could be served stale.
        `compact=False` after a lost claim: another region may have written meanwhile,
        and a snapshot of this copy would overwrite what it stored. Raises when the
        flush fails; the room then stays loaded (its unloader restarted) and the caller
        retries.
        """
        room = self.rooms.get(key)
        if room is None:
            return True
        if not room.idle or not room.ready.ready():
            return False
        if room.unloader is not None:
            room.unloader.kill()
            room.unloader = None
        try:
            room.wait_durable()
            gevent.sleep(0)  # let a compaction spawned by the last durable update start
            if not wait_until(lambda: not room.compacting, COMPACTION_WAIT, interval=0.01):
                raise StoreError(f"{room!r}: a compaction is still running")
            if compact:
                room.compact()
        except BaseException:
            self._unload_when_idle(room)
            raise
        if not room.idle or room.pending:
            return False
        # A dropped room must never write a snapshot again (a compaction still scheduled
        # on it would overwrite what the next region stores): nothing left to compact.
        room.log_count = room.log_bytes = room.log_id_sum = 0
        self._drop(room)
        log.debug("%r evicted", room)
        return True

    def _drop(self, room: Room) -> None:
        """Forget `room`: no more joins, no more entries from other processes."""
        if self.rooms.get(room.key) is room:
            del self.rooms[room.key]
            metrics.DOCUMENTS_LOADED.dec()
        self.fanout.unsubscribe(room)

    def flush(self, room: Room) -> None:
        """Wait for the room's queued updates to be durable, then compact its log."""
        room.wait_durable()
        room.compact()

    def shutdown(self, timeout: float) -> bool:
        """Flush every room (connections are already closed); False if time ran out."""
        ok = True
        with gevent.Timeout(timeout, False):
            for room in list(self.rooms.values()):
                if not room.ready.ready() or room.ready.exception is not None:
                    continue
                try:
                    self.flush(room)
                except Exception:
                    ok = False
                    log.exception(
                        "%r: flush at shutdown failed (its updates are durable; "
                        "the log is not compacted)",
                        room,
                    )
            return ok
        log.error("shutdown: flushing rooms took longer than %.1fs", timeout)
        return False
