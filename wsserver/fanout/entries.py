"""What the fan-out's streams carry: entry kinds, stream ids, and one loaded document's
subscription (its room and the last id read)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Entry kinds (field "t"); "h" is the publishing host, "d" the payload, "u" the user.
UPDATE = b"u"  # a durable Yjs update
AWARENESS = b"a"  # an awareness update (y-protocols encoding)
QUERY = b"q"  # "send me your clients' awareness states"
RECONCILE = b"r"  # "I could not publish some updates of this document: reload it"
ALIVE = b"h"  # heartbeat on the hosts stream
BYE = b"x"  # clean shutdown on the hosts stream: drop my clients' states now

Fields = dict[bytes, bytes]
OnSent = Callable[[], object] | None
Queued = tuple[str, bytes, Fields, OnSent]  # (stream, kind, fields, on_sent) to publish


def parse_id(entry_id: str | bytes) -> tuple[int, int]:
    """A stream id ("1700000000000-3", str or bytes) as a comparable (ms, seq)."""
    if isinstance(entry_id, bytes):
        entry_id = entry_id.decode()
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class Subscription:
    """One loaded document's stream: its room and the last id read (None: unknown,
    the subscription must be resynced)."""

    __slots__ = ("room", "stream", "position")

    def __init__(self, room: Any, stream: str, position: str | None) -> None:
        self.room = room  # a documents.room.Room (the fan-out does not import it)
        self.stream = stream
        self.position = position
