"""SQLite store: the embedded default. WAL journal, group commits.

Loads, compactions and deletes run in the store's worker thread (they may read or fold
megabytes). Appends, the hot path (one commit per group of updates), run on the hub
itself when they can: in WAL mode with `synchronous=NORMAL` a commit is a write into
the page cache with no fsync, about 30 µs, while handing it to the worker thread and
back costs about 110 µs of CPU more (two cross-thread wake-ups). Such a commit never
waits: its connection has no busy timeout, so when another connection holds the write
lock (a compaction in the worker thread, another process, the region registry) the
commit goes to the worker thread, whose connection waits for the lock as before. So does
a commit of more than HUB_COMMIT_BYTES (writing 8 MB held the hub ~17 ms; the worker
thread writes it with the GIL released while the hub serves everyone else). A hub commit
never checkpoints either (`wal_autocheckpoint=0`): a checkpoint writes the WAL back
into the database file with an fsync, which could stall the hub for milliseconds, so
every CHECKPOINT_EVERY commits the worker thread runs a passive one, between two
commits. With `sync: full` (an fsync per commit) every commit runs in the worker thread.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from ...support.wait import wait_until
from . import catalogue as shared
from . import sqlite_catalogue as catalogue
from . import sqlite_history as history
from .base import Store
from .history import folded_authors
from .stored import compacted, loaded, written

log = logging.getLogger(__name__)
T = TypeVar("T")

# How often `connect` tries WAL again while another process creates the file (`_wal`).
WAL_RETRY = 0.01

# Commits on the hub between two checkpoints run by the worker thread. SQLite's own
# automatic checkpoint comes every 1,000 WAL pages, about 300 small commits.
CHECKPOINT_EVERY = 300
# A group commit holding more bytes than this runs in the worker thread (module doc).
HUB_COMMIT_BYTES = 256 * 1024

SCHEMA = """
CREATE TABLE IF NOT EXISTS updates (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL, app TEXT NOT NULL, name TEXT NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS updates_by_doc ON updates (tenant, app, name, id);
CREATE TABLE IF NOT EXISTS snapshots (
    tenant TEXT NOT NULL, app TEXT NOT NULL, name TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (tenant, app, name)
);
"""
_DOC = "tenant=? AND app=? AND name=?"


def connect(
    path: str, synchronous: str = "NORMAL", busy_timeout: float = 5.0, autocheckpoint: bool = True
) -> sqlite3.Connection:
    """A WAL-mode connection in autocommit mode (transactions are explicit, see
    `transaction`), usable from another thread than the one that opened it (a store
    opens its connections in its worker thread). The file's directory is created; the
    store and the embedded registry share the file."""
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=busy_timeout)
    if not wait_until(partial(_wal, db), busy_timeout, WAL_RETRY, time.sleep):
        db.execute("PRAGMA journal_mode=WAL")  # its error, once more
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
    if not autocheckpoint:
        db.execute("PRAGMA wal_autocheckpoint=0")
    return db


def _wal(db: sqlite3.Connection) -> bool:
    """Turn WAL on; False while another connection writes the file in rollback mode (a
    process creating the same new file, before its own PRAGMA): SQLite then refuses at
    once ("database is locked"), without waiting its busy timeout."""
    try:
        db.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError as e:
        if not _busy(e):
            raise
        return False
    return True


def _busy(error: sqlite3.OperationalError) -> bool:
    """Whether `error` is SQLITE_BUSY (any of its extended codes): another connection
    holds the lock it needed."""
    return error.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY


def transaction(db: Any, body: Callable[[Any], T]) -> T:
    """Run `body(db)` in a BEGIN IMMEDIATE transaction: other processes sharing the file
    cannot write between its reads and its writes. Rolled back if it raises."""
    db.execute("BEGIN IMMEDIATE")
    try:
        result = body(db)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return result


class SQLiteStore(history.SQLiteHistory, Store):
    def __init__(self, path: str, sync: str = "normal") -> None:
        super().__init__()
        self.path = path
        self.sync = sync
        self.db = None  # the worker thread's connection
        self.hub_db: sqlite3.Connection | None = (
            None  # the hub's, for appends (None with sync: full)
        )
        self._hub_commits = 0  # since the last checkpoint

    def _open(self):
        self.db = connect(self.path, "FULL" if self.sync == "full" else "NORMAL")
        self.db.executescript(SCHEMA)
        history.create_history(self.db)
        transaction(self.db, history.add_columns)
        transaction(self.db, catalogue.create_catalogue)
        if self.sync != "full":
            self.hub_db = connect(self.path, "NORMAL", busy_timeout=0, autocheckpoint=False)

    def _close(self):
        for db in (self.hub_db, self.db):
            if db is not None:
                db.close()
        self.db = self.hub_db = None

    def _stored(self, key, upto_id=None, rows=True):
        """(snapshot or None, [(id, update)] oldest first, up to `upto_id` if given;
        no rows when `rows` is false)."""
        snap = self.db.execute(
            "SELECT data FROM snapshots WHERE tenant=? AND app=? AND name=?", key
        ).fetchone()
        if not rows:
            return (snap[0] if snap else None), []
        rows = self.db.execute(
            "SELECT id, data FROM updates WHERE tenant=? AND app=? AND name=? AND id<=? "
            "ORDER BY id",
            (*key, upto_id if upto_id is not None else 2**63 - 1),
        ).fetchall()
        return (snap[0] if snap else None), rows

    def _load(self, key):
        snap, rows = self._stored(key)
        trashed = self.db.execute(f"SELECT deleted_at FROM trash WHERE {_DOC}", key).fetchone()
        return loaded(snap, rows, trashed[0] if trashed else None)

    def _documents(self):
        return self.db.execute(
            "SELECT tenant, app, name FROM snapshots UNION SELECT tenant, app, name FROM updates"
        ).fetchall()

    def _append_batch(self, items, db=None):
        """Insert in one transaction on `db` (default: the worker thread's connection)."""

        def insert(db):
            ids = [
                db.execute(
                    "INSERT INTO updates (tenant, app, name, data, author) VALUES (?, ?, ?, ?, ?)",
                    (*key, update, author),
                ).lastrowid
                for key, update, author in items
            ]
            catalogue.index_appends(db, items)
            return ids

        return transaction(db if db is not None else self.db, insert)

    def _commit(self, items):
        """On the hub when the write lock is free and the batch is small (see the module
        doc), else in the worker thread."""
        if self.hub_db is not None and sum(len(item[1]) for item in items) <= HUB_COMMIT_BYTES:
            try:
                ids = self._append_batch(items, self.hub_db)
            except sqlite3.OperationalError as e:
                if not _busy(e):
                    raise
                # Another connection is writing, or committed between this BEGIN's read
                # and its write lock (SQLITE_BUSY_SNAPSHOT): wait for it off the hub.
            else:
                self._hub_commits += 1
                return ids
        return self._call(self._append_batch, items)

    def _after_commit(self):
        """Every CHECKPOINT_EVERY hub commits, a checkpoint in the worker thread. In the
        commit pipeline, so no commit of ours runs meanwhile and the checkpoint completes
        (the WAL then restarts from its beginning; checkpoints racing commits left it
        growing), and after the last commit's updates were confirmed (a checkpoint takes
        ~4 ms; their echo waited for it)."""
        if self._hub_commits >= CHECKPOINT_EVERY:
            self._hub_commits = 0
            self._call(self._checkpoint)

    def _checkpoint(self):
        """A passive checkpoint (it never waits for readers or other writers)."""
        try:
            self.db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as e:
            # The WAL only grows until a later checkpoint succeeds; nothing is lost.
            log.warning("SQLite checkpoint failed: %s", e)

    def _compact(self, key, upto_id, snapshot, seen, based_on):
        def replace(db):
            stored = db.execute(
                "SELECT count(*), coalesce(sum(id), 0) FROM updates "
                "WHERE tenant=? AND app=? AND name=? AND id<=?",
                (*key, upto_id),
            ).fetchone()
            snap, _ = self._stored(key, rows=False)
            folded = compacted(
                snap,
                snapshot,
                seen,
                stored,
                lambda: [r[1] for r in self._stored(key, upto_id)[1]],
                based_on,
            )
            last_upto = self._last_upto(db, key)
            old = db.execute(f"SELECT last_id, authors FROM snapshots WHERE {_DOC}", key).fetchone()
            rows = db.execute(
                f"SELECT id, author FROM updates WHERE {_DOC} AND id<=? AND author IS NOT NULL",
                (*key, upto_id),
            ).fetchall()
            db.execute(
                "INSERT OR REPLACE INTO snapshots (tenant, app, name, data, last_id, authors) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    *key,
                    folded,
                    max(upto_id, old[0] if old else 0),
                    folded_authors(old[1] if old else None, rows, last_upto),
                ),
            )
            db.execute(
                "DELETE FROM updates WHERE tenant=? AND app=? AND name=? AND id<=?", (*key, upto_id)
            )
            catalogue.index_size(db, key, self._size(key))
            return written(folded, snapshot)

        return transaction(self.db, replace)

    def _write(self, body):
        return transaction(self.db, body)

    def _ping(self):
        self.db.execute("SELECT 1 FROM snapshots LIMIT 1").fetchall()

    def _size(self, key):
        row = self.db.execute(
            "SELECT (SELECT coalesce(sum(length(data)), 0) FROM snapshots "
            "        WHERE tenant=? AND app=? AND name=?) + "
            "       (SELECT coalesce(sum(length(data)), 0) FROM updates "
            "        WHERE tenant=? AND app=? AND name=?)",
            (*key, *key),
        ).fetchone()
        return row[0]

    def _delete(self, key):
        def delete(db):
            for table in ("snapshots", "updates", "versions", "trash"):
                db.execute(f"DELETE FROM {table} WHERE {_DOC}", key)
            catalogue.index_delete(db, key)

        transaction(self.db, delete)

    # --- the document index and audit trail (sqlite_catalogue.py) --------------------

    def _search(self, tenant, app, prefix, after, limit):
        return shared.search(
            self.db.execute, "document_index", "?", tenant, app, prefix, after, limit
        )

    def _totals(self):
        return shared.totals(self.db.execute, "document_index")

    def _record_audit(self, entry):
        return transaction(self.db, lambda db: catalogue.record_audit(db, entry))

    def _audit_entries(self, before, limit):
        return shared.audit_entries(self.db.execute, "admin_audit", "?", before, limit)
