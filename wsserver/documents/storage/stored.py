"""What a backend answers and writes besides the pipeline (base.py): a document's
stored state as a `Loaded` (`loaded`), and the snapshot a compaction writes
(`compacted`)."""

from __future__ import annotations

import hashlib
from collections import namedtuple
from collections.abc import Callable
from typing import Any

from ...errors import DocumentDeleted
from ..ydoc import fold  # the backends fold with it: pending structs kept


# id_sum: the sum of the log rows' ids, which with log_count identifies the set of rows
# a process has seen (see `Store.compact`). deleted_at: when the document was moved to
# the trash (time.time()), None when it is not there. snapshot_digest: the stored
# snapshot's `digest` (None: none), which a compaction is then told the copy holds.
class Loaded(
    namedtuple(
        "Loaded",
        "updates last_id log_count log_bytes id_sum deleted_at snapshot_digest",
        defaults=(0, None, None),
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
        digest(snapshot) if snapshot is not None else None,
    )


def digest(snapshot: bytes) -> bytes:
    """What tells two snapshots apart without keeping them (BLAKE2b, 16 bytes): ~5 ms for
    a 4.2 MB one, and hashlib lets other threads run meanwhile."""
    return hashlib.blake2b(snapshot, digest_size=16).digest()


def compacted(
    stored_snapshot: bytes | None,
    live: bytes | None,
    live_rows: tuple[int, int] | None,
    stored_rows: tuple[int, int],
    read_rows: Callable[[], list[bytes]],
    based_on: bytes | None = None,
) -> bytes:
    """The snapshot a compaction writes; every backend's `_compact` asks this inside
    the transaction that then replaces the snapshot and deletes the rows.

    `stored_snapshot`: the snapshot stored now (None: none); `live`, `live_rows`: the
    caller's live copy (or None) and (count, sum of ids) of the log rows it holds;
    `stored_rows`: (count, sum of ids) of the stored rows the compaction covers;
    `read_rows()`: those rows' updates, oldest first; `based_on`: the `digest` of the
    snapshot the live copy holds (it was built from it, or it is the copy this process
    last wrote). The live copy stands for the rows only when it holds exactly the stored
    ones. It is merged with the stored snapshot, which another process may have written
    after this one loaded (folding in rows this copy never saw), so that snapshot's
    content is never overwritten; unless that snapshot is the one the copy holds. The
    merge decodes and builds both (~265 ms for a 4.2 MB document on the development VM,
    the process held all along: pycrdt keeps the GIL), the digest ~5 ms.
    """
    base = [stored_snapshot] if stored_snapshot is not None else []
    if live is not None and live_rows is not None and tuple(stored_rows) == tuple(live_rows):
        if stored_snapshot is None or digest(stored_snapshot) == based_on:
            return live
        return fold(base + [live])
    return fold(base + read_rows())


def written(folded: bytes, live: bytes | None) -> bytes | None:
    """What a backend's `_compact` answers (`Store.compact`): the digest of the snapshot it
    wrote when that is the caller's live copy, which then holds it; else None."""
    return digest(folded) if live is not None and folded is live else None
