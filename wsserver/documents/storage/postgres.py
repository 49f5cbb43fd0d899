"""Postgres store: documents in the database a platform hands out as `DATABASE_URL`.

The same log + snapshot model as SQLite, in tables `wsserver_updates` and
`wsserver_snapshots`, next to `wsserver_registry` (the region registry) and
`wsserver_schema` (the schema version, see postgres_schema.py), the document index and
audit trail (postgres_catalogue.py) and the history (postgres_history.py).

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

Outages: a call that finds no connection within the pool's `timeout`, or whose
connection breaks, raises; the pipeline in base.py keeps the updates queued and
retries, and the pool replaces broken connections and reconnects by itself, trying at
least every `timeout` seconds (its `reconnect_timeout`: psycopg_pool's own back-off
grows to minutes otherwise, and commits would wait that long after the database is
back). Every deadline is enforced by the driver or the database, never by interrupting
psycopg (see support/blocking.py, `shielded`): `connect_timeout` for a new connection,
the pool's `timeout` for a free one, `statement_timeout` and `lock_timeout` (set on
every connection) for a statement and the locks it waits for (`pg_advisory_lock`
included). A database that hangs without answering at all (a frozen host) cannot
enforce them: a call then waits until it answers, but its callers (a handshake's load,
/readyz) stop waiting after their own bound.
"""

from __future__ import annotations

import logging
import sys
import zlib
from typing import Any

from psycopg_pool import ConnectionPool

from ...errors import ConfigError
from ...scrub import redact_url as redact
from ..key import DocKey
from . import catalogue as shared
from . import postgres_catalogue as catalogue
from . import postgres_history as history
from .base import Store
from .history import folded_authors
from .postgres_schema import LOCK_NAMESPACE, ensure_schema
from .stored import compacted, loaded, written

log = logging.getLogger(__name__)

# Defaults of the settings `storage_timeout`, `storage_statement_timeout` and
# `storage_lock_timeout` (settings/table.py), in seconds.
POOL_WAIT = 5.0
STATEMENT_TIMEOUT = 30.0
LOCK_TIMEOUT = 10.0


_DOC = "tenant = %s AND app = %s AND name = %s"


def open_pool(
    url: str,
    size: int,
    name: str,
    timeout: float = POOL_WAIT,
    statement_timeout: float = STATEMENT_TIMEOUT,
    lock_timeout: float = LOCK_TIMEOUT,
) -> ConnectionPool:
    """A started pool of autocommit connections to `url` (libpq URL; query options such
    as `sslmode=require` go to libpq as they are). `timeout`: seconds a call waits for a
    free connection, and a new connection for the server (`connect_timeout`, unless the
    URL sets one); every connection runs with `statement_timeout` and `lock_timeout`.
    Raises ConfigError when the database cannot be reached at start."""
    pool = ConnectionPool(
        url,
        min_size=1,
        max_size=size,
        open=False,
        timeout=timeout,
        reconnect_timeout=timeout,
        name=name,
        kwargs=connection_options(url, timeout),
        configure=lambda conn: set_timeouts(conn, statement_timeout, lock_timeout),
    )
    try:
        pool.open(wait=True, timeout=timeout * 2)
    except Exception as e:
        pool.close()
        raise ConfigError("storage", f"cannot connect to {redact(url)}: {e}") from e
    _check_cooperative()
    return pool


def connection_options(url: str, timeout: float) -> dict:
    """psycopg.connect's keyword arguments for `url`: autocommit, and a connect_timeout
    (whole seconds, at least 2 as libpq counts them) unless the URL has its own."""
    options: dict[str, Any] = {"autocommit": True}
    if "connect_timeout" not in url:
        options["connect_timeout"] = max(2, round(timeout))
    return options


def set_timeouts(conn: Any, statement_timeout: float, lock_timeout: float) -> None:
    """Bound every statement of `conn` and every lock it waits for, on the server (0:
    no bound, as Postgres reads it)."""
    conn.execute(
        "SELECT set_config('statement_timeout', %s, false), set_config('lock_timeout', %s, false)",
        (f"{round(statement_timeout * 1000)}ms", f"{round(lock_timeout * 1000)}ms"),
    )


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


def doc_lock_key(key: DocKey) -> int:
    """The second advisory-lock key of a document (a collision only serializes two
    documents' compactions; it is never wrong)."""
    return zlib.crc32("\x1f".join(key).encode()) - (1 << 31)


