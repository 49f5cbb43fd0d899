"""Document storage backends, side by side: `base` (the shared group-commit pipeline),
`memory` (tests), `sqlite` (the embedded default). `open_store` picks one by URL."""

from __future__ import annotations

from .base import Loaded, Store, StoreError, fold

__all__ = ["Loaded", "Store", "StoreError", "fold", "open_store"]


def open_store(url: str, sync: str = "normal") -> Store:
    """The store a `storage` URL names, started."""
    if url == "memory://":
        from .memory import MemoryStore
        return MemoryStore().start()
    if url.startswith("sqlite:///"):
        from .sqlite import SQLiteStore
        return SQLiteStore(url[len("sqlite:///"):], sync=sync).start()
    raise ValueError(f"unsupported storage URL {url!r}")
