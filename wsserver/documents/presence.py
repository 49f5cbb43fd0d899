"""A room's awareness traffic: what is relayed to whom, and the renewals.

A client's awareness change is applied and relayed to every connection of the room and
published to the other processes serving the document; another process's change
(`apply_remote`) is relayed to our connections only. Either way only the entries their
owner may send pass (awareness_owners.py). A closed connection or a vanished process
takes exactly its own states with it.

A client coming back (its provider removed every other client when its socket closed)
makes the room renew the others (`_schedule_renewal`), and is renewed itself
(`_renew_clients`); the answers to a renewal go to the connections that came back only
(`_relay`): a bounded cost. See RETURN_WINDOW.

Limits: one room's, in one process. It sends through the room (`Room.broadcast`,
`Room.send_to`) and only queues frames; the one greenlet it starts is a pending
renewal, which ends by itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING

import gevent

from ..protocol import codec
from ..protocol.codec import AwarenessEntry
from .awareness import Awareness
from .awareness_owners import AwarenessOwners, RemotePeer, user_of

if TYPE_CHECKING:
    from ..transport.connection import Connection
    from .awareness_owners import Owner
    from .room import Room

log = logging.getLogger(__name__)

# How long the clock of a removed awareness client is remembered.
AWARENESS_META_TTL_MS = 60_000
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
# it goes to them only (`_relay`), every other connection holds that state.
# Unless that client's state last went to everyone SHARE_INTERVAL seconds ago or more:
# y-protocols drops a peer it has not heard of for 30 s, and a renewed client renews
# itself 15-18 s later.
RETURN_WINDOW = 5.0
SHARE_INTERVAL = 10.0


class Presence:
    """One room's awareness: its states, their owners, and how changes travel."""

    def __init__(self, room: Room) -> None:
        self.room = room
        self.awareness = Awareness()
        self.owners = AwarenessOwners(self.awareness, self._came_back)
        self._renewal: gevent.Greenlet | None = None  # a pending `_renew_local`
        self._renewed_at = 0.0  # time.monotonic() of the last one
        self._returned: dict[Connection, float] = {}  # conn -> when it came back
        self._shared_at: dict[int, float] = {}  # client id -> when its state last went to all

    def states_message(self) -> bytes | None:
        """The awareness message carrying every present state; None when there is none."""
        states = self.awareness.states
        return codec.awareness(self.awareness.encode(list(states))) if states else None

    def joined(self, conn: Connection) -> None:
        """A provider (re)connecting: it may have removed every other client when its last
        socket closed, also when its id is new here (a restarted process). From its
        join, before it announces itself: another client's renewal may come first."""
        self._returned[conn] = time.monotonic()

    def left(self, conn: Connection) -> None:
        """`conn` left the room (already out of its connections): its states go."""
        self._returned.pop(conn, None)
        ids = self.owners.release(conn)
        if conn.awareness_ignored:
            log.info(
                "%r: ignored %d awareness entries from %s for client ids another "
                "connection announced",
                self.room,
                conn.awareness_ignored,
                conn.peer,
            )
        if ids:
            removal = self._remove(ids)
            self.room.fanout.publish_awareness(self.room.key, removal, user_of(conn))
        self._prune_meta()

    def _remove(self, ids: list[int]) -> bytes:
        """Drop these clients' states and tell our connections; the removal sent."""
        self.awareness.remove(ids)
        removal = self.awareness.encode(ids)
        self.room.broadcast(codec.awareness(removal))
        for client_id in ids:
            self._shared_at.pop(client_id, None)
        return removal

    def _prune_meta(self) -> None:
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

    def receive(self, conn: Connection, data: bytes) -> None:
        """Apply and relay the entries of an awareness update that `conn` may send.

        Only a client id's owner changes its state (awareness_owners.py): a connection
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
            renew = [
                e.client_id for e in entries if not e.removal and self.owners.may_renew(conn, e)
            ]
        renewals = self._renewals(conn, entries)
        allowed = [e for e in entries if self.owners.may_announce(conn, e)]
        if allowed:
            if len(allowed) != len(entries):
                data = codec.encode_awareness_entries(allowed)
            self.awareness.apply(allowed)
            self._relay(allowed, data, renewals)
            self.room.fanout.publish_awareness(self.room.key, data, user_of(conn))
        if len(allowed) != len(entries):
            self._refuse(conn, entries)
        if renew:
            self._renew_clients(conn, renew)

    def apply_remote(self, data: bytes, host: bytes, user: str | None) -> None:
        """An awareness update relayed by the process `host` for a connection of `user`
        there: the entries its owner may send, relayed to our connections. A removal
        ends that process's ownership of the client id (its connection closed), so the
        client may come back through any process."""
        peer = self.owners.peer(host, user)
        entries = codec.parse_awareness_update(data)
        renewals = self._renewals(peer, entries)
        allowed = [e for e in entries if self.owners.may_announce(peer, e)]
        if len(allowed) != len(entries):
            self._refuse(peer, entries)
        if not allowed:
            return
        if len(allowed) != len(entries):
            data = codec.encode_awareness_entries(allowed)
        self.awareness.apply(allowed)
        self._relay(allowed, data, renewals)
        freed = self.owners.free_removed(peer, allowed)
        if freed and self.owners.waiting:
            self._hand_over(freed)

    def local(self) -> list[tuple[bytes, str | None]]:
        """[(encoded update, user)]: the states of this process's own clients, one
        update per user; the answer to another process that just loaded the document."""
        by_user = self.owners.local_by_user()
        return [(self.awareness.encode(ids), user) for user, ids in by_user.items()]

    def expire_remote(self, host: bytes) -> None:
        """The process `host` is gone: remove the states it relayed, here only (every
        process does the same on its own)."""
        freed = self.owners.expire(host)
        ids = [i for i in freed if i in self.awareness.states]
        if ids:
            self._remove(ids)
        if freed and self.owners.waiting:
            self._hand_over(freed)

    def _refuse(self, owner: Owner, entries: Iterable[AwarenessEntry]) -> None:
        """Remember refused claims of ids another process owns (AwarenessOwners.refuse).
        Meanwhile the room's clients are renewed for the claimant, as for any client
        coming back: its provider removed them when its socket closed."""
        if self.owners.refuse(owner, entries):
            self._schedule_renewal()

    def _hand_over(self, client_ids: list[int]) -> None:
        """These ids are free again (their process removed them, or was declared gone):
        give each to the connection (or process) whose claim of it was refused last. A
        newer clock claims it at once; a provider's own clock is answered with its
        removal, which it answers by announcing itself with a newer one."""
        for owner, entry in self.owners.waiting_for(client_ids, self.room.connections):
            if self.owners.may_announce(owner, entry):
                self.awareness.apply([entry])
                data = codec.encode_awareness_entries([entry])
                self._relay([entry], data)
                if not isinstance(owner, RemotePeer):
                    self.room.fanout.publish_awareness(self.room.key, data, user_of(owner))
            elif not isinstance(owner, RemotePeer) and entry.client_id not in self.owners.by_id:
                removal = AwarenessEntry(entry.client_id, entry.clock, b"null", True)
                owner.send_message(codec.awareness(codec.encode_awareness_entries([removal])))

    def _renewals(self, owner: Owner, entries: Iterable[AwarenessEntry]) -> set[int]:
        """The client ids of `entries` that only renew a state `owner` holds here (the
        same JSON with a newer clock: how a client answers its renewal) while that state
        went to everyone less than SHARE_INTERVAL ago: see RETURN_WINDOW."""
        states, owners, shared_at = self.awareness.states, self.owners.by_id, self._shared_at
        now = time.monotonic()
        return {
            e.client_id
            for e in entries
            if not e.removal
            and owners.get(e.client_id) is owner
            and states.get(e.client_id) == e.state
            and now - shared_at.get(e.client_id, now - SHARE_INTERVAL) < SHARE_INTERVAL
        }

    def _relay(
        self, entries: list[AwarenessEntry], data: bytes, renewals: Collection[int] = ()
    ) -> None:
        """Send applied `entries` (encoded as `data`) on: the `renewals` among them to the
        connections that came back lately only (RETURN_WINDOW), the others to everyone."""
        now = time.monotonic()
        if renewals:
            returned = self._returned
            for conn in [c for c, at in returned.items() if now - at >= RETURN_WINDOW]:
                del returned[conn]
            if returned:
                renewed = [e for e in entries if e.client_id in renewals]
                message = codec.awareness(codec.encode_awareness_entries(renewed))
                self.room.send_to(returned, message)
            entries = [e for e in entries if e.client_id not in renewals]
            if not entries:
                return
            data = codec.encode_awareness_entries(entries)
        self.room.broadcast(codec.awareness(data))
        shared_at = self._shared_at
        for entry in entries:
            if entry.removal:
                shared_at.pop(entry.client_id, None)
            else:
                shared_at[entry.client_id] = now

    def _renew_clients(self, conn: Connection, client_ids: list[int]) -> None:
        """Send `conn` the removal of its `client_ids` at their last known clocks: a
        y-protocols client answers the removal of its own id by bumping its clock past
        it and announcing its state again, which every peer takes (a removal of its
        own id that a client no longer holds, or with an older clock, changes nothing)."""
        removal = self.awareness.encode_removal(client_ids)
        if removal is not None:
            conn.send_message(codec.awareness(removal))

    def _came_back(self, owner: Owner) -> None:
        """A client seen before claims its id again (AwarenessOwners.on_return)."""
        if not isinstance(owner, RemotePeer):
            self._returned[owner] = time.monotonic()
        self._schedule_renewal()

    def renew(self) -> None:
        """Make this process's clients announce themselves again, with newer clocks,
        soon (see `Room.renew_awareness`)."""
        self._schedule_renewal()

    def _schedule_renewal(self) -> None:
        """A client came back (a claim of an id this room has seen before): the clients
        here may have been removed at their current clocks by that client's provider
        when its socket closed, and it would ignore them until their 15 s renewal. Renew
        them soon, once for every client coming back meanwhile."""
        if self._renewal is None:
            self._renewal = gevent.spawn(self._renew_local)

    def _renew_local(self) -> None:
        try:
            wait = max(RENEW_DELAY, self._renewed_at + RENEW_INTERVAL - time.monotonic())
            gevent.sleep(wait)
            self._renewed_at = time.monotonic()
        finally:
            self._renewal = None
        states = self.awareness.states
        for conn in list(self.room.connections):
            present = [i for i in conn.awareness_ids if i in states]
            if present:
                self._renew_clients(conn, present)