class PostgresStore(history.PostgresHistory, Store):
    threaded = False  # cooperative sockets; see the module docstring
    shielded = True  # never interrupt psycopg (support/blocking.py)

    def __init__(
        self,
        url: str,
        pool_size: int = 5,
        timeout: float = POOL_WAIT,
        statement_timeout: float = STATEMENT_TIMEOUT,
        lock_timeout: float = LOCK_TIMEOUT,
    ) -> None:
        super().__init__()
        self.url = url
        self.pool_size = pool_size
        self.timeouts = (timeout, statement_timeout, lock_timeout)
        # A ping waits at most `timeout` for a connection, then the server answers it.
        self.probe_stuck_after = timeout + 1.0
        self.pool = None

    def __repr__(self) -> str:
        return f"PostgresStore({redact(self.url)})"

    def _open(self):
        self.pool = open_pool(self.url, self.pool_size, "wsserver-storage", *self.timeouts)
        try:
            with self.pool.connection() as conn:
                ensure_schema(conn)
        except BaseException:
            self._close()  # its worker greenlets would outlive the failed start
            raise

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
            trashed = conn.execute(
                f"SELECT deleted_at FROM wsserver_trash WHERE {_DOC}", key
            ).fetchone()
        return loaded(snap, rows, trashed[0] if trashed else None)

    def _delete(self, key):
        # Under the document's compaction lock: a compaction committing after the
        # delete would write its snapshot back.
        with self.pool.connection() as conn, conn.transaction():
            self._lock_doc(conn, key)
            for table in (
                "wsserver_snapshots",
                "wsserver_updates",
                "wsserver_versions",
                "wsserver_trash",
            ):
                conn.execute(f"DELETE FROM {table} WHERE {_DOC}", key)
            catalogue.index_delete(conn, key)

    @staticmethod
    def _lock_doc(conn, key):
        """The document's compaction lock, held until the transaction ends."""
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_NAMESPACE, doc_lock_key(key)))

    def _ping(self):
        with self.pool.connection() as conn:
            conn.execute("SELECT 1").fetchall()

    def _answers(self):
        # A connection of its own, outside the pool, bounded by connect_timeout and
        # statement_timeout.
        import psycopg

        timeout, statement_timeout, lock_timeout = self.timeouts
        try:
            with psycopg.connect(self.url, **connection_options(self.url, timeout)) as conn:
                set_timeouts(conn, statement_timeout, lock_timeout)
                conn.execute("SELECT 1").fetchall()
        except psycopg.Error:
            return False
        return True

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
                "INSERT INTO wsserver_updates (tenant, app, name, data, author) "
                "SELECT t, a, n, d, w FROM unnest(%s::text[], %s::text[], %s::text[], "
                "%s::bytea[], %s::text[]) WITH ORDINALITY AS u(t, a, n, d, w, o) "
                "ORDER BY o RETURNING id",
                (
                    [k[0] for k, _, _ in items],
                    [k[1] for k, _, _ in items],
                    [k[2] for k, _, _ in items],
                    [u for _, u, _ in items],
                    [a for _, _, a in items],
                ),
            ).fetchall()
            catalogue.index_appends(conn, items)
        return sorted(row[0] for row in ids)

    def _compact(self, key, upto_id, snapshot, seen, based_on):
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
                    *stored, removed = conn.execute(
                        f"SELECT count(*), coalesce(sum(id), 0), coalesce(sum(length(data)), 0) "
                        f"FROM wsserver_updates WHERE {_DOC} AND id <= %s",
                        (*key, upto_id),
                    ).fetchone()
                    snap, _ = self._stored(conn, key, rows=False)
                    folded = compacted(
                        snap,
                        snapshot,
                        seen,
                        stored,
                        lambda: [r[1] for r in self._stored(conn, key, upto_id)[1]],
                        based_on,
                    )
                    old = conn.execute(
                        f"SELECT last_id, authors FROM wsserver_snapshots WHERE {_DOC}", key
                    ).fetchone()
                    rows = conn.execute(
                        f"SELECT id, author FROM wsserver_updates WHERE {_DOC} AND id <= %s "
                        "AND author IS NOT NULL",
                        (*key, upto_id),
                    ).fetchall()
                    conn.execute(
                        "INSERT INTO wsserver_snapshots (tenant, app, name, data, last_id, "
                        "authors) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (tenant, app, "
                        "name) DO UPDATE SET data = excluded.data, last_id = excluded.last_id, "
                        "authors = excluded.authors",
                        (
                            *key,
                            folded,
                            max(upto_id, old[0] if old else 0),
                            folded_authors(
                                old[1] if old else None, rows, self._last_upto(conn, key)
                            ),
                        ),
                    )
                    conn.execute(
                        f"DELETE FROM wsserver_updates WHERE {_DOC} AND id <= %s", (*key, upto_id)
                    )
                with conn.transaction():
                    delta = len(folded) - len(snap or b"") - removed
                    catalogue.index_grow(conn, key, delta)
            finally:
                if not conn.broken:
                    conn.execute("SELECT pg_advisory_unlock(%s, %s)", lock)
                # A broken connection's session, and its lock, end with it.
        return written(folded, snapshot)

    # --- the document index and audit trail (postgres_catalogue.py) ------------------

    def _search(self, tenant, app, prefix, after, limit):
        with self.pool.connection() as conn:
            return shared.search(
                conn.execute, "wsserver_document_index", "%s", tenant, app, prefix, after, limit
            )

    def _totals(self):
        with self.pool.connection() as conn:
            return shared.totals(conn.execute, "wsserver_document_index")

    def _record_audit(self, entry):
        with self.pool.connection() as conn:
            return catalogue.record_audit(conn, entry)

    def _audit_entries(self, before, limit):
        with self.pool.connection() as conn:
            return shared.audit_entries(conn.execute, "wsserver_admin_audit", "%s", before, limit)
