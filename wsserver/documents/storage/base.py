"""Document storage: an append-only update log per document plus one snapshot.

`Store` holds what every backend shares: the group-commit pipeline. Appends from every
room are queued; one committer greenlet writes all that is queued in one transaction
and only then calls each append's `on_durable`, so the room can echo the update
knowing a crash will not lose it. A failed commit is retried with capped backoff and
its updates stay queued (and unconfirmed) until it succeeds. Backends implement only
`_load`, `_append_batch`, `_compact` and, if they need it, `_open`/`_close` (and
`_commit`, to choose where a commit runs: SQLite commits on the hub when it can, and
`_after_commit`, for upkeep between commits).

Backends run their calls through `self._call` (wsserver/support/blocking.py): by default in
one worker thread, in call order, so compaction comes after the appends it covers.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

import gevent
from gevent.event import Event

from ... import metrics
from ...logs import Throttled
from ...support.backoff import Backoff
from ...support.blocking import BlockingCalls, CallTimeout
from ..key import DocKey
from .catalogue import Catalogue
from .history import VersionsMixin
from .stored import Loaded

if TYPE_CHECKING:
    from .history import Retention

log = logging.getLogger(__name__)


# Appends queued beyond this make `append` wait: backpressure on the readers instead of
# unbounded memory while storage is slow or down.
MAX_QUEUED = 10_000
# Backoff(first, cap) of a failed commit, in seconds: the cap bounds how long after the
# storage answers again the queued updates wait.
COMMIT_RETRY = (0.05, 2.0)
# Seconds /readyz and /healthz wait for the store's answer (see `Store.check`).
PROBE_WAIT = 1.0
_PENDING = object()  # a probe that has not ended yet


class StoreError(Exception):
    """Storage failed; what was being done is kept and retried where possible.
    `pending`: a call that outlived its caller's timeout (see `Store._bounded`)."""

    pending = None


