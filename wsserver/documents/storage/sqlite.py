"""SQLite store: the embedded default. WAL journal, one writer thread, group commits."""

from __future__ import annotations

import os
import sqlite3

from .base import Loaded, Store, compacted

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


def connect(path, synchronous="NORMAL", busy_timeout=5.0):
    """A WAL-mode connection in autocommit mode (transactions are explicit, see
    `transaction`), usable from the one worker thread that runs a store's calls. The
    file's directory is created; the store and the embedded registry share the file."""
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=busy_timeout)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
    return db


def transaction(db, body):
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


class SQLiteStore(Store):
    def __init__(self, path: str, sync: str = "normal") -> None:
        super().__init__()
        self.path = path
        self.sync = sync
        self.db = None

    def _open(self):
        self.db = connect(self.path, "FULL" if self.sync == "full" else "NORMAL")
        self.db.executescript(SCHEMA)

    def _close(self):
        if self.db is not None:
            self.db.close()
            self.db = None

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
        updates = ([snap] if snap is not None else []) + [r[1] for r in rows]
        return Loaded(
            updates,
            rows[-1][0] if rows else 0,
            len(rows),
            sum(len(r[1]) for r in rows),
            sum(r[0] for r in rows),
        )

    def _documents(self):
        return self.db.execute(
            "SELECT tenant, app, name FROM snapshots UNION SELECT tenant, app, name FROM updates"
        ).fetchall()

    def _append_batch(self, items):
        def insert(db):
            return [
                db.execute(
                    "INSERT INTO updates (tenant, app, name, data) VALUES (?, ?, ?, ?)",
                    (*key, update),
                ).lastrowid
                for key, update in items
            ]

        return transaction(self.db, insert)

    def _compact(self, key, upto_id, snapshot, seen):
        def replace(db):
            stored = db.execute(
                "SELECT count(*), coalesce(sum(id), 0) FROM updates "
                "WHERE tenant=? AND app=? AND name=? AND id<=?",
                (*key, upto_id),
            ).fetchone()
            snap, _ = self._stored(key, rows=False)
            folded = compacted(
                snap, snapshot, seen, stored, lambda: [r[1] for r in self._stored(key, upto_id)[1]]
            )
            db.execute(
                "INSERT OR REPLACE INTO snapshots (tenant, app, name, data) VALUES (?, ?, ?, ?)",
                (*key, folded),
            )
            db.execute(
                "DELETE FROM updates WHERE tenant=? AND app=? AND name=? AND id<=?", (*key, upto_id)
            )

        transaction(self.db, replace)

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
            for table in ("snapshots", "updates"):
                db.execute(f"DELETE FROM {table} WHERE tenant=? AND app=? AND name=?", key)

        transaction(self.db, delete)
