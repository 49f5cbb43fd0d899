"""Folding a room's stored log into one snapshot: when, whether this node may, and how.

A room counts the log rows it made durable (`Room.last_id`, `log_count`, `log_bytes`,
`log_id_sum`); once either threshold is reached (`compact_after_updates`,
`compact_after_bytes`) the log up to the last durable row is folded into one snapshot
(`Store.compact`), in a greenlet of its own (`Room.maybe_compact`). One fold at a time
per room (`Room.compacting`, which the manager waits on before an unload), none during
a rebuild.

Limits: the counts are what this process made durable or loaded; rows another process
wrote are not counted here (the store checks the rows it folds, see `fold`). A fold
that fails leaves the log as it was; the next durable update or the unload retries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from .storage import StoreError

if TYPE_CHECKING:
    from .key import DocKey
    from .room import Room

log = logging.getLogger(__name__)


class CompactionRefused(StoreError):
    """A fold the region registry did not allow (`before_compact`): this node may no
    longer own the document (its claim's renewal is late, another region may write), so
    it leaves the log alone. Nothing failed; the log is folded once ownership is certain."""


class Compaction:
    """One room's compaction: its thresholds, its owner check, the fold."""

    def __init__(
        self,
        room: Room,
        after_updates: int,
        after_bytes: int,
        before_compact: Callable[[DocKey], bool] | None = None,
    ) -> None:
        self.room = room
        self.after_updates = after_updates
        self.after_bytes = after_bytes
        # Asked right before each fold; False refuses it (StoreError): a node that may
        # have lost the document to another region leaves the new owner's log alone
        # (the region registry's `may_compact`).
        self.before_compact = before_compact

    def due(self) -> bool:
        """The room's log reached a threshold."""
        room = self.room
        return room.log_count >= self.after_updates or room.log_bytes >= self.after_bytes

    def run_logged(self) -> None:
        """Fold, logging a failure (the greenlet `Room.maybe_compact` starts)."""
        try:
            folded = self.fold()
        except CompactionRefused as e:
            # A safety refusal, not a fault: a warning, no traceback.
            log.warning("%r: %s; the next durable update or the unload retries", self.room, e)
            return
        except Exception:
            # The log stays as it was; the next durable update or the unload retries.
            log.exception("%r: compaction failed", self.room)
            return
        if folded:
            # Rows that became durable meanwhile found a compaction running and started
            # none: if they are over the threshold, fold them now, not at the next update.
            self.room.maybe_compact()

    def fold(self) -> bool:
        """Fold the stored log up to the last durable row into one snapshot (see
        `Store.compact`). Returns False when there was nothing to fold or it is not the
        time (a compaction or a rebuild is running). Raises on storage failure; the log
        is then left as it was."""
        room = self.room
        if room.compacting or not room.log_count or room.rebuilding is not None:
            return False
        if self.before_compact is not None and not self.before_compact(room.key):
            raise CompactionRefused(
                f"not compacting {'/'.join(room.key)}: this node may no longer own it"
            )
        room.compacting = True
        try:
            upto, count, size, id_sum = (
                room.last_id,
                room.log_count,
                room.log_bytes,
                room.log_id_sum,
            )
            # The live copy holds every durable row (updates are applied before they are
            # stored); the store uses it if nobody else wrote meanwhile. Not when other
            # processes serve the document too: the store checks the log rows, not the
            # snapshot, and a copy that missed another process's updates (during a Redis
            # outage, before it is caught up) would overwrite the snapshot holding them
            # (tests/test_fanout.py, Redis hung). Folding what is stored is always right.
            live = None if room.fanout.enabled else room.unintegrated.full_update(room.doc)
            room.snapshot_digest = room.store.compact(
                room.key, upto, live, (count, id_sum), room.snapshot_digest
            )
            # Rows that became durable while compacting are still in the log.
            room.log_count -= count
            room.log_bytes -= size
            room.log_id_sum -= id_sum
        finally:
            room.compacting = False
        return True
