"""SQLite's document index and audit trail (see catalogue.py): the tables, created with
the index filled from what is stored, and the statements the store's transactions run."""

from __future__ import annotations

import sqlite3
import time
from collections import defaultdict

from ..key import DocKey
from .catalogue import audit_values

INDEX_SCHEMA = """
CREATE TABLE document_index (
    tenant TEXT NOT NULL, app TEXT NOT NULL, name TEXT NOT NULL,
    bytes INTEGER NOT NULL DEFAULT 0, updated_at REAL NOT NULL,
    PRIMARY KEY (tenant, app, name)
);
CREATE INDEX document_index_by_name ON document_index (name, tenant, app);
INSERT INTO document_index (tenant, app, name, bytes, updated_at)
    SELECT tenant, app, name, sum(length(data)), (julianday('now') - 2440587.5) * 86400.0
    FROM (SELECT tenant, app, name, data FROM snapshots
          UNION ALL SELECT tenant, app, name, data FROM updates)
    GROUP BY tenant, app, name;
"""

AUDIT_SCHEMA = """
CREATE TABLE IF NOT EXISTS admin_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL, admin TEXT NOT NULL, role TEXT NOT NULL, action TEXT NOT NULL,
    target TEXT, ip TEXT, details TEXT NOT NULL
);
"""


def create_catalogue(db: sqlite3.Connection) -> None:
    """In a transaction (so a second process opening the file meanwhile waits): the
    index, filled from the stored documents, and the audit table, when missing."""
    exists = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'document_index'"
    ).fetchone()
    if not exists:
        for statement in INDEX_SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
    db.execute(AUDIT_SCHEMA)


def index_appends(db: sqlite3.Connection, items: list[tuple]) -> None:
    """In an append's transaction: each document's bytes grow, its last change is now."""
    grown: dict[DocKey, int] = defaultdict(int)
    for key, update, *_ in items:  # (key, update, ...): whatever else a commit carries
        grown[key] += len(update)
    now = time.time()
    db.executemany(
        "INSERT INTO document_index (tenant, app, name, bytes, updated_at) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant, app, name) DO UPDATE SET "
        "bytes = bytes + excluded.bytes, updated_at = excluded.updated_at",
        [(*key, size, now) for key, size in grown.items()],
    )


def index_size(db: sqlite3.Connection, key: DocKey, size: int) -> None:
    """In a compaction's transaction: the document's bytes as stored now."""
    db.execute(
        "UPDATE document_index SET bytes = ? WHERE tenant = ? AND app = ? AND name = ?",
        (size, *key),
    )


def index_delete(db: sqlite3.Connection, key: DocKey) -> None:
    db.execute("DELETE FROM document_index WHERE tenant = ? AND app = ? AND name = ?", key)


def record_audit(db: sqlite3.Connection, entry: dict) -> int:
    """In a transaction: the new entry's id."""
    cursor = db.execute(
        "INSERT INTO admin_audit (at, admin, role, action, target, ip, details) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        audit_values(entry),
    )
    return cursor.lastrowid or 0
