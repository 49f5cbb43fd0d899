"""What a backend answers and writes besides the pipeline (base.py): a document's
stored state as a `Loaded` (`loaded`), and the snapshot a compaction writes
(`compacted`)."""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable
from typing import Any

from ...errors import DocumentDeleted
from ..ydoc import fold  # the backends fold with it: pending structs kept


# id_sum: the sum of the log rows' ids, which with log_count identifies the set of rows
# a process has seen (see `Store.compact`). deleted_at: when the document was moved to
# the trash (time.time()), None when it is not there.
class Loaded(
    namedtuple(
        "Loaded", "updates last_id log_count log_bytes id_sum deleted_at", defaults=(0, None)
    )
):
    __slots__ = ()

    def live(self) -> Loaded:
        """Itself, or DocumentDeleted (4404) for a document in the trash (a room's load:
        documents/history.py)."""
        if self.deleted_at is not None:
            raise DocumentDeleted()
        return self


def loaded(snapshot: bytes | None, rows: list[Any], deleted_at: float | None = None) -> Loaded:
    """The `Loaded` of a stored snapshot (or None) and log rows [(id, update)], oldest
    first: what every backend's `_load` answers."""
    updates = ([snapshot] if snapshot is not None else []) + [update for _, update in rows]
    return Loaded(
        updates,
        rows[-1][0] if rows else 0,
        len(rows),
        sum(len(update) for _, update in rows),
        sum(row_id for row_id, _ in rows),
        deleted_at,
    )


def compacted(
    stored_snapshot: bytes | None,
    live: bytes | None,
    live_rows: tuple[int, int] | None,
    stored_rows: tuple[int, int],
    read_rows: Callable[[], list[bytes]],
) -> bytes:
    """The snapshot a compaction writes; every backend's `_compact` asks this inside
    the transaction that then replaces the snapshot and deletes the rows.

    `stored_snapshot`: the snapshot stored now (None: none); `live`, `live_rows`: the
    caller's live copy (or None) and (count, sum of ids) of the log rows it holds;
    `stored_rows`: (count, sum of ids) of the stored rows the compaction covers;
    `read_rows()`: those rows' updates, oldest first. The live copy stands for the rows
    only when it holds exactly the stored ones; even then it is merged with the stored
    snapshot, which another process may have written after this one loaded (folding in
    rows this copy never saw), so that snapshot's content is never overwritten.
    """
    base = [stored_snapshot] if stored_snapshot is not None else []
    if live is not None and live_rows is not None and tuple(stored_rows) == tuple(live_rows):
        return fold(base + [live]) if base else live
    return fold(base + read_rows())
