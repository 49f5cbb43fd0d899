"""Postgres's document index and audit trail (see catalogue.py): the migration that
creates them (the index filled from what is stored) and the statements the store runs.

The index's text columns use the "C" collation: a name-prefix range is then one range
of the index (under a language collation, names sharing a prefix need not be adjacent).
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from ..key import DocKey
from .catalogue import audit_values

MIGRATION = """
CREATE TABLE wsserver_document_index (
    tenant text COLLATE "C" NOT NULL, app text COLLATE "C" NOT NULL,
    name text COLLATE "C" NOT NULL,
    bytes bigint NOT NULL DEFAULT 0, updated_at double precision NOT NULL,
    PRIMARY KEY (tenant, app, name)
);
CREATE INDEX wsserver_document_index_by_name ON wsserver_document_index (name, tenant, app);
INSERT INTO wsserver_document_index (tenant, app, name, bytes, updated_at)
    SELECT tenant, app, name, sum(length(data)), extract(epoch FROM now())
    FROM (SELECT tenant, app, name, data FROM wsserver_snapshots
          UNION ALL SELECT tenant, app, name, data FROM wsserver_updates) AS stored
    GROUP BY tenant, app, name;
CREATE TABLE wsserver_admin_audit (
    id bigserial PRIMARY KEY,
    at double precision NOT NULL, admin text NOT NULL, role text NOT NULL,
    action text NOT NULL, target text, ip text, details jsonb NOT NULL
);
"""

_DOC = "tenant = %s AND app = %s AND name = %s"


def index_appends(conn: Any, items: list[tuple]) -> None:
    """In an append's transaction: each document's bytes grow, its last change is now.
    Documents in key order, so two processes' commits lock their rows in one order."""
    grown: dict[DocKey, int] = defaultdict(int)
    for key, update, *_ in items:  # (key, update, ...): whatever else a commit carries
        grown[key] += len(update)
    keys = sorted(grown)
    conn.execute(
        "INSERT INTO wsserver_document_index AS i (tenant, app, name, bytes, updated_at) "
        "SELECT t, a, n, b, %s FROM unnest(%s::text[], %s::text[], %s::text[], %s::bigint[]) "
        "AS u(t, a, n, b) ON CONFLICT (tenant, app, name) DO UPDATE SET "
        "bytes = i.bytes + excluded.bytes, updated_at = excluded.updated_at",
        (
            time.time(),
            [k.tenant for k in keys],
            [k.app for k in keys],
            [k.name for k in keys],
            [grown[k] for k in keys],
        ),
    )


def index_grow(conn: Any, key: DocKey, delta: int) -> None:
    """After a compaction (its own transaction, so the compaction's REPEATABLE READ
    never conflicts with another process's append to this row): bytes += delta."""
    conn.execute(
        f"UPDATE wsserver_document_index SET bytes = bytes + %s WHERE {_DOC}", (delta, *key)
    )


def index_delete(conn: Any, key: DocKey) -> None:
    conn.execute(f"DELETE FROM wsserver_document_index WHERE {_DOC}", key)


def record_audit(conn: Any, entry: dict) -> int:
    return conn.execute(
        "INSERT INTO wsserver_admin_audit (at, admin, role, action, target, ip, details) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb) RETURNING id",
        audit_values(entry),
    ).fetchone()[0]
