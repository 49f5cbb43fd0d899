"""In-memory store, for tests: the same pipeline as the real ones, nothing on disk."""

from .base import Loaded, Store, compacted


class MemoryStore(Store):
    threaded = False

    def __init__(self):
        super().__init__()
        self.snapshots = {}
        self.logs = {}  # key -> [(id, update)]
        self._next_id = 1
        self.loads = 0  # how many loads ran: lets tests see that concurrent joins share one

    def _load(self, key):
        self.loads += 1
        log = self.logs.get(key, [])
        updates = ([self.snapshots[key]] if key in self.snapshots else []) + [u for _, u in log]
        return Loaded(
            updates,
            log[-1][0] if log else 0,
            len(log),
            sum(len(u) for _, u in log),
            sum(i for i, _ in log),
        )

    def _append_batch(self, items):
        ids = []
        for key, update in items:
            self.logs.setdefault(key, []).append((self._next_id, update))
            ids.append(self._next_id)
            self._next_id += 1
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

    def _documents(self):
        return set(self.snapshots) | {key for key, log in self.logs.items() if log}
