"""The embedded registry: a `registry` table in the node's SQLite storage file.

Nodes that share the storage file (processes on one machine, whatever region each
says it is in) see each other's claims. One row per (document, holder node); a claim
is live while one of its rows has not expired. Every operation is one transaction
taken with BEGIN IMMEDIATE, so two processes racing for a new document are serialized
by SQLite's write lock: the second sees the first's row and gets its region.

Expiries are wall-clock seconds (`time.time()`): the processes sharing a file share a
clock. The connection is this class's own (WAL, busy_timeout), used only from the
worker thread.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any

from ...documents.storage.sqlite import connect, transaction
from .base import Registry

SCHEMA = """
CREATE TABLE IF NOT EXISTS registry (
    tenant TEXT NOT NULL, app TEXT NOT NULL, name TEXT NOT NULL,
    node TEXT NOT NULL,
    region TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (tenant, app, name, node)
);
CREATE INDEX IF NOT EXISTS registry_by_node ON registry (node);
"""
_DOC = "tenant=? AND app=? AND name=?"


class SQLiteRegistry(Registry):
    threaded = True

    def __init__(
        self, region: str, path: str, clock: Callable[[], float] = time.time, **options: Any
    ) -> None:
        super().__init__(region, clock=clock, **options)
        self.path = path
        self.db: sqlite3.Connection | None = None

    def _open(self) -> None:
        self.db = db = connect(self.path, busy_timeout=10.0)
        db.executescript(SCHEMA)
        # Rows of nodes long gone (kill -9): harmless once expired, but keep the table small.
        self._transaction(
            lambda db: db.execute(
                "DELETE FROM registry WHERE expires_at < ?", (self.clock() - 3600,)
            )
        )

    def _close(self):
        if self.db is not None:
            self.db.close()
            self.db = None

    def _transaction(self, body):
        return transaction(self.db, body)

    def _claim(self, key, node, region, ttl):
        def claim(db: sqlite3.Connection) -> str:
            now = self.clock()
            other = db.execute(
                f"SELECT region FROM registry WHERE {_DOC} AND expires_at > ? AND region != ? "
                "LIMIT 1",
                (*key, now, region),
            ).fetchone()
            if other is not None:
                return other[0]
            db.execute(f"DELETE FROM registry WHERE {_DOC} AND expires_at <= ?", (*key, now))
            db.execute(
                "INSERT INTO registry (tenant, app, name, node, region, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant, app, name, node) "
                "DO UPDATE SET region=excluded.region, expires_at=excluded.expires_at",
                (*key, node, region, now + ttl),
            )
            return region

        return self._transaction(claim)

    def _renew(self, keys, node, ttl):
        def renew(db: sqlite3.Connection) -> set:
            now = self.clock()
            renewed = set()
            for key in keys:
                cursor = db.execute(
                    f"UPDATE registry SET expires_at=? WHERE {_DOC} AND node=? AND expires_at > ?",
                    (now + ttl, *key, node, now),
                )
                if cursor.rowcount:
                    renewed.add(key)
            return renewed

        return self._transaction(renew)

    def _release(self, key, node):
        self._transaction(
            lambda db: db.execute(f"DELETE FROM registry WHERE {_DOC} AND node=?", (*key, node))
        )

    def _lookup(self, key):
        if self.db is None:
            raise RuntimeError("the registry is closed")  # a call racing the shutdown
        row = self.db.execute(
            f"SELECT region FROM registry WHERE {_DOC} AND expires_at > ? LIMIT 1",
            (*key, self.clock()),
        ).fetchone()
        return row[0] if row else None
