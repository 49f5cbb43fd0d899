"""A room: one live document, its awareness, and the connections editing it.

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
Awareness follows the same split: a client's change is relayed to every connection and
published; another process's change (`apply_remote_awareness`) is relayed to our
connections only, under the same ownership rule (`_may_announce`), its owner being a
`RemotePeer`: that process, for one user. A closed connection or a vanished process
takes exactly its own states with it; a client coming back is renewed, and renews the
others (`_receive_awareness`, `_schedule_renewal`), whose answers go to the connections
that came back only (`_relay_awareness`: a bounded cost).

Once an update is durable, `on_stored(key, created)` (when given) learns of it:
`created` is True for the first update stored of a document storage had nothing of
(the webhooks' document.changed and document.created).

Nothing here switches greenlets while a pycrdt transaction is open: `apply_update`
and `get_update` are single calls, and broadcasting only queues frames.
"""

from __future__ import annotations

import logging
import time
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
from . import ydoc
from .awareness import Awareness
from .storage import StoreError

if TYPE_CHECKING:
    from ..protocol.codec import Message
    from ..transport.connection import Connection

log = logging.getLogger(__name__)

STORAGE = "storage"
API = "api"
# The longest a flush, an unload or an eviction waits for this room's updates to be
# committed before it gives up (and retries later): a store that cannot commit must
# never hold a document's registry lock, a handshake or a shutdown for ever.
DURABLE_TIMEOUT = 5.0
# How long the clock of a removed awareness client is remembered.
AWARENESS_META_TTL_MS = 60_000
# Awareness client ids one connection may own (a provider has one; another process's
# relayed ids are bounded by that process's connections instead).
MAX_AWARENESS_IDS = 16
# A returning client makes the room renew its own clients' states (`_renew_local`): at
# least RENEW_DELAY seconds later, so the clients of a failover that come back together
# cost one renewal, and at most one per RENEW_INTERVAL seconds.
RENEW_DELAY = 0.1
RENEW_INTERVAL = 0.5
# What a renewal costs is bounded (a client reconnecting in a loop may cause two a
# second): every client answers it by announcing its state again, and relayed to
# everyone that made N * N frames for N clients (~19,700 frames/s sent on a 100-client
# document; ~1,800 now, against ~670 for their own 15 s renewals). Such an announcement
# (the same state, a newer clock) is only of use to the connections that came back (or
# joined: the id of a provider back on a restarted process is new there) in the last
# RETURN_WINDOW seconds, whose providers removed everyone when their sockets closed; so
# it goes to them only (`_relay_awareness`), every other connection holds that state.
# Unless that client's state last went to everyone SHARE_INTERVAL seconds ago or more:
# y-protocols drops a peer it has not heard of for 30 s, and a renewed client renews
# itself 15-18 s later.
RETURN_WINDOW = 5.0
SHARE_INTERVAL = 10.0


class NotDurable(StoreError):
    """The room's updates were not committed in time; they stay queued."""


class RemotePeer:
    """Another process, for one user (the token `sub` of the connection there, or None),
    as the owner of the awareness client ids it relayed: what `_may_announce` needs of
    an owner."""

    __slots__ = ("host", "principal", "awareness_ids", "awareness_ignored")

    def __init__(self, host, user):
        self.host = host
        self.principal = _User(user) if user is not None else None
        self.awareness_ids = set()
        self.awareness_ignored = 0


class _User:
    __slots__ = ("user",)

    def __init__(self, user):
        self.user = user


def _user_of(owner):
    return owner.principal.user if owner.principal is not None else None


def _same_user(conn, owner):
    """Both are the same user (token `sub`); never for anonymous ones."""
    user = _user_of(conn)
    return user is not None and _user_of(owner) == user


class HalfApplied(Exception):
    """An update failed after changing the document: it must be rebuilt."""


def _apply(doc, update):
    """Apply a Yjs update; every failure becomes InvalidPayload (1007).

    A decoding failure (ValueError) leaves the document untouched. An integration
    failure (RuntimeError, e.g. a block whose parent is a character) may come after
    part of the update was integrated: HalfApplied, chained to the InvalidPayload,
    tells the room to rebuild the document.
    """
    try:
        doc.apply_update(update)
    except ValueError as e:
        raise InvalidPayload("invalid update") from e
    except RuntimeError:
        raise HalfApplied() from InvalidPayload("invalid update")
    except BaseException as e:
        if ydoc.is_panic(e):
            raise HalfApplied() from InvalidPayload("invalid update")
        raise


