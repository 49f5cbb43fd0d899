"""Postgres's part of the history (storage/history.py): the migration that adds it
(schema version 4) and the statements of `PostgresStore`'s history hooks (a mixin of it:
`self.pool`; `self._lock_doc(conn, key)`, the document's compaction lock for the
transaction).

The migration is idempotent (`IF NOT EXISTS` throughout): a database that a build of the
history before the admin console's index migrated has these tables at its version 3,
and `postgres.ensure_schema` runs 3 (the index) and this one again over it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .history import DAY, authors_json, new_version, pruned, version_meta

if TYPE_CHECKING:
    from .history import Retention

# Each update's author, what a compaction folded since the last version, the versions,
# the trash.
MIGRATION = """
ALTER TABLE wsserver_updates ADD COLUMN IF NOT EXISTS author text;
ALTER TABLE wsserver_snapshots ADD COLUMN IF NOT EXISTS last_id bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS authors text;
CREATE TABLE IF NOT EXISTS wsserver_versions (
    id bigserial PRIMARY KEY,
    tenant text NOT NULL, app text NOT NULL, name text NOT NULL,
    created_at double precision NOT NULL,
    label text,
    authors text NOT NULL,
    upto_id bigint NOT NULL,
    data bytea NOT NULL
);
CREATE INDEX IF NOT EXISTS wsserver_versions_by_doc ON wsserver_versions (tenant, app, name, id);
CREATE TABLE IF NOT EXISTS wsserver_trash (
    tenant text NOT NULL, app text NOT NULL, name text NOT NULL,
    deleted_at double precision NOT NULL,
    PRIMARY KEY (tenant, app, name)
);
"""

_DOC = "tenant = %s AND app = %s AND name = %s"


class PostgresHistory:
    """`PostgresStore`'s history hooks (see storage/history.py's VersionsMixin)."""

    if TYPE_CHECKING:
        pool: Any  # a psycopg_pool ConnectionPool once open
        retention: Retention | None

        def _lock_doc(self, conn: Any, key: Any) -> None: ...

        def _delete(self, key: Any) -> None: ...

    @staticmethod
    def _last_upto(conn, key):
        row = conn.execute(
            f"SELECT upto_id FROM wsserver_versions WHERE {_DOC} ORDER BY id DESC LIMIT 1", key
        ).fetchone()
        return row[0] if row else None

    def _create_version(self, key, label, automatic, now):
        # Under the document's compaction lock (a compaction moves rows into the
        # snapshot), and one version maker at a time across processes.
        with self.pool.connection() as conn, conn.transaction():
            self._lock_doc(conn, key)
            snap = conn.execute(
                f"SELECT data, last_id, authors FROM wsserver_snapshots WHERE {_DOC}", key
            ).fetchone()
            rows = conn.execute(
                f"SELECT id, data, author FROM wsserver_updates WHERE {_DOC} ORDER BY id", key
            ).fetchall()
            made = new_version(snap, rows, self._last_upto(conn, key), automatic)
            if made is None:
                return None
            state, authors, upto = made
            row = conn.execute(
                "INSERT INTO wsserver_versions (tenant, app, name, created_at, label, authors, "
                f"upto_id, data) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING {self._META}",
                (*key, now, label, authors_json(authors), upto, state),
            ).fetchone()
            if snap:
                conn.execute(f"UPDATE wsserver_snapshots SET authors = NULL WHERE {_DOC}", key)
            self._prune(conn, key, now)
        return version_meta(row)

    def _prune(self, conn, key, now):
        if self.retention is None:
            return 0
        rows = conn.execute(
            "SELECT id, created_at, label, length(data) FROM wsserver_versions "
            f"WHERE {_DOC} ORDER BY id",
            key,
        ).fetchall()
        gone = pruned(rows, now, self.retention)
        if gone:
            conn.execute("DELETE FROM wsserver_versions WHERE id = ANY(%s)", (gone,))
        return len(gone)

    _META = "id, created_at, label, authors, length(data)"

    def _versions(self, key):
        with self.pool.connection() as conn:
            rows = conn.execute(
                f"SELECT {self._META} FROM wsserver_versions WHERE {_DOC} ORDER BY id DESC", key
            ).fetchall()
        return [version_meta(row) for row in rows]

    def _version(self, key, version_id):
        with self.pool.connection() as conn:
            row = conn.execute(
                f"SELECT {self._META}, data FROM wsserver_versions WHERE {_DOC} AND id = %s",
                (*key, version_id),
            ).fetchone()
        return None if row is None else (version_meta(row), row[5])

    def _add_version(self, key, meta, state):
        with self.pool.connection() as conn, conn.transaction():
            present = conn.execute(
                f"SELECT 1 FROM wsserver_versions WHERE {_DOC} AND created_at = %s",
                (*key, meta["created_at"]),
            ).fetchone()
            if not present:
                conn.execute(
                    "INSERT INTO wsserver_versions (tenant, app, name, created_at, label, "
                    "authors, upto_id, data) VALUES (%s, %s, %s, %s, %s, %s, 0, %s)",
                    (*key, meta["created_at"], meta["label"], authors_json(meta["authors"]), state),
                )

    def _trash(self, key, now):
        with self.pool.connection() as conn:
            conn.execute(
                "INSERT INTO wsserver_trash (tenant, app, name, deleted_at) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (*key, now),
            )
            rows = conn.execute(f"SELECT deleted_at FROM wsserver_trash WHERE {_DOC}", key)
            return rows.fetchall()[0][0]  # there, inserted now or before

    def _untrash(self, key):
        with self.pool.connection() as conn:
            return conn.execute(f"DELETE FROM wsserver_trash WHERE {_DOC}", key).rowcount > 0

    def _trashed(self, keys):
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT t.tenant, t.app, t.name, t.deleted_at FROM wsserver_trash t "
                "JOIN unnest(%s::text[], %s::text[], %s::text[]) AS k(tenant, app, name) "
                "USING (tenant, app, name)",
                ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]),
            ).fetchall()
        return [(tuple(row[:3]), row[3]) for row in rows]

    def _trash_list(self):
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT tenant, app, name, deleted_at FROM wsserver_trash"
            ).fetchall()
        return [(tuple(row[:3]), row[3]) for row in rows]

    def _sweep(self, now):
        removed = 0
        with self.pool.connection() as conn:
            keys = conn.execute(
                "SELECT DISTINCT tenant, app, name FROM wsserver_versions"
            ).fetchall()
            for key in keys:
                with conn.transaction():
                    removed += self._prune(conn, tuple(key), now)
            assert self.retention is not None  # Store.sweep calls this only with retention
            expired = conn.execute(
                "SELECT tenant, app, name FROM wsserver_trash WHERE deleted_at < %s",
                (now - self.retention.trash_days * DAY,),
            ).fetchall()
        for key in expired:
            self._delete(tuple(key))
        return removed, [tuple(key) for key in expired]
