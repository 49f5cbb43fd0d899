"""Document storage backends, side by side: `base` (the shared group-commit pipeline),
`memory` (tests), `sqlite` (the embedded default), `postgres` (platform deploys).
`open_store` picks one by URL. psycopg is imported only when a Postgres URL is opened
(after gevent's patching, which it needs)."""

from __future__ import annotations

from .base import Store, StoreError
from .stored import Loaded, fold

__all__ = ["Loaded", "Store", "StoreError", "fold", "is_postgres_url", "open_store"]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(url: str) -> bool:
    return url.startswith(POSTGRES_SCHEMES)


def open_store(url: str, sync: str = "normal", pool_size: int = 5, **timeouts: float) -> Store:
    """The store a `storage` URL names, started. `timeouts` (Postgres only): `timeout`,
    `statement_timeout`, `lock_timeout` in seconds (see PostgresStore)."""
    if url == "memory://":
        from .memory import MemoryStore

        return MemoryStore().start()
    if url.startswith("sqlite:///"):
        from .sqlite import SQLiteStore

        return SQLiteStore(url[len("sqlite:///") :], sync=sync).start()
    if is_postgres_url(url):
        from .postgres import PostgresStore

        return PostgresStore(url, pool_size=pool_size, **timeouts).start()
    raise ValueError(f"unsupported storage URL {url!r}")
