"""What the admin console asks of storage besides documents themselves: the document
index (every stored document with its size and last change, searched by tenant, app
and name prefix, a page at a time) and the admin audit trail.

The index is a table of its own, one row per stored document, kept by the same
transactions that append, compact and delete (each backend's `_index_*` statements),
and filled from the stored documents when it is created. A search walks an index of
that table (tenant, app, name) or (name, tenant, app), from the cursor on, for one page:
its cost does not grow with the number of stored documents. `bytes` there serves the
per-tenant totals; a document's own size is `Store.size` everywhere (one figure).

`Catalogue` is mixed into `Store` (base.py): the public calls, bounded like the
others; backends implement `_search`, `_totals`, `_record_audit`, `_audit_entries`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

# The highest code point: `name < prefix + AFTER_ALL` bounds a prefix range (the index
# compares UTF-8 bytes, SQLite's BINARY and Postgres's "C" collation).
AFTER_ALL = "\U0010ffff"
MAX_PAGE = 500


def search_plan(
    tenant: str | None, app: str | None, prefix: str, after: tuple[str, ...] | None
) -> tuple[str, list[Any], tuple[str, str, str]]:
    """(WHERE clause with `?` placeholders, its arguments, ORDER BY columns) of a search:
    by tenant first when one is given (the primary key), else by name (the name index).
    `after`: (tenant, app, name) of the previous page's last row."""
    order = ("tenant", "app", "name") if tenant else ("name", "tenant", "app")
    conditions, args = [], []
    for column, value in (("tenant", tenant), ("app", app)):
        if value:
            conditions.append(f"{column} = ?")
            args.append(value)
    if prefix:
        conditions.append("name >= ? AND name < ?")
        args += [prefix, prefix + AFTER_ALL]
    if after is not None:
        conditions.append(f"({', '.join(order)}) > (?, ?, ?)")
        args += list(after) if tenant else [after[2], after[0], after[1]]
    return " AND ".join(conditions) or "TRUE", args, order


def search(
    execute: Callable[..., Any],
    table: str,
    mark: str,
    tenant: str | None,
    app: str | None,
    prefix: str,
    after: tuple[str, ...] | None,
    limit: int,
) -> list[dict[str, Any]]:
    """A search run by a backend: `execute(sql, args)` (its connection's), `mark` its
    placeholder."""
    where, args, order = search_plan(tenant, app, prefix, after)
    rows = execute(
        f"SELECT tenant, app, name, bytes, updated_at FROM {table} "
        f"WHERE {where.replace('?', mark)} ORDER BY {', '.join(order)} LIMIT {mark}",
        (*args, limit),
    ).fetchall()
    return [row_of(row) for row in rows]


def totals(execute: Callable[..., Any], table: str) -> list[dict[str, Any]]:
    rows = execute(
        f"SELECT tenant, app, count(*), sum(bytes) FROM {table} GROUP BY tenant, app"
    ).fetchall()
    return [{"tenant": t, "app": a, "documents": n, "bytes": int(b)} for t, a, n, b in rows]


def audit_entries(
    execute: Callable[..., Any], table: str, mark: str, before: int | None, limit: int
) -> list[dict[str, Any]]:
    rows = execute(
        f"SELECT id, at, admin, role, action, target, ip, details FROM {table} "
        f"WHERE id < {mark} ORDER BY id DESC LIMIT {mark}",
        (before if before is not None else 2**63 - 1, limit),
    ).fetchall()
    return [audit_row(row) for row in rows]


def row_of(row: tuple) -> dict[str, Any]:
    tenant, app, name, size, updated_at = row
    return {"tenant": tenant, "app": app, "name": name, "bytes": size, "updated_at": updated_at}


def audit_row(row: tuple) -> dict[str, Any]:
    entry_id, at, admin, role, action, target, ip, details = row
    return {
        "id": entry_id,
        "at": at,
        "admin": admin,
        "role": role,
        "action": action,
        "target": target,
        "ip": ip,
        "details": json.loads(details) if isinstance(details, str) else (details or {}),
    }


def audit_values(entry: dict[str, Any]) -> tuple:
    """The column values of a new audit entry (`at` defaults to now)."""
    return (
        entry.get("at", time.time()),
        entry["admin"],
        entry["role"],
        entry["action"],
        entry.get("target"),
        entry.get("ip"),
        json.dumps(entry.get("details") or {}, sort_keys=True, default=str),
    )


class Catalogue:
    """The index and audit calls of a `Store`, each bounded by `timeout` seconds
    (StoreError after it, as `Store.size`)."""

    _bounded: Callable[..., Any]

    def search(
        self,
        tenant: str | None = None,
        app: str | None = None,
        prefix: str = "",
        after: tuple[str, str, str] | None = None,
        limit: int = 50,
        timeout: float | None = None,
    ) -> list[dict[str, Any]]:
        """Stored documents matching, in index order after `after` (the previous page's
        last row as (tenant, app, name)); each {"tenant", "app", "name", "bytes",
        "updated_at" (Unix time of the last commit)}."""
        limit = max(1, min(limit, MAX_PAGE))
        return self._bounded(
            "search", self._search, tenant, app, prefix, after, limit, timeout=timeout
        )

    def totals(self, timeout: float | None = None) -> list[dict[str, Any]]:
        """Per (tenant, app): {"tenant", "app", "documents", "bytes"} stored."""
        return self._bounded("totals", self._totals, timeout=timeout)

    def record_audit(self, entry: dict[str, Any], timeout: float | None = None) -> int:
        """Store one audit entry {admin, role, action, target, ip, details}; its id."""
        return self._bounded("audit", self._record_audit, entry, timeout=timeout)

    def audit_entries(
        self, before: int | None = None, limit: int = 50, timeout: float | None = None
    ) -> list[dict[str, Any]]:
        """Audit entries newest first, those with an id below `before` when given."""
        limit = max(1, min(limit, MAX_PAGE))
        return self._bounded("audit", self._audit_entries, before, limit, timeout=timeout)

    def _search(self, tenant, app, prefix, after, limit):
        raise NotImplementedError

    def _totals(self):
        raise NotImplementedError

    def _record_audit(self, entry):
        raise NotImplementedError

    def _audit_entries(self, before, limit):
        raise NotImplementedError
