"""Read-only connections (a token with `access: "read"`): what reaches the room.

A read-only connection syncs (its step 1 is answered), receives every update and
awareness change, and its own awareness is relayed, so viewers show up. Its document
changes are dropped before the room sees them: never applied, stored, relayed or
echoed (so a provider never takes a read-only edit as confirmed). They are:

    an update message          always
    a step 2 message           when it would change the document (`would_change`);
                               a reconnecting viewer's step 2 repeats the delete set and
                               changes nothing, and is dropped without counting

Each is counted (per connection, and in the process's totals that /healthz shows);
past MAX_DROPPED the connection is closed with 4003, reason `read-only: the token's access
is "read"; its 11 document changes were dropped`, so a broken client learns instead of
editing into the void for ever. The app can know before that: the endpoint tells a
read-only connection its access as it opens (codec.access), as /discovery does.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pycrdt import Doc, get_update

from ..errors import InvalidPayload, ProtocolViolation, ReadOnly
from ..protocol import codec
from .ydoc import delete_ranges

if TYPE_CHECKING:
    from ..handshake.claims import Principal
    from .room import Room

Spans = list[tuple[int, int]]  # merged, sorted [start, end) ranges of one client

log = logging.getLogger(__name__)

# Document changes a read-only connection may send (each dropped) before it is closed.
MAX_DROPPED = 10


def _delete_set(data: bytes, pos: int) -> dict[int, Spans]:
    """The delete set at `data[pos:]` as {client: [(clock, end), ...]}, sorted, with
    touching and overlapping ranges merged (so a covered range lies inside one)."""
    spans: dict[int, Spans] = {}
    for client, clock, length in delete_ranges(data, pos):
        spans.setdefault(client, []).append((clock, clock + length))
    for client, ranges in spans.items():
        merged: Spans = []
        for start, end in sorted(ranges):
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        spans[client] = merged
    return spans


def _covered(spans: Sequence[tuple[int, int]], start: int, end: int) -> bool:
    """True when [start, end) lies inside one of the merged, sorted `spans`."""
    i = bisect_right(spans, (start, float("inf"))) - 1
    return i >= 0 and spans[i][0] <= start and end <= spans[i][1]


def would_change(doc: Doc, update: bytes) -> bool:
    """True when applying the Yjs `update` would change `doc`, which is left untouched.

    The update changes the document when, once what the document's state vector covers
    is cut away, a struct is left (one it lacks), or its delete set deletes something the
    document has not deleted. Costs a diff of the update and, only when the update
    deletes anything, the document's delete set (one pass over its blocks). Parts the
    document holds pending (documents/ydoc.py) are not in its state vector nor in its
    delete set, so re-sending them counts as a change: at worst once per connection. An
    update pycrdt cannot decode raises InvalidPayload (1007), as it would for a writer.
    """
    if update == codec.EMPTY_UPDATE:
        return False
    try:
        # What `doc` lacks: structs past its state vector, then the whole delete set.
        rest = get_update(update, doc.get_state())
    except (ValueError, RuntimeError):
        raise InvalidPayload("invalid update") from None
    try:
        structs, pos = codec.read_var_uint(rest, 0)
        if structs:
            return True
        deletes = [
            (client, clock, clock + length)
            for client, clock, length in delete_ranges(rest, pos)
            if length
        ]
        if not deletes:
            return False
        # The document's own delete set: its update past its own state holds no struct.
        own = doc.get_update(doc.get_state())
        _, pos = codec.read_var_uint(own, 0)
        have = _delete_set(own, pos)
    except ProtocolViolation:
        raise InvalidPayload("invalid update") from None
    return any(not _covered(have.get(client, ()), start, end) for client, start, end in deletes)


class ReadOnlyGuard:
    """One read-only connection's filter: `admits(room, message)` says whether the room
    gets the message; dropped changes are counted and, past MAX_DROPPED, ReadOnly (4003)
    is raised (the endpoint closes with it). `totals` (a Counter shared by the process)
    gets "dropped" and "closed" added."""

    def __init__(self, principal: Principal, peer: str, name: str, totals: Counter[str]) -> None:
        self.principal = principal
        self.peer = peer
        self.name = name
        self.totals = totals
        self.dropped = 0

    def admits(self, room: Room, message: codec.Message) -> bool:
        kind = message.kind
        if kind == codec.KIND_STEP2:
            # During a rebuild room.doc is the copy being replaced: at worst a harmless
            # step 2 is counted once.
            if not would_change(room.doc, message.data):
                return False  # nothing to apply: dropped, not counted
        elif kind != codec.KIND_UPDATE:
            return True
        self.dropped += 1
        self.totals["dropped"] += 1
        if self.dropped == 1:
            log.info(
                "read-only connection %s (document %s) sent a document change: dropped (%s)",
                self.peer,
                self.name,
                self.principal.describe(),
            )
        if self.dropped > MAX_DROPPED:
            self.totals["closed"] += 1
            error = ReadOnly(f"{ReadOnly.reason}; its {self.dropped} document changes were dropped")
            error.detail = self.principal.describe()
            raise error
        return False