class Room:
    def __init__(
        self,
        key,
        store,
        compact_after_updates,
        compact_after_bytes,
        before_compact=None,
        on_stored=None,
        fanout=None,
    ):
        self.key = key
        # The other processes serving this document (wsserver/fanout); NoFanout alone.
        self.fanout = fanout if fanout is not None else NoFanout()
        self.peers = {}  # (host, user) of another process -> RemotePeer
        self.store = store
        self.on_stored = on_stored
        self.stored_nothing = False  # set at load: storage held nothing of this document
        # Asked right before each compaction; False refuses it (StoreError): a node that
        # may have lost the document to another region leaves the new owner's log alone
        # (the region registry's `may_compact`).
        self.before_compact = before_compact
        self.compact_after_updates = compact_after_updates
        self.compact_after_bytes = compact_after_bytes
        self.doc = Doc()
        # What the document holds pending (an update that came before its dependency):
        # every snapshot and step 2 includes it (documents/ydoc.py).
        self.unintegrated = ydoc.Unintegrated()
        self.awareness = Awareness()
        # Awareness client id -> the connection that announced it first. Only that
        # connection may set or remove the id's state (see `_may_announce`).
        self.awareness_owners = {}
        self._renewal = None  # the greenlet of a pending `_renew_local`
        self._renewed_at = 0.0  # time.monotonic() of the last one
        self._returned = {}  # connection -> time.monotonic() it came back (a renewal's cause)
        self._shared_at = {}  # client id -> time.monotonic() its state last went to everyone
        # client id another process owns -> (owner, entry): the last claim of it refused,
        # handed over when that process lets it go (`_hand_over`)
        self._waiting = {}
        self.connections = {}  # Connection -> None, in join order
        # Holders that are not connections (HTTP API requests, see DocumentManager.hold):
        # the room is not unloaded while any holds it.
        self.holds = 0
        self.ready = AsyncResult()  # set once loaded; joins wait on it
        self.unloader = None  # the greenlet that will unload the room once it is empty
        # Storage bookkeeping: updates queued but not yet durable, and the log size.
        self.pending = 0
        self.durable = Event()  # set while none of this room's updates is queued
        self.durable.set()
        self.updated = None  # time.time() of the last change stored by this process
        self.last_id = 0
        self.log_count = 0
        self.log_bytes = 0
        self.log_id_sum = 0  # with log_count, identifies the log rows this copy holds
        self.compacting = False
        self.rebuilding = None  # an AsyncResult while the document is rebuilt

    def __repr__(self):
        return f"Room({'/'.join(self.key)})"

    @property
    def idle(self):
        """Nobody uses the room: no connection and no holder."""
        return not self.connections and not self.holds

    # --- loading --------------------------------------------------------------------

    def load(self) -> None:
        """Apply what storage holds of the document (`ydoc.build`: merged in runs, pending
        parts checked once; it yields between runs so a large log does not stall every
        other greenlet for its whole load). InvalidPayload if a stored update is invalid.
        Updates from other processes applied meanwhile (see manager.py) stay: `build`
        applies to this room's document."""
        loaded = self.store.load(self.key)
        self.stored_nothing = not loaded.updates
        try:
            ydoc.build(loaded.updates, self.doc, self.unintegrated, pause=gevent.sleep)
        except (ValueError, RuntimeError) as e:
            raise InvalidPayload("invalid stored update") from e
        self.last_id = loaded.last_id
        self.log_count = loaded.log_count
        self.log_bytes = loaded.log_bytes
        self.log_id_sum = loaded.id_sum
        self.maybe_compact()

    # --- connections ----------------------------------------------------------------

    def join(self, conn: Connection) -> None:
        self._wait_rebuild()
        self.connections[conn] = None
        # A provider (re)connecting: it may have removed every other client when its last
        # socket closed, also when its id is new here (a restarted process). From its
        # join, before it announces itself: another client's renewal may come first.
        self._returned[conn] = time.monotonic()
        conn.room = self
        conn.send_message(codec.sync_step1(self.doc.get_state()))
        states = self.awareness.states
        if states:
            conn.send_message(codec.awareness(self.awareness.encode(list(states))))

    def leave(self, conn: Connection) -> None:
        self.connections.pop(conn, None)
        self._returned.pop(conn, None)
        for client_id in conn.awareness_ids:
            del self.awareness_owners[client_id]
        ids = [i for i in conn.awareness_ids if i in self.awareness.states]
        conn.awareness_ids.clear()
        if conn.awareness_ignored:
            log.info(
                "%r: ignored %d awareness entries from %s for client ids another "
                "connection announced",
                self,
                conn.awareness_ignored,
                conn.peer,
            )
        if ids:
            self.awareness.remove(ids)
            removal = self.awareness.encode(ids)
            self.broadcast(codec.awareness(removal))
            self.fanout.publish_awareness(self.key, removal, _user_of(conn))
            for client_id in ids:
                self._shared_at.pop(client_id, None)
        self._prune_awareness_meta()

    def _prune_awareness_meta(self):
        """Forget the clocks of clients removed a while ago.

        `meta` keeps the clock of every client id ever seen (as y-protocols does), so a room
        that never empties would grow by one entry per page load, for ever. A removed
        client's clock only matters while its last messages may still be in flight.
        """
        meta, states = self.awareness.meta, self.awareness.states
        if len(meta) <= 2 * len(states) + 64:
            return
        cutoff = time.time() * 1000 - AWARENESS_META_TTL_MS
        for client_id in [c for c, m in meta.items() if c not in states and m.updated < cutoff]:
            del meta[client_id]

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

    def _echo(self, conn, message, frame):
        """The sender's copy of a broadcast, sent later (see `apply_update`)."""
        if conn in self.connections:
            metrics.sent(codec.kind_of(message), len(message), 1)
            conn.send(frame)

    # --- messages -------------------------------------------------------------------

    def receive(self, conn: Connection, message: Message) -> None:
        """Handle one decoded client message from `conn`."""
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
                update = self.unintegrated.full_update(self.doc, message.data)
            except ValueError:
                raise ProtocolViolation("invalid state vector") from None
            conn.send_message(codec.sync_step2(update))
        elif kind == codec.KIND_AWARENESS:
            self._receive_awareness(conn, message.data)
        elif kind == codec.KIND_QUERY_AWARENESS:
            states = self.awareness.states
            if states:
                conn.send_message(codec.awareness(self.awareness.encode(list(states))))

    def _receive_awareness(self, conn, data):
        """Apply and relay the entries of an awareness update that `conn` may send.

        Only a client id's owner changes its state (see `_may_announce`): a connection
        cannot rename or move someone else's cursor, nor remove it. Entries that would
        have changed another connection's client id are dropped and counted
        (`conn.awareness_ignored`); entries that change nothing are dropped silently:
        y-websocket providers send every awareness change they receive back to the
        server, so each connection repeats every other client's states. What is left is
        relayed byte for byte.

        A connection's first awareness update is its provider announcing itself (what
        y-websocket sends on open). Its clients may be coming back: peers then took
        their states as removed at that clock (the provider removes every other
        client when its socket closes, a server removes a closed connection's or a
        dead process's), and y-protocols ignores a state whose clock is not newer. So
        the connection is sent the removal of its own ids at the last clock known for
        them, which y-protocols answers by announcing itself again with a newer clock
        (`_renew_clients`); not for ids another user owns.
        """
        entries = codec.parse_awareness_update(data)
        renew = []
        if not conn.awareness_announced:
            conn.awareness_announced = True
            renew = [e.client_id for e in entries if not e.removal and self._may_renew(conn, e)]
        renewals = self._renewals(conn, entries)
        allowed = [e for e in entries if self._may_announce(conn, e)]
        if allowed:
            if len(allowed) != len(entries):
                data = codec.encode_awareness_entries(allowed)
            self.awareness.apply(allowed)
            self._relay_awareness(allowed, data, renewals)
            self.fanout.publish_awareness(self.key, data, _user_of(conn))
        if len(allowed) != len(entries):
            self._wait_for_remote_ids(conn, entries)
        if renew:
            self._renew_clients(conn, renew)

    def _wait_for_remote_ids(self, owner, entries):
        """Remember `owner`'s refused claims of ids another process owns (`_waiting`).

        An anonymous provider whose process died comes back, through another process,
        with the client id that process still owns (until it is declared gone, after
        its host TTL): it cannot take it over (another anonymous user could be claiming
        it), and once the id is free it would announce itself only at its 15 s renewal.
        So the last such claim is handed over when the id is let go (`_hand_over`).
        Meanwhile the room's clients are renewed for it, as for any client coming back:
        its provider removed them when its socket closed."""
        owners = self.awareness_owners
        waiting = False
        for entry in entries:
            current = owners.get(entry.client_id)
            if not entry.removal and isinstance(current, RemotePeer) and current is not owner:
                self._waiting[entry.client_id] = (owner, entry)
                waiting = True
        if waiting:
            self._schedule_renewal()

    def _hand_over(self, client_ids):
        """These ids are free again (their process removed them, or was declared gone):
        give each to the connection (or process) whose claim of it was refused last. A
        newer clock claims it at once; a provider's own clock is answered with its
        removal, which it answers by announcing itself with a newer one."""
        for client_id in client_ids:
            waiting = self._waiting.pop(client_id, None)
            if waiting is None:
                continue
            owner, entry = waiting
            if isinstance(owner, RemotePeer):
                if self.peers.get((owner.host, _user_of(owner))) is not owner:
                    continue
            elif owner not in self.connections:
                continue
            if self._may_announce(owner, entry):
                self.awareness.apply([entry])
                data = codec.encode_awareness_entries([entry])
                self._relay_awareness([entry], data)
                if not isinstance(owner, RemotePeer):
                    self.fanout.publish_awareness(self.key, data, _user_of(owner))
            elif not isinstance(owner, RemotePeer) and client_id not in self.awareness_owners:
                removal = codec.AwarenessEntry(client_id, entry.clock, b"null", True)
                owner.send_message(codec.awareness(codec.encode_awareness_entries([removal])))

    def _renewals(self, owner, entries):
        """The client ids of `entries` that only renew a state `owner` holds here (the
        same JSON with a newer clock: how a client answers its renewal) while that state
        went to everyone less than SHARE_INTERVAL ago: see RETURN_WINDOW."""
        states, owners, shared_at = self.awareness.states, self.awareness_owners, self._shared_at
        now = time.monotonic()
        return {
            e.client_id
            for e in entries
            if not e.removal
            and owners.get(e.client_id) is owner
            and states.get(e.client_id) == e.state
            and now - shared_at.get(e.client_id, now - SHARE_INTERVAL) < SHARE_INTERVAL
        }

    def _relay_awareness(self, entries, data, renewals=()):
        """Send applied `entries` (encoded as `data`) on: the `renewals` among them to the
        connections that came back lately only (RETURN_WINDOW), the others to everyone."""
        now = time.monotonic()
        if renewals:
            returned = self._returned
            for conn in [c for c, at in returned.items() if now - at >= RETURN_WINDOW]:
                del returned[conn]
            if returned:
                renewed = [e for e in entries if e.client_id in renewals]
                self._send_to(returned, codec.awareness(codec.encode_awareness_entries(renewed)))
            entries = [e for e in entries if e.client_id not in renewals]
            if not entries:
                return
            data = codec.encode_awareness_entries(entries)
        self.broadcast(codec.awareness(data))
        shared_at = self._shared_at
        for entry in entries:
            if entry.removal:
                shared_at.pop(entry.client_id, None)
            else:
                shared_at[entry.client_id] = now

    def _send_to(self, conns, message):
        """Send one y-websocket message to `conns`, encoded once."""
        frame = frames.encode_frame(frames.OP_BINARY, message)
        metrics.sent(codec.kind_of(message), len(message), len(conns))
        for conn in conns:
            conn.send(frame)

    def _may_renew(self, conn, entry):
        """Whether `conn`'s first announcement of `entry`'s client id may be answered
        with its removal: the id is free, or `conn`'s, or its user's (a reconnect the
        server has not noticed yet: the newer clock that follows takes it over)."""
        owner = self.awareness_owners.get(entry.client_id)
        return owner is None or owner is conn or _same_user(conn, owner)

    def _renew_clients(self, conn, client_ids):
        """Send `conn` the removal of its `client_ids` at their last known clocks: a
        y-protocols client answers the removal of its own id by bumping its clock past
        it and announcing its state again, which every peer takes (a removal of its
        own id that a client no longer holds, or with an older clock, changes nothing)."""
        removal = self.awareness.encode_removal(client_ids)
        if removal is not None:
            conn.send_message(codec.awareness(removal))

    def renew_awareness(self):
        """Make this process's clients announce themselves again, with newer clocks:
        other processes removed them (they did not hear from this one for their host
        TTL) and their clients ignore the clocks they removed (wsserver/fanout)."""
        self._schedule_renewal()

    def _schedule_renewal(self):
        """A client came back (a claim of an id this room has seen before): the clients
        here may have been removed at their current clocks by that client's provider
        when its socket closed, and it would ignore them until their 15 s renewal. Renew
        them soon, once for every client coming back meanwhile."""
        if self._renewal is None:
            self._renewal = gevent.spawn(self._renew_local)

    def _renew_local(self):
        try:
            wait = max(RENEW_DELAY, self._renewed_at + RENEW_INTERVAL - time.monotonic())
            gevent.sleep(wait)
            self._renewed_at = time.monotonic()
        finally:
            self._renewal = None
        states = self.awareness.states
        for conn in list(self.connections):
            present = [i for i in conn.awareness_ids if i in states]
            if present:
                self._renew_clients(conn, present)

    def _may_announce(self, conn, entry):
        """Whether `conn` may apply `entry`; claims its client id when that is free.

        The first connection to announce a state for a client id (a newer clock than
        any the room has seen for it) owns the id until it leaves. Another connection
        of the same user (same token `sub`) takes it over with a newer clock: that is a
        provider reconnecting (it keeps its client id) before the server noticed its
        old socket died. Anonymous tokens (no `sub`) never take over. An entry with no
        newer clock changes nothing for anyone but its owner: a copy of a state the
        sender received, dropped without counting. A connection owns at most
        MAX_AWARENESS_IDS ids; a claim past that is dropped and counted.
        """
        client_id = entry.client_id
        owner = self.awareness_owners.get(client_id)
        if owner is conn:
            return True
        meta = self.awareness.meta.get(client_id)
        known = meta.clock if meta is not None else -1
        newer = entry.clock > known
        if owner is None:
            if not newer or entry.removal:
                return False  # a copy, or the removal of a client that is gone
        elif not (newer and _same_user(conn, owner)):
            # a removal with an equal clock also removes a present state (awareness.py)
            if newer or (
                entry.removal and entry.clock == known and client_id in self.awareness.states
            ):
                conn.awareness_ignored += 1
            return False
        if not isinstance(conn, RemotePeer) and len(conn.awareness_ids) >= MAX_AWARENESS_IDS:
            # Every id is kept (and sent to each joiner) while its owner stays: one
            # socket may not grow the room without bound. A provider owns one.
            conn.awareness_ignored += 1
            return False
        if owner is not None:
            owner.awareness_ids.discard(client_id)
        self.awareness_owners[client_id] = conn
        conn.awareness_ids.add(client_id)
        if meta is not None and not entry.removal:
            # a client seen before is back
            if not isinstance(conn, RemotePeer):
                self._returned[conn] = time.monotonic()
            self._schedule_renewal()
        return True

    # --- what other processes send (wsserver/fanout) ---------------------------------

    def apply_remote_updates(self, updates):
        """Updates another process accepted, stored and published, in stream order:
        applied as one (a busy stream delivers many per read), so our clients get one
        message with what changed."""
        self._wait_rebuild()
        self.apply_update(updates[0] if len(updates) == 1 else merge_updates(*updates), STORAGE)

    def apply_remote_awareness(self, data, host, user):
        """An awareness update relayed by the process `host` for a connection of `user`
        there: the entries its owner may send (`_may_announce`), relayed to our
        connections. A removal ends that process's ownership of the client id (its
        connection closed), so the client may come back through any process."""
        key = (host, user)
        peer = self.peers.get(key)
        if peer is None:
            peer = self.peers[key] = RemotePeer(host, user)
        entries = codec.parse_awareness_update(data)
        renewals = self._renewals(peer, entries)
        allowed = [e for e in entries if self._may_announce(peer, e)]
        if len(allowed) != len(entries):
            self._wait_for_remote_ids(peer, entries)
        if not allowed:
            return
        if len(allowed) != len(entries):
            data = codec.encode_awareness_entries(allowed)
        self.awareness.apply(allowed)
        self._relay_awareness(allowed, data, renewals)
        freed = []
        for entry in allowed:
            if entry.removal and self.awareness_owners.get(entry.client_id) is peer:
                del self.awareness_owners[entry.client_id]
                peer.awareness_ids.discard(entry.client_id)
                freed.append(entry.client_id)
        if freed and self._waiting:
            self._hand_over(freed)

    def local_awareness(self):
        """[(encoded update, user)]: the states of this process's own clients, one
        update per user; the answer to another process that just loaded the document."""
        states = self.awareness.states
        by_user = {}
        for client_id, owner in self.awareness_owners.items():
            if not isinstance(owner, RemotePeer) and client_id in states:
                by_user.setdefault(_user_of(owner), []).append(client_id)
        return [(self.awareness.encode(ids), user) for user, ids in by_user.items()]

    def expire_remote_awareness(self, host):
        """The process `host` is gone: remove the states it relayed, here only (every
        process does the same on its own)."""
        ids, freed = [], []
        for key in [k for k in self.peers if k[0] == host]:
            peer = self.peers.pop(key)
            for client_id in peer.awareness_ids:
                if self.awareness_owners.get(client_id) is peer:
                    del self.awareness_owners[client_id]
                    freed.append(client_id)
                    if client_id in self.awareness.states:
                        ids.append(client_id)
        if ids:
            self.awareness.remove(ids)
            self.broadcast(codec.awareness(self.awareness.encode(ids)))
            for client_id in ids:
                self._shared_at.pop(client_id, None)
        if freed and self._waiting:
            self._hand_over(freed)

    # --- the fan-out rule -----------------------------------------------------------

    def apply_update(self, update, origin, changes_only=False, on_durable=None):
        """Apply `update` from `origin` and fan it out by the rule above.

        `changes_only`: store and broadcast what the update changed in the document
        instead of the update itself, and nothing when it changed nothing.
        `on_durable()`: called once the update is committed and broadcast. Returns True
        when something was queued for storage (only then is `on_durable` called).
        """
        if update == codec.EMPTY_UPDATE:
            return False  # a step 2 from a client that has nothing new: nothing to keep or send
        if origin != STORAGE:
            # Yrs ignores bytes after an update: they would be stored and sent on.
            check_one_update(update)
        changes = []
        doc = self.doc  # a rebuild replaces self.doc; the subscription stays on this one
        capture = changes_only or origin == STORAGE
        subscription = doc.observe(lambda event: changes.append(event.update)) if capture else None
        try:
            _apply(doc, update)
        except HalfApplied as e:
            self._rebuild()
            raise e.__cause__ from None
        finally:
            if subscription is not None:
                doc.unobserve(subscription)
        held = self.unintegrated.after_apply(doc, update)
        if origin == STORAGE:
            if changes:
                self.broadcast(
                    codec.sync_update(changes[0] if len(changes) == 1 else merge_updates(*changes))
                )
            return False
        if changes_only:
            if held is not None:
                changes.append(held)  # not integrated yet, but held: store it too
            if not changes:
                return False
            update = changes[0] if len(changes) == 1 else merge_updates(*changes)
        self.pending += 1
        self.durable.clear()
        message = codec.sync_update(update)
        size = len(update)

        def stored(row_id):
            self.pending -= 1
            if not self.pending:
                self.durable.set()
            self.updated = time.time()
            self.last_id = max(self.last_id, row_id)
            self.log_count += 1
            self.log_bytes += size
            self.log_id_sum += row_id
            if not self.fanout.enabled:
                self.broadcast(message)
                if on_durable is not None:
                    on_durable()
            else:
                # The echo confirms the update to its sender (and `on_durable` an API
                # write's 200): with other processes serving the document it waits until
                # the update is in their stream too (or could not be put there: Redis
                # down, caught up from the store later), so a process killed right after
                # a confirmation leaves no confirmed update that the others lack.
                # Everyone else here gets it at once.
                frame = self.broadcast(message, skip=origin)

                def sent():
                    self._echo(origin, message, frame)
                    if on_durable is not None:
                        on_durable()

                self.fanout.publish_update(self.key, update, sent)
            if self.on_stored is not None:
                created, self.stored_nothing = self.stored_nothing, False
                self.on_stored(self.key, created)
            self.maybe_compact()

        self.store.append(self.key, update, stored)
        return True

    def current_update(self) -> bytes:
        """The live copy as one update: every update applied, durable or not yet, and
        its pending parts (documents/ydoc.py)."""
        self._wait_rebuild()
        return self.unintegrated.full_update(self.doc)

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

    def _wait_rebuild(self):
        if self.rebuilding is not None:
            self.rebuilding.get()

    def _rebuild(self):
        """Replace a document that a failed update half-changed by one built from storage.

        Every other update of the room is valid and stored (or queued to be), so the
        store holds exactly the document without the offender's part. Messages and joins
        wait meanwhile; an update already queued is committed first.
        """
        log.warning("%r: an invalid update was partly applied; rebuilding from storage", self)
        self.rebuilding = AsyncResult()
        try:
            self.wait_durable()
            loaded = self.store.load(self.key)
            self.doc, self.unintegrated = ydoc.build(loaded.updates)
        except Exception:
            # The document may still hold the offender's part: say so loudly rather than
            # serve it silently; the next unload drops this copy.
            log.exception("%r: rebuild failed; the in-memory copy may differ from storage", self)
        finally:
            self.rebuilding.set()
            self.rebuilding = None

    # --- compaction -----------------------------------------------------------------

    def needs_compaction(self) -> bool:
        return (
            self.log_count >= self.compact_after_updates
            or self.log_bytes >= self.compact_after_bytes
        )

    def maybe_compact(self) -> None:
        if self.needs_compaction() and not self.compacting:
            gevent.spawn(self._compact_logged)

    def _compact_logged(self):
        try:
            folded = self.compact()
        except Exception:
            # The log stays as it was; the next durable update or the unload retries.
            log.exception("%r: compaction failed", self)
            return
        if folded:
            # Rows that became durable meanwhile found a compaction running and started
            # none: if they are over the threshold, fold them now, not at the next update.
            self.maybe_compact()

    def compact(self) -> bool:
        """Fold the stored log up to the last durable row into one snapshot (see
        `Store.compact`). Returns False when there was nothing to fold or it is not the
        time (a compaction or a rebuild is running). Raises on storage failure; the log
        is then left as it was."""
        if self.compacting or not self.log_count or self.rebuilding is not None:
            return False
        if self.before_compact is not None and not self.before_compact(self.key):
            raise StoreError(f"not compacting {'/'.join(self.key)}: this node may no longer own it")
        self.compacting = True
        try:
            upto, count, size, id_sum = (
                self.last_id,
                self.log_count,
                self.log_bytes,
                self.log_id_sum,
            )
            # The live copy holds every durable row (updates are applied before they are
            # stored); the store uses it if nobody else wrote meanwhile. Not when other
            # processes serve the document too: the store checks the log rows, not the
            # snapshot, and a copy that missed another process's updates (during a Redis
            # outage, before it is caught up) would overwrite the snapshot holding them
            # (tests/test_fanout.py, Redis hung). Folding what is stored is always right.
            live = None if self.fanout.enabled else self.unintegrated.full_update(self.doc)
            self.store.compact(self.key, upto, live, (count, id_sum))
            # Rows that became durable while compacting are still in the log.
            self.log_count -= count
            self.log_bytes -= size
            self.log_id_sum -= id_sum
        finally:
            self.compacting = False
        return True
