"""Who may change which awareness state: the owners of a room's awareness client ids.

The first connection to announce a state for a client id (a newer clock than any the
room has seen for it) owns the id until it leaves. Another connection of the same user
(same token `sub`) takes it over with a newer clock: that is a provider reconnecting (it
keeps its client id) before the server noticed its old socket died. Anonymous tokens (no
`sub`) never take over. An id another process relayed is owned by a `RemotePeer` (that
process, for one user) until that process removes it or is declared gone.

A claim of an id another process owns is refused but remembered (`refuse`): the last
one is handed over when the id is let go (`waiting_for`, used by presence.py).

Limits: this only decides and records who owns what; it sends nothing (presence.py
relays) and starts no greenlet. An owner is a Connection or a RemotePeer: anything with
`principal` (None or with `.user`), `awareness_ids` and `awareness_ignored`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, TypeAlias

from ..protocol.codec import AwarenessEntry
from .awareness import Awareness

if TYPE_CHECKING:
    from ..transport.connection import Connection

# Awareness client ids one connection may own (a provider has one; another process's
# relayed ids are bounded by that process's connections instead).
MAX_AWARENESS_IDS = 16


class RemotePeer:
    """Another process, for one user (the token `sub` of the connection there, or None),
    as the owner of the awareness client ids it relayed: what `may_announce` needs of
    an owner."""

    __slots__ = ("host", "principal", "awareness_ids", "awareness_ignored")

    def __init__(self, host: bytes, user: str | None) -> None:
        self.host = host
        self.principal = _User(user) if user is not None else None
        self.awareness_ids: set[int] = set()
        self.awareness_ignored = 0


if TYPE_CHECKING:
    Owner: TypeAlias = Connection | RemotePeer


class _User:
    __slots__ = ("user",)

    def __init__(self, user: str) -> None:
        self.user = user


def user_of(owner: Owner) -> str | None:
    """The token `sub` of an owner; None for an anonymous one."""
    return owner.principal.user if owner.principal is not None else None


def _same_user(conn: Owner, owner: Owner) -> bool:
    """Both are the same user (token `sub`); never for anonymous ones."""
    user = user_of(conn)
    return user is not None and user_of(owner) == user


class AwarenessOwners:
    """The owner of each client id of one room's awareness, and the refused claims."""

    def __init__(self, awareness: Awareness, on_return: Callable[[Owner], None]) -> None:
        self.awareness = awareness
        # Called when a client id seen before is claimed again: a client came back.
        self.on_return = on_return
        self.by_id: dict[int, Owner] = {}  # client id -> the owner that announced it first
        self.peers: dict[tuple[bytes, str | None], RemotePeer] = {}  # (host, user) -> peer
        # client id another process owns -> (owner, entry): the last claim of it refused,
        # handed over when that process lets it go
        self.waiting: dict[int, tuple[Owner, AwarenessEntry]] = {}

    def peer(self, host: bytes, user: str | None) -> RemotePeer:
        """The RemotePeer of `user` on the process `host`, created when new."""
        key = (host, user)
        peer = self.peers.get(key)
        if peer is None:
            peer = self.peers[key] = RemotePeer(host, user)
        return peer

    def may_announce(self, conn: Owner, entry: AwarenessEntry) -> bool:
        """Whether `conn` may apply `entry`; claims its client id when that is free.

        By the rules in the module doc. An entry with no newer clock changes nothing for
        anyone but its owner: a copy of a state the sender received, dropped without
        counting. A refused claim, or one past MAX_AWARENESS_IDS, is counted in
        `conn.awareness_ignored`.
        """
        client_id = entry.client_id
        owner = self.by_id.get(client_id)
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
        self.by_id[client_id] = conn
        conn.awareness_ids.add(client_id)
        if meta is not None and not entry.removal:
            self.on_return(conn)  # a client seen before is back
        return True

    def may_renew(self, conn: Connection, entry: AwarenessEntry) -> bool:
        """Whether `conn`'s first announcement of `entry`'s client id may be answered
        with its removal: the id is free, or `conn`'s, or its user's (a reconnect the
        server has not noticed yet: the newer clock that follows takes it over)."""
        owner = self.by_id.get(entry.client_id)
        return owner is None or owner is conn or _same_user(conn, owner)

    def refuse(self, owner: Owner, entries: Iterable[AwarenessEntry]) -> bool:
        """Remember `owner`'s refused claims of ids another process owns; True when
        there was one.

        An anonymous provider whose process died comes back, through another process,
        with the client id that process still owns (until it is declared gone, after
        its host TTL): it cannot take it over (another anonymous user could be claiming
        it), and once the id is free it would announce itself only at its 15 s renewal.
        So the last such claim is handed over when the id is let go (`waiting_for`)."""
        refused = False
        for entry in entries:
            current = self.by_id.get(entry.client_id)
            if not entry.removal and isinstance(current, RemotePeer) and current is not owner:
                self.waiting[entry.client_id] = (owner, entry)
                refused = True
        return refused

    def waiting_for(
        self, client_ids: Iterable[int], connections: dict[Connection, None]
    ) -> list[tuple[Owner, AwarenessEntry]]:
        """The last refused claims of these freed ids, taken (forgotten here), whose
        claimant is still there (a process still known, a connection in `connections`)."""
        claims = []
        for client_id in client_ids:
            waiting = self.waiting.pop(client_id, None)
            if waiting is None:
                continue
            owner = waiting[0]
            if isinstance(owner, RemotePeer):
                if self.peers.get((owner.host, user_of(owner))) is not owner:
                    continue
            elif owner not in connections:
                continue
            claims.append(waiting)
        return claims

    def release(self, conn: Connection) -> list[int]:
        """`conn` left: forget what it owned; the ids of those with a state."""
        for client_id in conn.awareness_ids:
            del self.by_id[client_id]
        states = self.awareness.states
        ids = [i for i in conn.awareness_ids if i in states]
        conn.awareness_ids.clear()
        return ids

    def free_removed(self, peer: RemotePeer, entries: Iterable[AwarenessEntry]) -> list[int]:
        """The ids `peer` removed in `entries` (applied) that it owned: now free."""
        freed = []
        for entry in entries:
            if entry.removal and self.by_id.get(entry.client_id) is peer:
                del self.by_id[entry.client_id]
                peer.awareness_ids.discard(entry.client_id)
                freed.append(entry.client_id)
        return freed

    def expire(self, host: bytes) -> list[int]:
        """The process `host` is gone: forget its peers; the ids they owned, now free."""
        freed = []
        for key in [k for k in self.peers if k[0] == host]:
            peer = self.peers.pop(key)
            for client_id in peer.awareness_ids:
                if self.by_id.get(client_id) is peer:
                    del self.by_id[client_id]
                    freed.append(client_id)
        return freed

    def local_by_user(self) -> dict[str | None, list[int]]:
        """{user: client ids with a state} of this process's own connections."""
        states = self.awareness.states
        by_user: dict[str | None, list[int]] = {}
        for client_id, owner in self.by_id.items():
            if not isinstance(owner, RemotePeer) and client_id in states:
                by_user.setdefault(user_of(owner), []).append(client_id)
        return by_user
