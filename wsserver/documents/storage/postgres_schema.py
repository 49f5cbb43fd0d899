"""Postgres's schema: the versioned migrations and the migrator (see postgres.py).

`wsserver_schema` holds one number, the schema version: MIGRATIONS[n] takes a database
from version n to n + 1. A build of the history (issue 24) made before the admin
console's index took version 3 gave its own tables that number; `ensure_schema` tells
the two apart by the index table and runs 3 and 4 (idempotent) over such a database.
"""

from __future__ import annotations

import logging
from typing import Any

from ...errors import StorageSchemaError
from . import postgres_catalogue as catalogue
from . import postgres_history as history

log = logging.getLogger(__name__)

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
    # 3: the admin console's document index and audit trail (postgres_catalogue.py)
    catalogue.MIGRATION,
    # 4: the history (postgres_history.py)
    history.MIGRATION,
]
SCHEMA_VERSION = len(MIGRATIONS)


def ensure_schema(conn: Any) -> int:
    """Create the tables on a new database, or migrate an older schema in place; refuse
    a newer one (written by a later wsserver) rather than write to it. One migrator at a
    time: processes starting together wait on an advisory lock."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_NAMESPACE, SCHEMA_LOCK))
        conn.execute("CREATE TABLE IF NOT EXISTS wsserver_schema (version integer NOT NULL)")
        row = conn.execute("SELECT max(version) FROM wsserver_schema").fetchone()
        version = row[0] or 0
        if version == 3 and _missing(conn, "wsserver_document_index"):
            # The history's own version 3 (module doc): its tables are there.
            version = 2
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


def _missing(conn: Any, table: str) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NULL", (table,)).fetchone()[0]