class Store(Catalogue, VersionsMixin, BlockingCalls):
    def __init__(self):
        self._queue = []
        self._wake = Event()
        self._space = Event()
        self._space.set()
        self._idle = Event()
        self._idle.set()
        # Appends queued or being committed, by document, and an event set (then
        # replaced) after every commit: what `delete` waits on.
        self._uncommitted: Counter[DocKey] = Counter()
        self._committed = Event()
        self._start_calls()
        self._committer = None
        self._closed = False
        self.failing = None  # the error of the last commit while commits keep failing
        self._probes = {}  # probe function: (its running greenlet, when it started)
        self._last_probe = (None, 0.0)  # (outcome, when it began) of the last ping
        # When storage last began answering a probe that uses none of this process's
        # connections, None while it does not (see `check`).
        self._answered_since = None
        # Seconds a probe of this process's connections may run before it counts as a
        # failure (more than a busy pool's wait for a free connection).
        self.probe_stuck_after = 6.0
        self._commit_errors = Throttled(log)
        # The `history` settings (storage/history.py Retention) enforced when a version
        # is made and by `sweep`; None: versions are kept for ever, trash never purged.
        self.retention: Retention | None = None

    # --- shared pipeline ------------------------------------------------------------

    def start(self) -> Store:
        self._call(self._open)
        self._committer = gevent.spawn(self._commit_loop)
        return self

    def append(
        self,
        key: DocKey,
        update: bytes,
        on_durable: Callable[[int], object],
        author: str | None = None,
    ) -> None:
        """Queue `update` for `key`; `on_durable(row_id)` runs once it is committed.
        `author`: the token `sub` it came from (kept with the row for the versions)."""
        while len(self._queue) >= MAX_QUEUED:
            self._space.clear()
            self._space.wait()
        self._queue.append((key, update, on_durable, author))
        self._uncommitted[key] += 1
        self._idle.clear()
        self._wake.set()

    def _commit_loop(self):
        while True:
            self._wake.wait()
            self._wake.clear()
            batch, self._queue = self._queue, []
            if not batch:
                self._idle.set()
                if self._closed:
                    return
                continue
            backoff = Backoff(*COMMIT_RETRY)
            while True:
                try:
                    started = time.monotonic()
                    ids = self._commit([(k, u, a) for k, u, _, a in batch])
                    metrics.COMMIT_SECONDS.observe(time.monotonic() - started)
                    metrics.UPDATES.inc(len(batch))
                    self.failing = None
                    break
                except Exception as e:
                    metrics.STORAGE_ERRORS.labels("commit").inc()
                    self.failing = e
                    # Once per 10 s: during an outage this retries for as long as it lasts.
                    self._commit_errors.error(
                        "storage commit of %d updates failed (%s: %s); retrying in %.2fs "
                        "(the updates stay unconfirmed)",
                        len(batch),
                        type(e).__name__,
                        e,
                        backoff.delay,
                        exc_info=True,
                    )
                    backoff.sleep()
            self._space.set()
            self._uncommitted.subtract(item[0] for item in batch)
            self._uncommitted += Counter()  # drops the documents with none left
            self._committed.set()
            self._committed = Event()
            for (_, _, on_durable, _), row_id in zip(batch, ids):
                try:
                    on_durable(row_id)
                except Exception:
                    log.exception("on_durable callback failed")
            self._after_commit()
            if not self._queue:
                self._idle.set()
                if self._closed:
                    return

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued append is committed; False on timeout."""
        return self._idle.wait(timeout)

    def load(self, key: DocKey, timeout: float | None = None) -> Loaded:
        """The document's snapshot and log, oldest first, as a `Loaded`. `timeout`: raise
        StoreError after that many seconds (the load itself goes on; threaded and
        shielded backends, see support/blocking.py)."""
        return self._bounded("load", self._load, key, timeout=timeout)

    def check(self, wait: float = PROBE_WAIT) -> None:
        """Readiness: raise StoreError only for what is wrong with this process's way to
        the storage: its own connections failing a trivial query that began after the
        storage had answered a probe using none of them (`_answers`): a wedged pool. An
        outage every process shares (the database down or hung) is not this process's
        fault: a load balancer taking every process out would serve nobody; `health`
        reports it instead. Waits at most about `wait` seconds per probe and never
        interrupts one (see support/blocking.py), so a verdict may take a few calls."""
        problem, began = self._probed(wait)
        if problem is None:
            return
        outcome = self._single(self._answers, wait)
        if outcome is _PENDING or outcome[0] is not True:
            self._answered_since = None  # down or hung for everyone: a shared outage
            return
        if self._answered_since is None:
            self._answered_since = outcome[1]
        if began >= self._answered_since:
            raise StoreError(f"this process's connections fail ({problem}) while storage answers")

    def health(self, wait: float = PROBE_WAIT) -> str | None:
        """None when storage answers and commits go through; else why not ("commits
        failing: ...", "unreachable: ..."), for /healthz."""
        if self.failing is not None:
            return f"commits failing: {type(self.failing).__name__}: {self.failing}"
        problem, _ = self._probed(wait, patient=False)
        return None if problem is None else f"unreachable: {problem}"

    def _probed(self, wait, patient=True):
        """(None when a trivial query through this process's own connections answers,
        else why not; when that query began). One such probe at a time: a probe still
        running after `wait` seconds keeps running (probes asked meanwhile share it).
        `patient`: until it has run `probe_stuck_after` seconds, the previous outcome
        stands, so a busy pool is not taken for a broken one."""
        outcome = self._single(self._ping_outcome, wait)
        if outcome is not _PENDING:
            self._last_probe = outcome
            return outcome
        began = self._probes[self._ping_outcome][1]
        running = time.monotonic() - began
        if running > self.probe_stuck_after or not patient:
            return f"no answer for {running:.1f} s", began
        return self._last_probe

    def _ping_outcome(self):
        try:
            self._call(self._ping)
        except Exception as e:
            return f"{type(e).__name__}: {e}"
        return None

    def _single(self, probe, wait):
        """(`probe()`'s value, when it began) when it ends within `wait` seconds, else
        _PENDING; a call still running from an earlier request is joined rather than
        started again."""
        running = self._probes.get(probe)
        if running is None or running[0].ready():
            running = self._probes[probe] = (gevent.spawn(probe), time.monotonic())
        running[0].join(wait)
        return (running[0].value, running[1]) if running[0].ready() else _PENDING

    def size(self, key: DocKey, timeout: float | None = None) -> int:
        """Stored bytes of the document (snapshot and log); 0 when there is none.
        `timeout`: as `load`'s."""
        return self._bounded("size", self._size, key, timeout=timeout)

    def delete(self, key: DocKey, timeout: float | None = None) -> None:
        """Remove the document from storage: its snapshot, log, versions and trash
        entry (a purge). Appends of `key` still queued are committed first, so none
        lands after the delete (appends of other documents do not matter). `timeout`:
        raise StoreError when those appends are not committed within that many seconds
        (nothing was deleted then), or when the delete itself does not end in what is
        left of it (it goes on, and `StoreError.pending` is what runs it, see
        `_bounded`)."""
        left = self._wait_committed(key, "delete", timeout, "nothing deleted")
        self._bounded("delete", self._delete, key, timeout=left)

    def _wait_committed(self, key, what, timeout, outcome):
        """Wait until no append of `key` is queued or committing; the seconds left of
        `timeout` (None: no bound). StoreError after `timeout` (`outcome` says what was
        not done)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._uncommitted[key]:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                metrics.STORAGE_ERRORS.labels(what).inc()
                raise StoreError(
                    f"{what}: {self._uncommitted[key]} queued updates of the document "
                    f"not committed within {timeout:g} s; {outcome}"
                )
            self._committed.wait(left)
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def _bounded(self, what, fn, *args, timeout=None):
        """`self._call(fn, *args, timeout=timeout)`, its failures counted under `what`;
        a timeout raises StoreError carrying the call still running (`pending`: its
        greenlet or AsyncResult; `rawlink` tells when it ends)."""
        try:
            return self._call(fn, *args, timeout=timeout)
        except CallTimeout as e:
            metrics.STORAGE_ERRORS.labels(what).inc()
            error = StoreError(f"{what}: {e}")
            error.pending = e.call
            raise error from None
        except Exception:
            metrics.STORAGE_ERRORS.labels(what).inc()
            raise

    def documents(self) -> list[DocKey]:
        """The key of every stored document, sorted (for `wsserver copy-storage`)."""
        return sorted(DocKey(*k) for k in self._call(self._documents))

    def compact(
        self,
        key: DocKey,
        upto_id: int,
        snapshot: bytes | None = None,
        seen: tuple[int, int] | None = None,
        based_on: bytes | None = None,
    ) -> bytes | None:
        """Fold the snapshot and every log row up to `upto_id` into a new snapshot.

        `snapshot` is the caller's live copy, `seen` = (rows, sum of row ids) the log
        rows it holds and `based_on` the digest of the stored snapshot it holds
        (`Loaded.snapshot_digest`, or this call's last answer). The copy is used only
        when the stored rows up to `upto_id` are exactly those (checked in the same
        transaction), merged with the stored snapshot unless that is the one the copy
        holds (another process may have compacted rows this copy never saw into it): it
        is then cheap and correct. Otherwise (another process or node wrote this
        document) the new snapshot is folded from what is stored, so nothing it wrote is
        overwritten (see `compacted`). Returns the digest of the snapshot written when
        it is the caller's copy, else None."""
        return self._call(self._compact, key, upto_id, snapshot, seen, based_on)

    def close(self, timeout: float = 10.0) -> bool:
        """Commit what is queued (up to `timeout` seconds), then disconnect; True when
        everything was committed. Closing again does nothing."""
        if self._closed:
            return self._idle.is_set()
        self._closed = True
        self._wake.set()
        flushed = self.flush(timeout)
        if self._committer is not None:
            self._committer.join(timeout=0.1)
            self._committer.kill()
        self._call(self._close)
        self._stop_calls()
        return flushed

    # --- backend --------------------------------------------------------------------

    def _open(self):
        """Create tables, open connections (runs in the worker thread)."""

    def _close(self):
        """Release connections (runs in the worker thread)."""

    def _load(self, key):
        raise NotImplementedError

    def _ping(self):
        """A trivial read that fails when the storage is unreachable."""

    def _answers(self):
        """True when the storage answers a probe that uses none of this process's own
        connections, False when it does not, None when the backend cannot tell."""
        return None

    def _size(self, key):
        return sum(len(update) for update in self._load(key).updates)

    def _delete(self, key):
        raise NotImplementedError

    def _append_batch(self, items):
        """Write [(key, update)] in one transaction; return the row id of each."""
        raise NotImplementedError

    def _commit(self, items):
        """Run `_append_batch(items)` where the backend's calls run (`_call`)."""
        return self._call(self._append_batch, items)

    def _after_commit(self):
        """Upkeep between two commits, once a commit's updates are confirmed (SQLite's
        checkpoints); the next commit waits for it."""

    def _documents(self):
        """(tenant, app, name) of every document with a snapshot or log rows."""
        raise NotImplementedError

    def _compact(self, key, upto_id, snapshot, seen, based_on):
        """Replace the snapshot and rows <= upto_id atomically (see `compact`); the
        authors of the rows folded newer than the last version kept on the snapshot
        (history.folded_authors)."""
        raise NotImplementedError
