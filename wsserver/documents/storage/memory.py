"""In-memory store, for tests: the same pipeline as the real ones, nothing on disk."""

import time

from .base import Store, compacted, loaded
from .catalogue import AFTER_ALL, audit_row, audit_values


class MemoryStore(Store):
    threaded = False

    def __init__(self):
        super().__init__()
        self.snapshots = {}
        self.logs = {}  # key -> [(id, update)]
        self._next_id = 1
        self.loads = 0  # how many loads ran: lets tests see that concurrent joins share one
        self.updated = {}  # key -> Unix time of its last commit (the document index)
        self.audit = []  # [(id, at, admin, role, action, target, ip, details)]

    def _load(self, key):
        self.loads += 1
        log = self.logs.get(key, [])
        return loaded(self.snapshots.get(key), log)

    def _append_batch(self, items):
        ids = []
        for key, update in items:
            self.logs.setdefault(key, []).append((self._next_id, update))
            ids.append(self._next_id)
            self._next_id += 1
            self.updated[key] = time.time()
        return ids

    def _compact(self, key, upto_id, snapshot, seen):
        log = self.logs.get(key, [])
        covered = [(i, u) for i, u in log if i <= upto_id]
        self.snapshots[key] = compacted(
            self.snapshots.get(key),
            snapshot,
            seen,
            (len(covered), sum(i for i, _ in covered)),
            lambda: [u for _, u in covered],
        )
        self.logs[key] = [(i, u) for i, u in log if i > upto_id]

    def _delete(self, key):
        self.snapshots.pop(key, None)
        self.logs.pop(key, None)
        self.updated.pop(key, None)

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
        totals = {}
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
