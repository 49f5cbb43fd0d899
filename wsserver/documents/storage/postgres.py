"""Postgres store: documents in the database a platform hands out as `DATABASE_URL`.

The same log + snapshot model as SQLite, in tables `wsserver_updates` and
`wsserver_snapshots`, next to `wsserver_registry` (the region registry) and
`wsserver_schema` (the schema version, see `ensure_schema`).

Gevent: psycopg 3 (3.1.14 or newer) waits on its socket through the `select` module
when gevent has patched it, so a query only suspends the greenlet that runs it. Every
call therefore runs in the calling greenlet (`threaded = False`), on a connection taken
from a psycopg_pool pool for that one call and given back after it: a connection is
never used by two greenlets at once, and loads of different documents, a compaction and
the group commit run concurrently on different connections instead of queueing behind
one worker thread as SQLite's calls do (and without a thread hop per call). No order
is lost by that: the committer is one greenlet, so appends commit in order, and a
compaction only covers rows that are already committed. The pool's own workers are
threads, which gevent's patching makes greenlets. Host names are resolved in Python
(patched socket), not by libpq. Limits: psycopg picks its wait function when imported,
so it must be imported after `monkey.patch_all()` (`wsserver serve` and the gunicorn
worker patch first; `_open` logs an error when it finds the blocking C wait in a
patched process). Without patching at all (a script, the store tests) calls simply
block, which is correct but not concurrent.

Outages: a call that finds no connection within `POOL_WAIT` seconds, or whose
connection breaks, raises; the pipeline in base.py keeps the updates queued and
retries, and the pool replaces broken connections and reconnects by itself.
"""

from __future__ import annotations

import logging
import sys
import zlib
from typing import Any

from psycopg_pool import ConnectionPool

from ...errors import ConfigError, StorageSchemaError
from ..key import DocKey
from . import redact_url as redact
from .base import Loaded, Store, compacted

log = logging.getLogger(__name__)

# Seconds a call waits for a free (or reconnected) connection before it fails: the
# caller retries (commits) or refuses the connection with 1011 (loads).
POOL_WAIT = 5.0
# First key of every advisory lock this code takes, so it shares no lock with other
# applications of the same database; the second key names what is locked.
LOCK_NAMESPACE = 0x5753  # "WS"
SCHEMA_LOCK = 0

