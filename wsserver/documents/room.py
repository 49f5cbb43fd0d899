"""A room: one live document and the connections editing it.

Every update enters through `apply_update(update, origin)`, and the fan-out rule lives
there and only there:

    origin CLIENT (a Connection)  apply, store, and once durable broadcast to everyone
                                  (the sender too: y-websocket v4 takes the echo as
                                  confirmation)
    origin API                    the same as a client's: the HTTP document API
                                  (wsserver/http/documents.py) writes through here
    origin STORAGE                apply; broadcast what it changed (another process or
                                  node stored it: read from the document's stream
                                  (`apply_remote_updates`, wsserver/fanout), or from
                                  storage after this copy was cut off (`refresh`));
                                  never stored or published again

and "once durable" includes publishing it to the other processes serving the document.
What storage holds is applied by `load` (ydoc.build), not through here: it is neither
stored nor broadcast again.

The room's collaborators own the rest: its awareness and who may change which state
(presence.py, awareness_owners.py), the folding of its stored log (compaction.py), the
delivery of a durable update (delivery.py: the echo waits for the other processes), and
the rebuild of a document an invalid update half-changed (rebuild.py).

Once an update is durable, `on_stored(key, created)` (when given) learns of it:
`created` is True for the first update stored of a document storage had nothing of
(the webhooks' document.changed and document.created).

Nothing here switches greenlets while a pycrdt transaction is open: `apply_update`
and `get_update` are single calls, and broadcasting only queues frames.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from functools import partial
from typing import TYPE_CHECKING

import gevent
from gevent.event import AsyncResult, Event
from pycrdt import Doc, merge_updates

from .. import metrics
from ..errors import InvalidPayload, ProtocolViolation
from ..fanout import NoFanout
from ..protocol import codec
from ..protocol.update import check_one_update
from ..transport import frames
from . import rebuild, ydoc
from .awareness_owners import user_of
from .cold import ColdState
from .compaction import Compaction
from .delivery import Delivery
from .presence import Presence
from .storage import StoreError

if TYPE_CHECKING:
    from ..fanout import Fanout
    from ..protocol.codec import Message
    from ..transport.connection import Connection
    from .awareness import Awareness
    from .awareness_owners import Owner
    from .key import DocKey
    from .storage import Store

STORAGE = "storage"
API = "api"
# The longest a flush, an unload or an eviction waits for this room's updates to be
# committed before it gives up (and retries later): a store that cannot commit must
# never hold a document's registry lock, a handshake or a shutdown for ever.
DURABLE_TIMEOUT = 5.0


class NotDurable(StoreError):
    """The room's updates were not committed in time; they stay queued."""


def _merged(updates: list[bytes]) -> bytes:
    return updates[0] if len(updates) == 1 else merge_updates(*updates)


