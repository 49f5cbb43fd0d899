"""Plans, quotas and abuse limits: close codes 4004, 4005, 4006 and 4008.

    plans.py          the `plans` and `rate_limit` settings, Limits and the claim rule
    clientip.py       the client IP (trusted_proxies: werkzeug's ProxyFix) and rate keys
    gates.py          RateLimitGate (4006, per IP, before the token) and QuotaGate
                      (4004, 4005, 4008, after the token and region checks)
    backends.py       the counting rule, MemoryQuota (one process)
    redis_backend.py  RedisQuota (cluster-wide, leases expire with a dead process)
    ops.py            the per-connection message budget (4006 on the message loop)
    refusals.py       one log line and one counter per refusal

`build_quota(config, authenticator)` wires them from the config; the app factory adds
`rate_gate` first and `quota_gate` last to the handshake's gates, and wraps the app in
`clientip.trust_proxies` (`rate_limit.trusted_proxies`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .backends import MemoryQuota, QuotaBackend
from .gates import QuotaGate, RateLimitGate, WriteQuotaGate
from .plans import check_app_plans
from .refusals import Refusals

if TYPE_CHECKING:
    from ..handshake.auth import Authenticator
    from ..settings import Config
    from ..support.liveness import Liveness
    from ..support.redis import FailFast


class Quota:
    """What the rest of the server uses: the two gates (and the quota gate of HTTP API
    writes), the refusal counters, and the backend (for `close()` at shutdown and for
    tests)."""

    def __init__(
        self,
        rate_gate: RateLimitGate,
        quota_gate: QuotaGate,
        refusals: Refusals,
        backend: QuotaBackend,
        write_gate: WriteQuotaGate | None = None,
    ) -> None:
        self.rate_gate = rate_gate
        self.quota_gate = quota_gate
        self.write_gate = write_gate
        self.refusals = refusals
        self.backend = backend

    def health_check(self) -> Callable[[], str | None] | None:
        """A check of the Redis the limits count in, for /healthz (wsserver/http/
        health.py): the quota counters' and the handshake rate's; None when both count
        in this process."""
        checks = [
            check
            for check in (self.backend.health_check(), self.rate_gate.health_check())
            if check is not None
        ]
        if not checks:
            return None

        def check():
            for one in checks:
                error = one()
                if error is not None:
                    return error
            return None

        return check


def storages(config: Config) -> tuple[str, str | None]:
    """(handshake-rate storage URI, quota Redis URL or None), from `rate_limit.storage`
    and `redis`: an explicit `rate_limit.storage` wins for the handshake rate; quotas use
    `redis`, else a Redis `rate_limit.storage`; neither set means this process only."""
    explicit = config.rate_limit["storage"]
    rate_storage = explicit or config.redis or "memory://"
    quota_redis = config.redis
    if quota_redis is None and explicit and explicit.startswith("redis"):
        quota_redis = explicit
    return rate_storage, quota_redis


def build_quota(
    config: Config,
    authenticator: Authenticator,
    fail_fast: FailFast | None = None,
    liveness: Liveness | None = None,
) -> Quota:
    """Validate app plans against `plans` (ConfigError naming the key) and build.
    `fail_fast`: the process's shared Redis FailFast (support/redis.py); `liveness`: the
    process's heartbeat and id (support/liveness.py), which renews the Redis lease."""
    check_app_plans(authenticator, config.plans)
    rate_limit = config.rate_limit
    refusals = Refusals()
    rate_storage, quota_redis = storages(config)
    backend: QuotaBackend
    if quota_redis:
        from .redis_backend import RedisQuota

        backend = RedisQuota(
            quota_redis, rate_limit["lease_seconds"], fail_fast=fail_fast, liveness=liveness
        )
    else:
        backend = MemoryQuota()
    rate_gate = RateLimitGate(
        rate_limit["handshakes_per_ip"], rate_storage, refusals, fail_fast=fail_fast
    )
    quota_gate = QuotaGate(config.plans, backend, refusals)
    write_gate = WriteQuotaGate(config.plans, backend, refusals)
    return Quota(rate_gate, quota_gate, refusals, backend, write_gate)
