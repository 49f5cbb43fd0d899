"""In-memory store, for tests: the same pipeline as the real ones, nothing on disk."""

import itertools
import time

from .base import Store
from .catalogue import AFTER_ALL, audit_row, audit_values
from .history import DAY, folded_authors, new_version, pruned
from .stored import compacted, loaded, written


class MemoryStore(Store):
    threaded = False

    def __init__(self):
        super().__init__()
        self.snapshots = {}
        self.logs = {}  # key -> [(id, update, author)]
        self.snapshot_meta = {}  # key -> (last_id, authors JSON) (storage/history.py)
        self.version_rows = {}  # key -> [[id, created_at, label, authors, size, upto, data]]
        self.trash_rows = {}  # key -> deleted_at
        self._version_ids = itertools.count(1)
        self._next_id = 1
        self.loads = 0  # how many loads ran: lets tests see that concurrent joins share one
        self.updated = {}  # key -> Unix time of its last commit (the document index)
        self.audit = []  # [(id, at, admin, role, action, target, ip, details)]

    def _load(self, key):
        self.loads += 1
        log = self.logs.get(key, [])
        return loaded(self.snapshots.get(key), [r[:2] for r in log], self.trash_rows.get(key))

    def _append_batch(self, items):
        ids = []
        for key, update, author in items:
            self.logs.setdefault(key, []).append((self._next_id, update, author))
            ids.append(self._next_id)
            self._next_id += 1
            self.updated[key] = time.time()
        return ids

    def _compact(self, key, upto_id, snapshot, seen, based_on):
        log = self.logs.get(key, [])
        covered = [r for r in log if r[0] <= upto_id]
        folded = self.snapshots[key] = compacted(
            self.snapshots.get(key),
            snapshot,
            seen,
            (len(covered), sum(r[0] for r in covered)),
            lambda: [r[1] for r in covered],
            based_on,
        )
        last_id, authors = self.snapshot_meta.get(key, (0, None))
        self.snapshot_meta[key] = (
            max(last_id, upto_id),
            folded_authors(authors, [(r[0], r[2]) for r in covered], self._last_upto(key)),
        )
        self.logs[key] = [r for r in log if r[0] > upto_id]
        return written(folded, snapshot)

    def _delete(self, key):
        for table in (self.snapshots, self.logs, self.snapshot_meta, self.updated):
            table.pop(key, None)
        self.version_rows.pop(key, None)
        self.trash_rows.pop(key, None)

    def _last_upto(self, key):
        rows = self.version_rows.get(key)
        return rows[-1][5] if rows else None

    def _create_version(self, key, label, automatic, now):
        last_id, authors = self.snapshot_meta.get(key, (0, None))
        snap = (self.snapshots[key], last_id, authors) if key in self.snapshots else None
        made = new_version(snap, self.logs.get(key, []), self._last_upto(key), automatic)
        if made is None:
            return None
        state, authors_list, upto = made
        version_id = next(self._version_ids)
        self.version_rows.setdefault(key, []).append(
            [version_id, now, label, authors_list, len(state), upto, state]
        )
        if key in self.snapshot_meta:
            self.snapshot_meta[key] = (self.snapshot_meta[key][0], None)
        self._prune(key, now)
        return self._version(key, version_id)[0]

    def _prune(self, key, now):
        rows = self.version_rows.get(key, [])
        if self.retention is None or not rows:
            return 0
        gone = set(pruned([(r[0], r[1], r[2], r[4]) for r in rows], now, self.retention))
        self.version_rows[key] = [r for r in rows if r[0] not in gone]
        return len(gone)

    def _versions(self, key):
        return [self._meta(r) for r in reversed(self.version_rows.get(key, []))]

    @staticmethod
    def _meta(row):
        return {
            "id": row[0],
            "created_at": row[1],
            "label": row[2],
            "authors": row[3],
            "size": row[4],
        }

    def _version(self, key, version_id):
        for row in self.version_rows.get(key, []):
            if row[0] == version_id:
                return self._meta(row), row[6]
        return None

    def _add_version(self, key, meta, state):
        rows = self.version_rows.setdefault(key, [])
        if not any(r[1] == meta["created_at"] for r in rows):
            rows.append(
                [
                    next(self._version_ids),
                    meta["created_at"],
                    meta["label"],
                    sorted(meta["authors"]),
                    len(state),
                    0,
                    state,
                ]
            )
            rows.sort(key=lambda r: r[1])

    def _trash(self, key, now):
        return self.trash_rows.setdefault(key, now)

    def _untrash(self, key):
        return self.trash_rows.pop(key, None) is not None

    def _trashed(self, keys):
        return [(k, self.trash_rows[k]) for k in keys if k in self.trash_rows]

    def _trash_list(self):
        return list(self.trash_rows.items())

    def _sweep(self, now):
        removed = sum(self._prune(key, now) for key in list(self.version_rows))
        assert self.retention is not None  # Store.sweep calls this only with retention
        cutoff = now - self.retention.trash_days * DAY
        expired = [k for k, at in self.trash_rows.items() if at < cutoff]
        for key in expired:
            self._delete(key)
        return removed, expired

    def _documents(self):
        return set(self.snapshots) | {key for key, log in self.logs.items() if log}

    # --- the document index and audit trail (catalogue.py), by brute force ---------

    def _search(self, tenant, app, prefix, after, limit):
        order = (0, 1, 2) if tenant else (2, 0, 1)
        rows = sorted(
            (tuple(key[i] for i in order), key)
            for key in self._documents()
            if (not tenant or key.tenant == tenant)
            and (not app or key.app == app)
            and prefix <= key.name < prefix + AFTER_ALL
        )
        return [
            {**key._asdict(), "bytes": self._size(key), "updated_at": self.updated.get(key)}
            for position, key in rows
            if after is None or position > tuple(tuple(after)[i] for i in order)
        ][:limit]

    def _totals(self):
        totals: dict[tuple[str, str], list[int]] = {}
        for key in self._documents():
            into = totals.setdefault((key.tenant, key.app), [0, 0])
            into[0] += 1
            into[1] += self._size(key)
        return [
            {"tenant": t, "app": a, "documents": n, "bytes": b}
            for (t, a), (n, b) in sorted(totals.items())
        ]

    def _record_audit(self, entry):
        self.audit.append((len(self.audit) + 1, *audit_values(entry)))
        return len(self.audit)

    def _audit_entries(self, before, limit):
        rows = [r for r in reversed(self.audit) if before is None or r[0] < before]
        return [audit_row(r) for r in rows[:limit]]
