"""Many processes serving one document: the cross-process fan-out (README, "Running
several processes and machines").

    base.py           the engine: subscriptions, positions, catch-up, reconciliation,
                      awareness expiry, fault handling (`Fanout`); `NoFanout` for one
                      process
    redis_streams.py  the wire: one Redis stream per live document

`open_fanout(config)` picks it from the `redis` setting: without it a process shares
nothing with the others (one process per region).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..support.liveness import Liveness
from ..support.redis import FailFast
from .base import Fanout
from .nofanout import NoFanout

if TYPE_CHECKING:
    from ..settings import Config


def open_fanout(
    config: Config, fail_fast: FailFast | None = None, liveness: Liveness | None = None
) -> Fanout | NoFanout:
    """The started fan-out for `config`: Redis Streams when `redis` is set. `fail_fast`:
    the process's shared Redis outage window (support/redis.py); `liveness`: the
    process's heartbeat and id (support/liveness.py)."""
    if not config.redis:
        return NoFanout()
    from .redis_streams import RedisStreamsFanout

    return RedisStreamsFanout(config.redis, fail_fast=fail_fast, liveness=liveness).start()


__all__ = ["Fanout", "NoFanout", "open_fanout"]
