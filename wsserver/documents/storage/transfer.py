"""Moving documents between stores: `wsserver copy-storage`, `export` and `import`.

A copy takes a document's stored updates (snapshot and log rows) as they are and
appends them to the target as log rows, so nothing is re-encoded on the way (a pending
struct stays pending, a compacted document stays one snapshot). Each copy is then
verified: the target's document must have the same Yjs state vector and the same
content (the same folded update) as the source's. Running it again is safe: documents
that already match are skipped, and one that differs gets the source's updates merged
in (applying a Yjs update twice changes nothing). Run it while no server writes to the
source, or run it again afterwards to pick up what was written meanwhile.

Each document's versions (storage/history.py) and its place in the trash go with it,
as they were (created_at, label, authors; deleted_at); a version already there (same
created_at) is not copied twice.

Import appends one Yjs update to a document, merged with what it holds; a server that
has the document open sees it only after reloading it (when its last client leaves).
"""

from __future__ import annotations

from collections.abc import Callable

from pycrdt import Doc

from ...errors import CommandError
from ..key import DocKey
from ..ydoc import fold
from .base import Store

COPY_BATCH = 200  # documents read and queued before waiting for the target's commits


class Mismatch(CommandError):
    """A copied document differs from its source."""


def _doc(updates: list[bytes]) -> Doc:
    doc: Doc = Doc()
    for update in updates:
        doc.apply_update(update)
    return doc


def same_document(source_updates: list[bytes], target_updates: list[bytes]) -> bool:
    """True when both hold the same Yjs state vector and the same content (the same
    folded update: pending structs and deletions included)."""
    return _doc(source_updates).get_state() == _doc(target_updates).get_state() and fold(
        source_updates
    ) == fold(target_updates)


def copy_storage(
    source: Store, target: Store, report: Callable[[str], None] = lambda line: None
) -> tuple[int, int]:
    """Copy every document of `source` into `target` (started stores); returns
    (copied, skipped). Raises Mismatch naming the first document whose copy differs."""
    copied = skipped = 0
    keys = source.documents()
    for start in range(0, len(keys), COPY_BATCH):
        batch = []
        for key in keys[start : start + COPY_BATCH]:
            stored = source.load(key)
            copy_history(source, target, key, stored.deleted_at)
            updates = [bytes(u) for u in stored.updates]
            if same_document(updates, target.load(key).updates):
                skipped += 1
                continue
            for update in updates:
                target.append(key, update, _ignore)
            batch.append((key, updates))
        if not target.flush(timeout=600):
            raise Mismatch("the target did not commit within 10 minutes")
        for key, updates in batch:
            if not same_document(updates, target.load(key).updates):
                raise Mismatch(
                    f"{'/'.join(key)}: the copy differs from the source (the target "
                    "already held other edits of it?)"
                )
            copied += 1
        report(
            f"{start + min(COPY_BATCH, len(keys) - start)}/{len(keys)} documents "
            f"({copied} copied, {skipped} already there)"
        )
    return copied, skipped


def copy_history(source: Store, target: Store, key: DocKey, deleted_at: float | None) -> None:
    """The document's versions and trash entry, from `source` to `target`."""
    for meta, state in source.all_versions(key):
        target.add_version(key, meta, bytes(state))
    if deleted_at is not None:
        target.trash(key, at=deleted_at)


def export_document(store: Store, key: DocKey) -> bytes:
    """The document as one Yjs update (b'\\x00\\x00' when it does not exist)."""
    return fold(store.load(key).updates)


def import_document(store: Store, key: DocKey, update: bytes) -> None:
    """Append `update` (one Yjs update) to the document; refuses what is not one."""
    try:
        Doc().apply_update(update)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # pycrdt's Rust panics are BaseExceptions
        raise CommandError(f"the file is not a Yjs update ({type(e).__name__}: {e})") from None
    store.append(key, update, _ignore)
    if not store.flush(timeout=60):
        raise CommandError("the storage did not commit the update within 60 s")


def _ignore(row_id: int) -> None:
    pass
