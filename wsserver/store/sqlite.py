"""SQLite store: the embedded default. WAL journal, one writer thread, group commits."""

import os
import sqlite3

from . import Loaded, Store, fold

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


class SQLiteStore(Store):
    def __init__(self, path, sync="normal"):
        super().__init__()
        self.path = path
        self.sync = sync
        self.db = None

    def _open(self):
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        # Autocommit mode; transactions are explicit below. Used only from the worker thread.
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={'FULL' if self.sync == 'full' else 'NORMAL'}")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(SCHEMA)

    def _close(self):
        if self.db is not None:
            self.db.close()
            self.db = None

    def _stored(self, key, upto_id=None):
        """(snapshot or None, [(id, update)] oldest first, up to `upto_id` if given)."""
        snap = self.db.execute(
            "SELECT data FROM snapshots WHERE tenant=? AND app=? AND name=?", key).fetchone()
        rows = self.db.execute(
            "SELECT id, data FROM updates WHERE tenant=? AND app=? AND name=? AND id<=? "
            "ORDER BY id", (*key, upto_id if upto_id is not None else 2 ** 63 - 1)).fetchall()
        return (snap[0] if snap else None), rows

    def _load(self, key):
        snap, rows = self._stored(key)
        updates = ([snap] if snap is not None else []) + [r[1] for r in rows]
        return Loaded(updates, rows[-1][0] if rows else 0, len(rows), sum(len(r[1]) for r in rows))

    def _append_batch(self, items):
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            ids = [db.execute("INSERT INTO updates (tenant, app, name, data) VALUES (?, ?, ?, ?)",
                              (*key, update)).lastrowid for key, update in items]
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return ids

    def _compact(self, key, upto_id):
        db = self.db
        # IMMEDIATE: another process sharing the file cannot write between the read and
        # the replace, so nothing it appends is lost.
        db.execute("BEGIN IMMEDIATE")
        try:
            snap, rows = self._stored(key, upto_id)
            snapshot = fold(([snap] if snap is not None else []) + [r[1] for r in rows])
            db.execute("INSERT OR REPLACE INTO snapshots (tenant, app, name, data) VALUES (?, ?, ?, ?)",
                       (*key, snapshot))
            db.execute("DELETE FROM updates WHERE tenant=? AND app=? AND name=? AND id<=?",
                       (*key, upto_id))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
