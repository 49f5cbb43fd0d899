"""One document's awareness (presence: who is online, their cursors), as the room keeps it.

The y-protocols rules, applied as y-protocols and pycrdt's `Awareness` apply them: an
entry replaces its client's state when its clock is newer than the last one seen for
that client (0 for a client never seen), and removes it (an empty or JSON null state)
when that clock is newer or equal; `meta` keeps each client's last clock, and when it
came, after its state is gone, so a late copy of an older state is not taken for a new
one (the room forgets old `meta` entries, see `Presence._prune_meta`).

Unlike pycrdt's, a state stays the JSON its client sent, never parsed again: the server
only relays states, and a parsed one held ~1.3 KB per idle connection, parsed twice per
message. Entries come checked (`codec.parse_awareness_update`: JSON, no NaN, bounded
depth) and filtered by ownership (`AwarenessOwners.may_announce`); nothing here can fail.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from typing import NamedTuple

from ..protocol import codec

_NULL = b"null"  # the state of a removed client on the wire


class Meta(NamedTuple):
    clock: int
    updated: int  # time.time() in milliseconds, as y-protocols' lastUpdated


class Awareness:
    __slots__ = ("states", "meta")

    def __init__(self) -> None:
        self.states: dict[int, bytes] = {}  # client id -> its state's JSON (removed: absent)
        self.meta: dict[int, Meta] = {}  # client id -> its last clock, removed clients too

    def apply(self, entries: Iterable[codec.AwarenessEntry]) -> None:
        """Apply checked entries by the rules in the module doc."""
        states, meta = self.states, self.meta
        now = int(time.time() * 1000)
        for entry in entries:
            client_id, clock = entry.client_id, entry.clock
            known = meta.get(client_id)
            last = 0 if known is None else known.clock
            if last < clock or (last == clock and entry.removal and client_id in states):
                if entry.removal:
                    states.pop(client_id, None)
                else:
                    states[client_id] = entry.state
                meta[client_id] = Meta(clock, now)

    def remove(self, client_ids: Iterable[int]) -> None:
        """Drop these clients' states (their connection or process is gone). Their clock
        stays: the removal goes out with it, which clients accept (y-protocols does the
        same for clients other than its own)."""
        for client_id in client_ids:
            self.states.pop(client_id, None)

    def encode(self, client_ids: Iterable[int]) -> bytes:
        """The awareness update carrying these clients' states (`null` for a removed
        one) at their last clock; every id must have been applied once."""
        meta, states = self.meta, self.states
        return codec.encode_awareness_entries(
            [
                codec.AwarenessEntry(client_id, meta[client_id].clock, states.get(client_id, _NULL))
                for client_id in client_ids
            ]
        )

    def encode_removal(self, client_ids: Iterable[int]) -> bytes | None:
        """The awareness update removing these clients at their last clock (None when
        none was applied): a removal only the client itself is sent
        (`Presence._renew_clients`), never applied here."""
        meta = self.meta
        entries = [
            codec.AwarenessEntry(client_id, meta[client_id].clock, _NULL, True)
            for client_id in client_ids
            if client_id in meta
        ]
        return codec.encode_awareness_entries(entries) if entries else None

    def parsed(self) -> dict[int, object]:
        """{client id: state} with every present state parsed (the admin console). A
        number too large for a float (`1e400`) is None, as JSON.stringify makes it:
        Python would write it out as `Infinity`, which no JSON parser takes."""
        return {
            client_id: json.loads(state, parse_float=_finite_or_none)
            for client_id, state in self.states.items()
        }


def _finite_or_none(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None