class Room:
    def __init__(
        self,
        key: DocKey,
        store: Store,
        compact_after_updates: int,
        compact_after_bytes: int,
        before_compact: Callable[[DocKey], bool] | None = None,
        on_stored: Callable[[DocKey, bool], object] | None = None,
        fanout: Fanout | NoFanout | None = None,
    ) -> None:
        self.key = key
        # The other processes serving this document (wsserver/fanout); NoFanout alone.
        self.fanout = fanout if fanout is not None else NoFanout()
        self.store = store
        self.on_stored = on_stored
        self.stored_nothing = False  # set at load: storage held nothing of this document
        self.compaction = Compaction(
            self, compact_after_updates, compact_after_bytes, before_compact
        )
        self.doc: Doc = Doc()
        # What the document holds pending (an update that came before its dependency):
        # every snapshot and step 2 includes it (documents/ydoc.py).
        self.unintegrated = ydoc.Unintegrated()
        self.presence = Presence(self)
        self.delivery = Delivery(self)
        self.connections: dict[Connection, None] = {}  # in join order
        # Holders that are not connections (HTTP API requests, see DocumentManager.hold):
        # the room is not unloaded while any holds it.
        self.holds = 0
        self.ready = AsyncResult()  # set once loaded; joins wait on it
        # Storage's state while the copy is built, then the copy's encoded state (cold.py).
        self.cold = ColdState()
        self.unloader: gevent.Greenlet | None = None  # unloads the room once it is empty
        # Storage bookkeeping: updates queued but not yet durable, and the log size.
        self.pending = 0
        self.durable = Event()  # set while none of this room's updates is queued
        self.durable.set()
        self.updated: float | None = None  # time.time() of the last change stored here
        self.last_id = 0
        self.log_count = 0
        self.log_bytes = 0
        self.log_id_sum = 0  # with log_count, identifies the log rows this copy holds
        self.snapshot_digest: bytes | None = None  # of the snapshot it holds (compaction)
        self.compacting = False
        self.rebuilding: AsyncResult | None = None  # while the document is rebuilt

    def __repr__(self) -> str:
        return f"Room({'/'.join(self.key)})"

    @property
    def idle(self) -> bool:
        """Nobody uses the room: no connection and no holder."""
        return not self.connections and not self.holds

    @property
    def awareness(self) -> Awareness:
        """The awareness states (presence.py)."""
        return self.presence.awareness

    @property
    def awareness_owners(self) -> dict[int, Owner]:
        """Awareness client id -> its owner (awareness_owners.py)."""
        return self.presence.owners.by_id

    # --- loading --------------------------------------------------------------------

    def load(self) -> None:
        """Apply what storage holds of the document (`ydoc.build`: merged in runs, pending
        parts checked once; it yields between runs so a large log does not stall every
        other greenlet for its whole load). InvalidPayload if a stored update is invalid.
        Updates from other processes applied meanwhile (see manager.py) stay: `build`
        applies to this room's document.

        Unless the log is long, connections may join while the copy is built: storage's
        state answers their step 1s, and they are greeted once it is built (cold.py)."""
        loaded = self.store.load(self.key).live()  # in the trash: DocumentDeleted (4404)
        self.stored_nothing = not loaded.updates
        if self.cold.stored(loaded.updates, loaded.log_count):
            self.cold.let_answers_go()
        try:
            ydoc.build(loaded.updates, self.doc, self.unintegrated, pause=gevent.sleep)
        except (ValueError, RuntimeError) as e:
            raise InvalidPayload("invalid stored update") from e
        self.last_id = loaded.last_id
        self.log_count = loaded.log_count
        self.log_bytes = loaded.log_bytes
        self.log_id_sum = loaded.id_sum
        self.snapshot_digest = loaded.snapshot_digest
        joined, missed = self.cold.loaded(self.doc, self.unintegrated)
        for conn in joined:
            if conn in self.connections:
                self._greet(conn)
                if missed is not None:
                    conn.send_message(codec.sync_update(missed))
        self.maybe_compact()

    # --- connections ----------------------------------------------------------------

    def join(self, conn: Connection) -> None:
        self._wait_rebuild()
        self.connections[conn] = None
        self.presence.joined(conn)
        conn.room = self
        if self.cold.building:
            self.cold.joined(conn)  # greeted once the copy is built (`load`)
            return
        self._greet(conn)

    def _greet(self, conn: Connection) -> None:
        conn.send_message(codec.sync_step1(self.doc.get_state()))
        states = self.presence.states_message()
        if states is not None:
            conn.send_message(states)

    def leave(self, conn: Connection) -> None:
        self.connections.pop(conn, None)
        self.presence.left(conn)

    def broadcast(self, message: bytes, skip: Connection | None = None) -> bytes:
        """Send one y-websocket message to every connection but `skip`; encoded once.
        Returns the frame."""
        frame = frames.encode_frame(frames.OP_BINARY, message)
        count = len(self.connections) - (skip in self.connections)
        metrics.sent(codec.kind_of(message), len(message), count)
        for conn in self.connections:
            if conn is not skip:
                conn.send(frame)
        return frame

    def send_to(self, conns: Collection[Connection], message: bytes) -> None:
        """Send one y-websocket message to `conns`, encoded once."""
        frame = frames.encode_frame(frames.OP_BINARY, message)
        metrics.sent(codec.kind_of(message), len(message), len(conns))
        for conn in conns:
            conn.send(frame)

    # --- messages -------------------------------------------------------------------

    def receive(self, conn: Connection, message: Message) -> None:
        """Handle one decoded client message from `conn`."""
        if self.cold.building and self.cold.receive(conn, message, self.ready):
            return  # a step 1 answered from storage's state
        self._wait_rebuild()
        kind = message.kind
        if kind == codec.KIND_UPDATE:
            self.apply_update(message.data, conn)
        elif kind == codec.KIND_STEP2:
            # A reconnecting client's step 2 repeats much of what we have (its whole delete
            # set at least): keep and send only what it changed, if anything.
            self.apply_update(message.data, conn, changes_only=True)
        elif kind == codec.KIND_STEP1:
            try:
                update = self.cold.step2(self.doc, self.unintegrated, message.data)
            except ValueError:
                raise ProtocolViolation("invalid state vector") from None
            conn.send_message(codec.sync_step2(update))
        elif kind == codec.KIND_AWARENESS:
            self.presence.receive(conn, message.data)
        elif kind == codec.KIND_QUERY_AWARENESS:
            states = self.presence.states_message()
            if states is not None:
                conn.send_message(states)

    # --- what other processes send (wsserver/fanout) ---------------------------------

    def apply_remote_updates(self, updates: list[bytes]) -> None:
        """Updates another process accepted, stored and published, in stream order:
        applied as one (a busy stream delivers many per read), so our clients get one
        message with what changed."""
        self._wait_rebuild()
        self.apply_update(_merged(updates), STORAGE)

    def apply_remote_awareness(self, data: bytes, host: bytes, user: str | None) -> None:
        """An awareness update relayed by the process `host` for a connection of `user`
        there (Presence.apply_remote)."""
        self.presence.apply_remote(data, host, user)

    def local_awareness(self) -> list[tuple[bytes, str | None]]:
        """[(encoded update, user)]: the states of this process's own clients, one
        update per user; the answer to another process that just loaded the document."""
        return self.presence.local()

    def expire_remote_awareness(self, host: bytes) -> None:
        """The process `host` is gone: remove the states it relayed, here only."""
        self.presence.expire_remote(host)

    def renew_awareness(self) -> None:
        """Make this process's clients announce themselves again, with newer clocks:
        other processes removed them (they did not hear from this one for their host
        TTL) and their clients ignore the clocks they removed (wsserver/fanout)."""
        self.presence.renew()

    # --- the fan-out rule -----------------------------------------------------------

    def apply_update(
        self,
        update: bytes,
        origin: Connection | str,
        changes_only: bool = False,
        on_durable: Callable[[], object] | None = None,
        author: str | None = None,
    ) -> bool:
        """Apply `update` from `origin` and fan it out by the rule above.

        `changes_only`: store and broadcast what the update changed in the document
        instead of the update itself, and nothing when it changed nothing.
        `on_durable()`: called once the update is committed and broadcast. Returns True
        when something was queued for storage (only then is `on_durable` called).
        `author`: the `sub` stored with it for the versions (default: a client's own).
        """
        if update == codec.EMPTY_UPDATE:
            return False  # a step 2 from a client that has nothing new: nothing to keep or send
        if origin != STORAGE:
            # Yrs ignores bytes after an update: they would be stored and sent on.
            check_one_update(update)
        changes, held = self._integrate(update, capture=changes_only or origin == STORAGE)
        if origin == STORAGE:
            if changes:
                self.broadcast(codec.sync_update(_merged(changes)))
            return False
        if changes_only:
            if held is not None:
                changes.append(held)  # not integrated yet, but held: store it too
            if not changes:
                return False
            update = _merged(changes)
        self.pending += 1
        self.durable.clear()
        author = author if author is not None or isinstance(origin, str) else user_of(origin)
        stored = partial(self._stored, update, origin, on_durable)
        self.store.append(self.key, update, stored, author)
        return True

    def _integrate(self, update: bytes, capture: bool) -> tuple[list[bytes], bytes | None]:
        """Apply `update` to the document: (what it changed, when `capture`; the part of
        it held pending, if any). A half-applied failure rebuilds the document first."""
        changes: list[bytes] = []
        doc = self.doc  # a rebuild replaces self.doc; the subscription stays on this one
        subscription = doc.observe(lambda event: changes.append(event.update)) if capture else None
        self.cold.changed()
        try:
            rebuild.apply(doc, update)
        except rebuild.HalfApplied as e:
            rebuild.rebuild(self)
            raise e.__cause__ from None  # type: ignore[misc]
        finally:
            if subscription is not None:
                doc.unobserve(subscription)
        return changes, self.unintegrated.after_apply(doc, update)

    def _stored(
        self,
        update: bytes,
        origin: Connection | str,
        on_durable: Callable[[], object] | None,
        row_id: int,
    ) -> None:
        """The store committed `update` as row `row_id`: count it, confirm it, tell
        `on_stored`, and compact when the log is due."""
        self.pending -= 1
        if not self.pending:
            self.durable.set()
        self.updated = time.time()
        self.last_id = max(self.last_id, row_id)
        self.log_count += 1
        self.log_bytes += len(update)
        self.log_id_sum += row_id
        self.delivery.deliver(update, origin, on_durable)
        if self.on_stored is not None:
            created, self.stored_nothing = self.stored_nothing, False
            self.on_stored(self.key, created)
        self.maybe_compact()

    def current_update(self) -> bytes:
        """The live copy as one update: every update applied, durable or not yet, and
        its pending parts (documents/ydoc.py)."""
        self._wait_rebuild()
        return self.cold.full_update(self.doc, self.unintegrated)

    def wait_durable(self, timeout: float = DURABLE_TIMEOUT) -> None:
        """Wait until every update this room queued is committed (and echoed); raise
        NotDurable after `timeout` seconds (storage failing: the updates stay queued and
        unconfirmed, the store keeps retrying). Other rooms' updates do not matter."""
        if not self.durable.wait(timeout):
            raise NotDurable(
                f"{'/'.join(self.key)}: {self.pending} updates not durable after {timeout:.0f}s"
            )

    # --- recovery -------------------------------------------------------------------

    def refresh(self, timeout: float | None = None) -> None:
        """Bring this copy up to date with storage, where another node may have written
        while this one was cut off; clients get what changed. Compaction folds from
        storage afterwards (the stored rows are no longer the ones this copy counted).
        `timeout`: StoreError when storage does not answer within it (store.load)."""
        for update in self.store.load(self.key, timeout=timeout).updates:
            self.apply_update(update, STORAGE)

    def _wait_rebuild(self) -> None:
        if self.rebuilding is not None:
            self.rebuilding.get()

    # --- compaction (compaction.py) -------------------------------------------------

    def needs_compaction(self) -> bool:
        return self.compaction.due()

    def maybe_compact(self) -> None:
        """Fold the log in a greenlet of its own when it is due and no fold runs."""
        if self.compaction.due() and not self.compacting:
            gevent.spawn(self.compaction.run_logged)

    def compact(self) -> bool:
        """Fold the stored log now (Compaction.fold)."""
        return self.compaction.fold()
