"""The global document registry (which region hosts each document); see base.py.

`open_registry(config, **hooks)` picks the backend. With a single region in `regions`
there is nothing to decide between nodes: an in-process table, so a handshake never
waits on a registry round trip. With several, the shared one: Redis when the `redis`
setting is set (real deployments: every node of every region points at the same
Redis); otherwise the embedded one, kept in the node's storage: a `registry` table in
the same SQLite file (`sqlite:///PATH`) or a `wsserver_registry` table in the same
Postgres database (`postgresql://`), so nodes of several machines can share registry
and storage without Redis; or an in-process table for `memory://`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...documents.storage import is_postgres_url
from .base import Registry

if TYPE_CHECKING:
    from ...settings import Config


def open_registry(config: Config, **hooks: Any) -> Registry:
    """The started registry for `config` (region, registry timings, redis/storage).
    `hooks`: `evict`, `on_claim_lost`, `on_claim_reasserted` (see Registry), `liveness`
    (the process's heartbeat and id), `fail_fast` (the Redis backend's)."""
    # The process's Redis fail-fast window concerns the Redis backend only: a registry
    # that does not use Redis (one region, or no `redis`) keeps answering while Redis is
    # down, so reads and new documents need no Redis then.
    fail_fast = hooks.pop("fail_fast", None)
    options = dict(
        release_after=config.registry["release_after_seconds"],
        ttl=config.registry["ttl_seconds"],
        heartbeat=config.registry["heartbeat_seconds"],
        **{name: hook for name, hook in hooks.items() if hook is not None},
    )
    if len(config.regions) == 1 or (config.storage == "memory://" and not config.redis):
        from .memory import MemoryRegistry

        return MemoryRegistry(config.region, **options).start()
    if config.redis:
        from .redis import RedisRegistry

        if fail_fast is not None:
            options["fail_fast"] = fail_fast
        return RedisRegistry(config.region, config.redis, **options).start()
    if config.storage.startswith("sqlite:///"):
        from .sqlite import SQLiteRegistry

        return SQLiteRegistry(config.region, config.storage[len("sqlite:///") :], **options).start()
    if is_postgres_url(config.storage):
        from .postgres import PostgresRegistry

        timeouts = (
            config.storage_timeout,
            config.storage_statement_timeout,
            config.storage_lock_timeout,
        )
        return PostgresRegistry(config.region, config.storage, timeouts=timeouts, **options).start()
    raise ValueError(f"no registry for storage {config.storage!r}")


__all__ = ["Registry", "open_registry"]
