"""This node's use of one document (the registry's per-document state, base.py)."""

from __future__ import annotations

from gevent.lock import Semaphore


class Holding:
    """How many connections of this node use the document, whether it holds the claim,
    and the lock that serializes claim, release and eviction of the document."""

    __slots__ = ("count", "claimed", "lost", "lost_to", "generation", "lock", "refreshing")

    def __init__(self) -> None:
        self.count = 0  # open connections (admitted handshakes) of this node
        self.claimed = False  # this node holds the claim in the shared registry
        self.lost = False  # the claim was lost: close, drop the room, then forget
        self.lost_to: str | None = None  # the region that took it, when known
        self.generation = 0  # bumped to cancel a scheduled release
        self.lock = Semaphore()  # serializes claim, release and eviction of the key
        self.refreshing = False  # re-asserted, its room not yet refreshed from storage
