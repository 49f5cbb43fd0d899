"""What every backend shares of a document's history: versions and their retention.

A version is the document's full state at a moment (one folded Yjs update), with its
time, an optional label, and the authors (token `sub`s) of the updates stored since the
previous version. Each update row carries its author; a compaction that folds rows
newer than the last version keeps their authors on the snapshot row (`authors`, with
`last_id`: the newest row folded into it), so a version made after a compaction still
knows who changed the document, and whether anything did.

Backends store versions in a table of their own (`versions` / `wsserver_versions`)
that compaction never touches; a trashed document keeps its versions until purged.
They call `new_version` and `pruned` inside their transactions.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...support.validators import Validator, integer, number, section
from ..key import DocKey
from ..ydoc import fold

DAY = 86400.0
MIB = 1024 * 1024
# The `history` setting's defaults (settings/table.py): how long versions are kept,
# how many automatic ones and how many bytes of them per document; `every`: seconds
# between two automatic versions while edits go on; `quiet_period`: seconds without an
# edit after which one is made; `trash_days`: days a deleted document can be undeleted.
HISTORY_DEFAULTS = {
    "keep_days": 30.0,
    "keep_versions": 100,
    "max_bytes_per_document": 64 * MIB,
    "every": 600.0,
    "quiet_period": 300.0,
    "trash_days": 30.0,
}


def _or_null(check: Validator) -> Validator:
    def nullable(key: str, value: Any) -> Any:
        return None if value is None else check(key, value)

    return nullable


validate_history = section(
    {
        "keep_days": _or_null(number(0.0, what="a number of days or null")),
        "keep_versions": integer(1, nullable=True),
        "max_bytes_per_document": integer(1, nullable=True),
        "every": number(0.01, what="a number of seconds"),
        "quiet_period": number(0.01, what="a number of seconds"),
        "trash_days": number(0.0, what="a number of days"),
    },
    defaults=HISTORY_DEFAULTS,
)


def retention_of(settings: dict[str, Any]) -> Retention:
    """The store's Retention from the validated `history` setting."""
    return Retention(
        settings["keep_days"],
        settings["keep_versions"],
        settings["max_bytes_per_document"],
        settings["trash_days"],
    )


@dataclass(frozen=True)
class Retention:
    """The `history` settings the store enforces (None: no limit). `keep_days` and
    `keep_versions` apply to automatic versions (no label); named ones go only when
    the document's versions exceed `max_bytes_per_document`, oldest first. The newest
    version of a document is always kept (it tells whether anything changed since)."""

    keep_days: float | None = 30.0
    keep_versions: int | None = 100
    max_bytes_per_document: int | None = 64 * 1024 * 1024
    trash_days: float = 30.0


def authors_json(authors: Iterable[str]) -> str:
    return json.dumps(sorted(set(authors)))


def new_version(
    snap: tuple[bytes, int, str | None] | None,
    rows: list[tuple[int, bytes, str | None]],
    last_upto: int | None,
    automatic: bool,
) -> tuple[bytes, list[str], int] | None:
    """(state, authors, upto_id) of a version made now, or None: nothing stored, or
    (`automatic`) nothing stored since the last version (`last_upto`: the newest row it
    covered; None when there is none). `snap`: the snapshot row (data, last_id,
    authors) as compaction left it, or None; `rows`: the log (id, update, author),
    oldest first."""
    snapshot, snapshot_last_id, snapshot_authors = snap if snap is not None else (None, 0, None)
    upto = max([snapshot_last_id, *(row_id for row_id, _, _ in rows)], default=0)
    if snapshot is None and not rows:
        return None
    if automatic and last_upto is not None and upto <= last_upto:
        return None
    authors = set(json.loads(snapshot_authors or "[]"))
    authors.update(a for row_id, _, a in rows if a and (last_upto is None or row_id > last_upto))
    updates = ([snapshot] if snapshot is not None else []) + [u for _, u, _ in rows]
    return fold(updates), sorted(authors), upto


def folded_authors(
    stored: str | None, rows: Iterable[tuple[int, str | None]], last_upto: int | None
) -> str:
    """The snapshot's `authors` after a compaction folds `rows` (id, author): those of
    rows newer than the last version added."""
    authors = set(json.loads(stored or "[]"))
    authors.update(a for row_id, a in rows if a and (last_upto is None or row_id > last_upto))
    return authors_json(authors)


def pruned(
    versions: list[tuple[int, float, str | None, int]], now: float, retention: Retention
) -> list[int]:
    """Ids of the versions retention removes; `versions`: (id, created_at, label, size)
    of one document, oldest first."""
    if not versions:
        return []
    newest = versions[-1][0]
    gone: set[int] = set()
    automatic = [v for v in versions if v[2] is None and v[0] != newest]
    if retention.keep_versions is not None:
        # The newest counts among the kept when it is automatic.
        keep = retention.keep_versions - (versions[-1][2] is None)
        excess = len(automatic) - max(0, keep)
        gone.update(v[0] for v in automatic[: max(0, excess)])
    if retention.keep_days is not None:
        cutoff = now - retention.keep_days * DAY
        gone.update(v[0] for v in automatic if v[1] < cutoff)
    if retention.max_bytes_per_document is not None:
        total = sum(v[3] for v in versions if v[0] not in gone)
        for v in versions:
            if total <= retention.max_bytes_per_document or v[0] == newest:
                break
            if v[0] not in gone:
                gone.add(v[0])
                total -= v[3]
    return sorted(gone)


