"""The global document registry (which region hosts each document); see base.py.

`open_registry(config, evict, on_claim_lost)` picks the backend: Redis when the `redis` setting is
set (real deployments: every node of every region points at the same Redis);
otherwise the embedded one, kept in the node's storage: a `registry` table in the same
SQLite file (`sqlite:///PATH`), or an in-process table for `memory://`.
"""

from .base import Registry


def open_registry(config, evict=None, on_claim_lost=None):
    """The started registry for `config` (region, registry timings, redis/storage)."""
    options = dict(release_after=config.registry["release_after_seconds"],
                   ttl=config.registry["ttl_seconds"],
                   heartbeat=config.registry["heartbeat_seconds"])
    if evict is not None:
        options["evict"] = evict
    if on_claim_lost is not None:
        options["on_claim_lost"] = on_claim_lost
    if config.redis:
        from .redis import RedisRegistry
        return RedisRegistry(config.region, config.redis, **options).start()
    if config.storage.startswith("sqlite:///"):
        from .sqlite import SQLiteRegistry
        return SQLiteRegistry(config.region, config.storage[len("sqlite:///"):], **options).start()
    if config.storage == "memory://":
        from .memory import MemoryRegistry
        return MemoryRegistry(config.region, **options).start()
    raise ValueError(f"no registry for storage {config.storage!r}")


__all__ = ["Registry", "open_registry"]
