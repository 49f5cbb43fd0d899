"""The registry in Postgres: a `wsserver_registry` table in the storage database.

Nodes of several machines that share the storage database share this table, so they
need no Redis to share the registry. One row per (document, holder node), as in the
SQLite registry; the table comes with the storage schema (documents/storage/postgres.py,
`ensure_schema`). A claim's check-and-insert runs in one transaction under an advisory
lock on the document, so two nodes racing for a new document are serialized: the
second sees the first's row and gets its region.

Expiries are seconds on the database's clock (`clock_timestamp()`), the one clock every
machine sharing the table sees; `clock` (tests) replaces it. Calls run in the calling
greenlet on connections of a small pool of this registry's own, like the store's (see
that module for why that is right under gevent).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from ...documents.storage.postgres import (
    LOCK_NAMESPACE,
    LOCK_TIMEOUT,
    POOL_WAIT,
    STATEMENT_TIMEOUT,
    doc_lock_key,
    ensure_schema,
    open_pool,
)
from .base import Registry

CLAIM_LOCK_NAMESPACE = LOCK_NAMESPACE + 1
POOL_SIZE = 2  # the heartbeat and a claim or two at once
_DOC = "tenant = %(t)s AND app = %(a)s AND name = %(n)s"
_NOW = "coalesce(%(now)s::float8, extract(epoch FROM clock_timestamp()))"


class PostgresRegistry(Registry):
    threaded = False
    shielded = True  # never interrupt psycopg (support/blocking.py)

    def __init__(
        self,
        region: str,
        url: str,
        clock: Callable[[], float] | None = None,
        timeouts: tuple[float, float, float] = (POOL_WAIT, STATEMENT_TIMEOUT, LOCK_TIMEOUT),
        **options: Any,
    ) -> None:
        # `clock` (tests) stands in for the database's clock in the table and, as in
        # every registry, for this node's own timing; without it, those are the
        # database's clock and time.monotonic. `timeouts`: the store's (`storage_timeout`,
        # `storage_statement_timeout`, `storage_lock_timeout`), enforced as there.
        if clock is not None:
            options["clock"] = clock
        super().__init__(region, **options)
        self.url = url
        self.timeouts = timeouts
        self.table_clock = clock
        self.pool: ConnectionPool | None = None

    def _params(self, key=None, **extra):
        params = {"now": self.table_clock() if self.table_clock is not None else None, **extra}
        if key is not None:
            params.update(t=key[0], a=key[1], n=key[2])
        return params

    def _open(self):
        self.pool = open_pool(self.url, POOL_SIZE, "wsserver-registry", *self.timeouts)
        with self._connection() as conn:
            ensure_schema(conn)
            # Rows of nodes long gone (kill -9): harmless once expired; keep the table small.
            conn.execute(
                f"DELETE FROM wsserver_registry WHERE expires_at < {_NOW} - 3600", self._params()
            )

    def _close(self):
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        """A connection of the pool for one call; RuntimeError once the registry is closed
        (a call racing the shutdown, answered as any failing call)."""
        if self.pool is None:
            raise RuntimeError("the registry is closed")
        with self.pool.connection() as conn:
            yield conn

    def _claim(self, key, node, region, ttl):
        params = self._params(key, node=node, region=region, ttl=ttl)
        with self._connection() as conn, conn.transaction():
            conn.execute(
                "SELECT pg_advisory_xact_lock(%s, %s)", (CLAIM_LOCK_NAMESPACE, doc_lock_key(key))
            )
            other = conn.execute(
                f"SELECT region FROM wsserver_registry WHERE {_DOC} AND expires_at > {_NOW} "
                "AND region <> %(region)s LIMIT 1",
                params,
            ).fetchone()
            if other is not None:
                return other[0]
            conn.execute(
                f"DELETE FROM wsserver_registry WHERE {_DOC} AND expires_at <= {_NOW}", params
            )
            conn.execute(
                "INSERT INTO wsserver_registry (tenant, app, name, node, region, expires_at) "
                f"VALUES (%(t)s, %(a)s, %(n)s, %(node)s, %(region)s, {_NOW} + %(ttl)s) "
                "ON CONFLICT (tenant, app, name, node) DO UPDATE "
                "SET region = excluded.region, expires_at = excluded.expires_at",
                params,
            )
            return region

    def _renew(self, keys, node, ttl):
        keys = list(keys)
        params = self._params(
            node=node,
            ttl=ttl,
            ts=[k[0] for k in keys],
            aps=[k[1] for k in keys],
            ns=[k[2] for k in keys],
        )
        with self._connection() as conn:
            rows = conn.execute(
                f"UPDATE wsserver_registry r SET expires_at = {_NOW} + %(ttl)s "
                "FROM unnest(%(ts)s::text[], %(aps)s::text[], %(ns)s::text[]) AS k(t, a, n) "
                "WHERE r.tenant = k.t AND r.app = k.a AND r.name = k.n AND r.node = %(node)s "
                f"AND r.expires_at > {_NOW} RETURNING r.tenant, r.app, r.name",
                params,
            ).fetchall()
        renewed = {tuple(row) for row in rows}
        return {key for key in keys if tuple(key) in renewed}

    def _release(self, key, node):
        with self._connection() as conn:
            conn.execute(
                f"DELETE FROM wsserver_registry WHERE {_DOC} AND node = %(node)s",
                self._params(key, node=node),
            )

    def _lookup(self, key):
        with self._connection() as conn:
            row = conn.execute(
                f"SELECT region FROM wsserver_registry WHERE {_DOC} AND expires_at > {_NOW} "
                "LIMIT 1",
                self._params(key),
            ).fetchone()
        return row[0] if row else None