def version_meta(row: Any) -> dict[str, Any]:
    """A version's description from a row (id, created_at, label, authors, size)."""
    return {
        "id": row[0],
        "created_at": row[1],
        "label": row[2],
        "authors": json.loads(row[3] or "[]"),
        "size": row[4],
    }


class VersionsMixin:
    """The history part of `Store` (base.py): the public calls, each bounded like the
    store's others, and the hooks the backends implement."""

    if TYPE_CHECKING:
        retention: Retention | None

        def _bounded(
            self, what: str, fn: Callable[..., Any], *args: Any, timeout: float | None = None
        ) -> Any: ...

        def _wait_committed(
            self, key: DocKey, what: str, timeout: float | None, outcome: str
        ) -> float | None: ...

        def _call(
            self, fn: Callable[..., Any], *args: Any, timeout: float | None = None
        ) -> Any: ...

    def create_version(
        self,
        key: DocKey,
        label: str | None = None,
        automatic: bool = False,
        timeout: float | None = None,
    ) -> dict | None:
        """Store the document's state now as a version (after its queued appends are
        committed), retention applied; its description ({id, created_at, label,
        authors, size}). None when storage holds nothing of the document, or
        (`automatic`) nothing changed since its last version."""
        left = self._wait_committed(key, "version", timeout, "no version made")
        return self._bounded(
            "version", self._create_version, key, label, automatic, time.time(), timeout=left
        )

    def versions(self, key: DocKey, timeout: float | None = None) -> list[dict]:
        """The document's versions, newest first (descriptions, no state)."""
        return self._bounded("versions", self._versions, key, timeout=timeout)

    def version(
        self, key: DocKey, version_id: int, timeout: float | None = None
    ) -> tuple[dict, bytes] | None:
        """(description, state) of one version of the document, or None."""
        return self._bounded("versions", self._version, key, version_id, timeout=timeout)

    def trash(self, key: DocKey, timeout: float | None = None, at: float | None = None) -> float:
        """Move the document to the trash (kept, versions included, refused to every
        load until `untrash`); returns its deleted_at (`at`, default now; an earlier
        one if it was already there)."""
        now = time.time() if at is None else at
        return self._bounded("trash", self._trash, key, now, timeout=timeout)

    def untrash(self, key: DocKey, timeout: float | None = None) -> bool:
        """Take the document out of the trash; False when it was not there."""
        return self._bounded("trash", self._untrash, key, timeout=timeout)

    def trashed(self, keys: list[DocKey], timeout: float | None = None) -> dict[DocKey, float]:
        """{key: deleted_at} of those of `keys` in the trash."""
        if not keys:
            return {}
        found = self._bounded("trash", self._trashed, keys, timeout=timeout)
        return {DocKey(*k): at for k, at in found}

    def trash_list(self, timeout: float | None = None) -> list[tuple[DocKey, float]]:
        """Every trashed document (key, deleted_at), most recently deleted first."""
        rows = self._bounded("trash", self._trash_list, timeout=timeout)
        return sorted(((DocKey(*k), at) for k, at in rows), key=lambda r: -r[1])

    def sweep(self, timeout: float | None = None) -> tuple[int, list[DocKey]]:
        """Retention over every document: (versions removed, documents purged from the
        trash after `trash_days`)."""
        if self.retention is None:
            return 0, []
        removed, purged = self._bounded("sweep", self._sweep, time.time(), timeout=timeout)
        return removed, [DocKey(*k) for k in purged]

    def all_versions(self, key: DocKey) -> list[tuple[dict, bytes]]:
        """Every version of the document with its state, oldest first (copy-storage)."""
        return [self._version(key, v["id"]) for v in reversed(self._call(self._versions, key))]

    def add_version(self, key: DocKey, meta: dict, state: bytes) -> None:
        """Store a copied version as it was (created_at, label, authors), unless one of
        the same created_at is there already (copy-storage run again)."""
        self._call(self._add_version, key, meta, state)

    # --- backend hooks ---------------------------------------------------------------

    def _create_version(self, key, label, automatic, now):
        """history.new_version inside one transaction, then retention (history.pruned)."""
        raise NotImplementedError

    def _versions(self, key):
        raise NotImplementedError

    def _version(self, key, version_id):
        raise NotImplementedError

    def _add_version(self, key, meta, state):
        raise NotImplementedError

    def _trash(self, key, now):
        raise NotImplementedError

    def _untrash(self, key):
        raise NotImplementedError

    def _trashed(self, keys):
        """[(key tuple, deleted_at)] of those of `keys` in the trash."""
        raise NotImplementedError

    def _trash_list(self):
        raise NotImplementedError

    def _sweep(self, now):
        """(versions removed, keys purged): `keep_days` over every document's automatic
        versions, trash entries older than `trash_days` purged (`_delete`)."""
        raise NotImplementedError