# MIGRATIONS[n] takes a database from schema version n to n + 1, in one transaction.
# Append new steps here; never edit a released one.
MIGRATIONS = [
    # 1: documents
    """
    CREATE TABLE wsserver_updates (
        id bigserial PRIMARY KEY,
        tenant text NOT NULL, app text NOT NULL, name text NOT NULL,
        data bytea NOT NULL
    );
    CREATE INDEX wsserver_updates_by_doc ON wsserver_updates (tenant, app, name, id);
    CREATE TABLE wsserver_snapshots (
        tenant text NOT NULL, app text NOT NULL, name text NOT NULL,
        data bytea NOT NULL,
        PRIMARY KEY (tenant, app, name)
    );
    """,
    # 2: the region registry (wsserver/regions/registry/postgres.py)
    """
    CREATE TABLE wsserver_registry (
        tenant text NOT NULL, app text NOT NULL, name text NOT NULL,
        node text NOT NULL,
        region text NOT NULL,
        expires_at double precision NOT NULL,
        PRIMARY KEY (tenant, app, name, node)
    );
    CREATE INDEX wsserver_registry_by_node ON wsserver_registry (node);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

_DOC = "tenant = %s AND app = %s AND name = %s"


def open_pool(url: str, size: int, name: str) -> ConnectionPool:
    """A started pool of autocommit connections to `url` (libpq URL; query options such
    as `sslmode=require` go to libpq as they are). Raises ConfigError when the database
    cannot be reached at start."""
    pool = ConnectionPool(
        url,
        min_size=1,
        max_size=size,
        open=False,
        timeout=POOL_WAIT,
        name=name,
        kwargs={"autocommit": True},
    )
    try:
        pool.open(wait=True, timeout=POOL_WAIT * 2)
    except Exception as e:
        pool.close()
        raise ConfigError("storage", f"cannot connect to {redact(url)}: {e}") from e
    _check_cooperative()
    return pool


def _check_cooperative() -> None:
    from psycopg import waiting

    monkey = sys.modules.get("gevent.monkey")
    if (
        monkey is not None
        and monkey.is_module_patched("select")
        and waiting.wait is getattr(waiting, "wait_c", None)
    ):
        log.error(
            "psycopg was imported before gevent patched the standard library: every "
            "query blocks the whole process (import wsserver after monkey.patch_all())"
        )


def ensure_schema(conn: Any) -> int:
    """Create the tables on a new database, or migrate an older schema in place; refuse
    a newer one (written by a later wsserver) rather than write to it. One migrator at a
    time: processes starting together wait on an advisory lock."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_NAMESPACE, SCHEMA_LOCK))
        conn.execute("CREATE TABLE IF NOT EXISTS wsserver_schema (version integer NOT NULL)")
        row = conn.execute("SELECT max(version) FROM wsserver_schema").fetchone()
        version = row[0] or 0
        if version > SCHEMA_VERSION:
            raise StorageSchemaError(version, SCHEMA_VERSION)
        if version == SCHEMA_VERSION:
            return version
        for step in range(version, SCHEMA_VERSION):
            conn.execute(MIGRATIONS[step])
            log.info("storage schema migrated to version %d", step + 1)
        conn.execute("DELETE FROM wsserver_schema")
        conn.execute("INSERT INTO wsserver_schema (version) VALUES (%s)", (SCHEMA_VERSION,))
    return version


def doc_lock_key(key: DocKey) -> int:
    """The second advisory-lock key of a document (a collision only serializes two
    documents' compactions; it is never wrong)."""
    return zlib.crc32("\x1f".join(key).encode()) - (1 << 31)


class PostgresStore(Store):
    threaded = False  # cooperative sockets; see the module docstring

    def __init__(self, url: str, pool_size: int = 5) -> None:
        super().__init__()
        self.url = url
        self.pool_size = pool_size
        self.pool = None

    def __repr__(self):
        return f"PostgresStore({redact(self.url)})"

    def _open(self):
        self.pool = open_pool(self.url, self.pool_size, "wsserver-storage")
        with self.pool.connection() as conn:
            ensure_schema(conn)

    def _close(self):
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    def _stored(self, conn, key, upto_id=None, rows=True):
        """(snapshot or None, [(id, update)] oldest first), read by one statement so a
        compaction committing meanwhile cannot be half seen; no rows when `rows` is false."""
        if not rows:
            snap = conn.execute(f"SELECT data FROM wsserver_snapshots WHERE {_DOC}", key).fetchone()
            return (snap[0] if snap else None), []
        rows = conn.execute(
            f"SELECT NULL::bigint, data FROM wsserver_snapshots WHERE {_DOC} "
            f"UNION ALL SELECT id, data FROM wsserver_updates WHERE {_DOC} AND id <= %s "
            "ORDER BY 1 NULLS FIRST",
            (*key, *key, upto_id if upto_id is not None else 2**63 - 1),
        ).fetchall()
        snap = rows[0][1] if rows and rows[0][0] is None else None
        return snap, [r for r in rows if r[0] is not None]

    def _load(self, key):
        with self.pool.connection() as conn:
            snap, rows = self._stored(conn, key)
        updates = ([snap] if snap is not None else []) + [r[1] for r in rows]
        return Loaded(
            updates,
            rows[-1][0] if rows else 0,
            len(rows),
            sum(len(r[1]) for r in rows),
            sum(r[0] for r in rows),
        )

    def _delete(self, key):
        # Under the document's compaction lock: a compaction committing after the
        # delete would write its snapshot back.
        lock = (LOCK_NAMESPACE, doc_lock_key(key))
        with self.pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", lock)
            for table in ("wsserver_snapshots", "wsserver_updates"):
                conn.execute(f"DELETE FROM {table} WHERE {_DOC}", key)

    def _ping(self):
        with self.pool.connection() as conn:
            conn.execute("SELECT 1").fetchall()

    def _size(self, key):
        with self.pool.connection() as conn:
            return conn.execute(
                f"SELECT (SELECT coalesce(sum(length(data)), 0) FROM wsserver_snapshots "
                f"WHERE {_DOC}) + (SELECT coalesce(sum(length(data)), 0) FROM wsserver_updates "
                f"WHERE {_DOC})",
                (*key, *key),
            ).fetchone()[0]

    def _documents(self):
        with self.pool.connection() as conn:
            return conn.execute(
                "SELECT tenant, app, name FROM wsserver_snapshots UNION "
                "SELECT tenant, app, name FROM wsserver_updates"
            ).fetchall()

    def _append_batch(self, items):
        # One statement for the whole batch. The rows are inserted in batch order, so
        # the ids the sequence hands out ascend in that order: sorted, they are the ids
        # of the items in turn (RETURNING itself promises no order).
        with self.pool.connection() as conn:
            ids = conn.execute(
                "INSERT INTO wsserver_updates (tenant, app, name, data) "
                "SELECT t, a, n, d FROM unnest(%s::text[], %s::text[], %s::text[], %s::bytea[]) "
                "WITH ORDINALITY AS u(t, a, n, d, o) ORDER BY o RETURNING id",
                (
                    [k[0] for k, _ in items],
                    [k[1] for k, _ in items],
                    [k[2] for k, _ in items],
                    [u for _, u in items],
                ),
            ).fetchall()
        return sorted(row[0] for row in ids)

    def _compact(self, key, upto_id, snapshot, seen):
        # One compactor per document across every process and machine: a session
        # advisory lock, taken before the transaction so that the transaction's
        # snapshot (REPEATABLE READ: every statement sees the same rows) starts after
        # the previous compactor committed. Rows another process commits meanwhile are
        # not in that snapshot, so they are neither folded nor deleted: they stay in
        # the log after the new snapshot.
        lock = (LOCK_NAMESPACE, doc_lock_key(key))
        with self.pool.connection() as conn:
            conn.execute("SELECT pg_advisory_lock(%s, %s)", lock)
            try:
                with conn.transaction():
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    stored = conn.execute(
                        f"SELECT count(*), coalesce(sum(id), 0) FROM wsserver_updates "
                        f"WHERE {_DOC} AND id <= %s",
                        (*key, upto_id),
                    ).fetchone()
                    snap, _ = self._stored(conn, key, rows=False)
                    folded = compacted(
                        snap,
                        snapshot,
                        seen,
                        stored,
                        lambda: [r[1] for r in self._stored(conn, key, upto_id)[1]],
                    )
                    conn.execute(
                        "INSERT INTO wsserver_snapshots (tenant, app, name, data) "
                        "VALUES (%s, %s, %s, %s) ON CONFLICT (tenant, app, name) "
                        "DO UPDATE SET data = excluded.data",
                        (*key, folded),
                    )
                    conn.execute(
                        f"DELETE FROM wsserver_updates WHERE {_DOC} AND id <= %s", (*key, upto_id)
                    )
            finally:
                if not conn.broken:
                    conn.execute("SELECT pg_advisory_unlock(%s, %s)", lock)
                # A broken connection's session, and its lock, end with it.
