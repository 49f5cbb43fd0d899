"""Delivering a durable update: to this process's connections, to the other processes
serving the document, and the echo that confirms it to its sender.

Alone (no fan-out) a durable update goes to every connection at once, its sender
included: y-websocket v4 takes the echo as confirmation, and `on_durable` (an API
write's 200) is called right after. With other processes serving the document, everyone
here but the sender gets it at once; the sender's echo and `on_durable` wait until the
update is in the other processes' stream too (or could not be put there: Redis down,
caught up from the store later), so a process killed right after a confirmation leaves
no confirmed update that the others lack.

Limits: it only queues frames (`Room.broadcast`); what is durable, and when, is the
room's and the store's business (`Room.apply_update`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from .. import metrics
from ..protocol import codec

if TYPE_CHECKING:
    from ..transport.connection import Connection
    from .room import Room


class Delivery:
    """One room's delivery of its durable updates."""

    def __init__(self, room: Room) -> None:
        self.room = room

    def deliver(
        self, update: bytes, origin: Connection | str, on_durable: Callable[[], object] | None
    ) -> None:
        """Send a durable `update` from `origin` (a Connection, or API) by the rules in
        the module doc; `on_durable()` once it is confirmed."""
        room = self.room
        message = codec.sync_update(update)
        if not room.fanout.enabled:
            room.broadcast(message)
            if on_durable is not None:
                on_durable()
            return
        frame = room.broadcast(message, skip=origin)  # type: ignore[arg-type]  # API: nobody
        room.fanout.publish_update(
            room.key, update, partial(self._confirm, origin, message, frame, on_durable)
        )

    def _confirm(
        self,
        origin: Connection | str,
        message: bytes,
        frame: bytes,
        on_durable: Callable[[], object] | None,
    ) -> None:
        """The other processes have the update (or never will): the sender's echo, if it
        is still here, and `on_durable`."""
        connections = self.room.connections
        if origin in connections:
            metrics.sent(codec.kind_of(message), len(message), 1)
            origin.send(frame)
        if on_durable is not None:
            on_durable()
