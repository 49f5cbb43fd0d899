"""SQLite's part of the history (storage/history.py): the versions and trash tables,
the columns the history added to files written before it, and the statements of
`SQLiteStore`'s history hooks (a mixin of it: `self.db`, the worker thread's connection;
`self._write(body)`, a transaction on it)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from .history import DAY, authors_json, new_version, pruned, version_meta

if TYPE_CHECKING:
    from .history import Retention

SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL, app TEXT NOT NULL, name TEXT NOT NULL,
    created_at REAL NOT NULL,
    label TEXT,
    authors TEXT NOT NULL,
    upto_id INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS versions_by_doc ON versions (tenant, app, name, id);
CREATE TABLE IF NOT EXISTS trash (
    tenant TEXT NOT NULL, app TEXT NOT NULL, name TEXT NOT NULL,
    deleted_at REAL NOT NULL,
    PRIMARY KEY (tenant, app, name)
);
"""
# Columns added to the tables of files written before the history (issue 24): the
# author of each update; on the snapshot, the newest row folded into it and the
# authors of the rows it folded since the last version (storage/history.py).
ADDED_COLUMNS = [
    ("updates", "author", "TEXT"),
    ("snapshots", "last_id", "INTEGER NOT NULL DEFAULT 0"),
    ("snapshots", "authors", "TEXT"),
]
_DOC = "tenant=? AND app=? AND name=?"


def create_history(db: sqlite3.Connection) -> None:
    """The history's tables, when missing (their columns: `add_columns`)."""
    db.executescript(SCHEMA)


def add_columns(db: sqlite3.Connection) -> None:
    """The history's columns, when missing. The caller holds a write transaction (BEGIN
    IMMEDIATE): processes opening a new file at once (gunicorn's workers) each found a
    column missing, and the second one's ALTER TABLE failed ("duplicate column name"),
    so did its start."""
    for table, column, kind in ADDED_COLUMNS:
        present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


class SQLiteHistory:
    """`SQLiteStore`'s history hooks (see storage/history.py's VersionsMixin)."""

    if TYPE_CHECKING:
        db: Any  # sqlite3.Connection once open
        retention: Retention | None

        def _write(self, body: Callable[[sqlite3.Connection], Any]) -> Any: ...

        def _delete(self, key: Any) -> None: ...

    @staticmethod
    def _last_upto(db, key):
        row = db.execute(
            f"SELECT upto_id FROM versions WHERE {_DOC} ORDER BY id DESC LIMIT 1", key
        ).fetchone()
        return row[0] if row else None

    def _create_version(self, key, label, automatic, now):
        def create(db):
            snap = db.execute(
                f"SELECT data, last_id, authors FROM snapshots WHERE {_DOC}", key
            ).fetchone()
            rows = db.execute(
                f"SELECT id, data, author FROM updates WHERE {_DOC} ORDER BY id", key
            ).fetchall()
            made = new_version(snap, rows, self._last_upto(db, key), automatic)
            if made is None:
                return None
            state, authors, upto = made
            version_id = db.execute(
                "INSERT INTO versions (tenant, app, name, created_at, label, authors, upto_id, "
                "data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (*key, now, label, authors_json(authors), upto, state),
            ).lastrowid
            if snap:
                db.execute(f"UPDATE snapshots SET authors=NULL WHERE {_DOC}", key)
            self._prune(db, key, now)
            return version_id

        version_id = self._write(create)
        return None if version_id is None else self._version(key, version_id)[0]

    def _prune(self, db, key, now):
        if self.retention is None:
            return 0
        rows = db.execute(
            f"SELECT id, created_at, label, length(data) FROM versions WHERE {_DOC} ORDER BY id",
            key,
        ).fetchall()
        gone = pruned(rows, now, self.retention)
        db.executemany("DELETE FROM versions WHERE id=?", [(i,) for i in gone])
        return len(gone)

    _META = "id, created_at, label, authors, length(data)"

    def _versions(self, key):
        rows = self.db.execute(
            f"SELECT {self._META} FROM versions WHERE {_DOC} ORDER BY id DESC", key
        ).fetchall()
        return [version_meta(row) for row in rows]

    def _version(self, key, version_id):
        row = self.db.execute(
            f"SELECT {self._META}, data FROM versions WHERE {_DOC} AND id=?", (*key, version_id)
        ).fetchone()
        return None if row is None else (version_meta(row), row[5])

    def _add_version(self, key, meta, state):
        def add(db):
            present = db.execute(
                f"SELECT 1 FROM versions WHERE {_DOC} AND created_at=?", (*key, meta["created_at"])
            ).fetchone()
            if not present:
                db.execute(
                    "INSERT INTO versions (tenant, app, name, created_at, label, authors, "
                    "upto_id, data) VALUES (?, ?, ?, ?, ?, ?, 0, ?)",
                    (*key, meta["created_at"], meta["label"], authors_json(meta["authors"]), state),
                )

        self._write(add)

    def _trash(self, key, now):
        def trash(db):
            db.execute(
                "INSERT OR IGNORE INTO trash (tenant, app, name, deleted_at) VALUES (?, ?, ?, ?)",
                (*key, now),
            )
            return db.execute(f"SELECT deleted_at FROM trash WHERE {_DOC}", key).fetchone()[0]

        return self._write(trash)

    def _untrash(self, key):
        return self.db.execute(f"DELETE FROM trash WHERE {_DOC}", key).rowcount > 0

    def _trashed(self, keys):
        found = []
        for start in range(0, len(keys), 300):  # SQLite's bound on a statement's variables
            chunk = keys[start : start + 300]
            found += self.db.execute(
                "SELECT tenant, app, name, deleted_at FROM trash WHERE "
                + " OR ".join(f"({_DOC})" for _ in chunk),
                [part for key in chunk for part in key],
            ).fetchall()
        return [(row[:3], row[3]) for row in found]

    def _trash_list(self):
        rows = self.db.execute("SELECT tenant, app, name, deleted_at FROM trash").fetchall()
        return [(row[:3], row[3]) for row in rows]

    def _sweep(self, now):
        removed = 0
        for key in self.db.execute("SELECT DISTINCT tenant, app, name FROM versions").fetchall():
            removed += self._write(partial(self._prune, key=tuple(key), now=now))
        assert self.retention is not None  # Store.sweep calls this only with retention
        cutoff = now - self.retention.trash_days * DAY
        expired = self.db.execute(
            "SELECT tenant, app, name FROM trash WHERE deleted_at < ?", (cutoff,)
        ).fetchall()
        for key in expired:
            self._delete(tuple(key))
        return removed, [tuple(key) for key in expired]
