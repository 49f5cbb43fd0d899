"""The two handshake gates of the limits: per-IP handshake rate, then quotas.

`RateLimitGate.check_request` runs before anything else of the handshake, before the
token is even parsed. It counts with a `limits` moving window (memory or Redis); once
an IP is refused, the gate remembers until when its window stays full, so the rest of
a flood from that IP is refused without asking the storage again. `/discovery` calls
the same method: handshakes and discovery requests share one budget per client IP.

`QuotaGate.admit` runs after the token, tenant, app, origin (and region) checks: it
works out the connection's limits (its app's plan, lowered by the token's `limits`
claim), takes a lease from the quota backend (4004, 4005, 4008, in that order) and
gives the session the message budget of `max_ops_per_minute`.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import InvalidToken, RateLimited, WsServerError
from ..handshake.handshake import CLIENT_IP, Gate, Session
from ..logs import Throttled
from ..support.redis import FailFast, rate_storage
from .backends import Lease, QuotaBackend
from .clientip import client_ip, rate_key
from .ops import MessageBudget
from .plans import Limits, plan_of
from .refusals import Refusals

if TYPE_CHECKING:
    from limits.strategies import MovingWindowRateLimiter

log = logging.getLogger(__name__)

RATE_KEY_PREFIX = "wsserver:rate"
# Client IPs remembered as refused (a flood from one IP then costs a dict lookup per
# handshake, not a storage call); beyond this many, refusals go to the storage.
DENY_CACHE_SIZE = 100_000


def session_ip(environ: dict) -> str:
    ip = environ.get(CLIENT_IP)
    return ip if ip is not None else client_ip(environ)


class RateLimitGate(Gate):
    """4006 for a client IP over `rate_limit.handshakes_per_ip` (off when unset)."""

    def __init__(
        self,
        handshakes_per_ip: str | None,
        storage_uri: str,
        refusals: Refusals,
        fail_fast: FailFast | None = None,
    ) -> None:
        self.fail_fast = fail_fast or FailFast()
        self.refusals = refusals
        self.rates: list[Any] = []
        self.limiter: MovingWindowRateLimiter | None = None
        self._storage_errors = Throttled(log)
        # rate key -> (monotonic time it is refused until, the rate): see _deny.
        self._denied: dict[str, tuple[float, Any]] = {}
        self._next_prune = 0.0
        if handshakes_per_ip:
            # Here, not at the top: the `limits` library (and the asyncio it pulls in)
            # loads only in a process that limits the handshake rate.
            from limits import parse_many
            from limits.storage import MemoryStorage
            from limits.strategies import MovingWindowRateLimiter

            self.rates = parse_many(handshakes_per_ip)
            storage = (
                MemoryStorage()
                if storage_uri.startswith("memory://")
                else rate_storage(storage_uri, RATE_KEY_PREFIX)
            )
            self.limiter = MovingWindowRateLimiter(storage)

    def health_check(self) -> Callable[[], str | None] | None:
        """A check of the rate's Redis storage for /healthz, or None (memory, or off)."""
        if self.limiter is None:
            return None
        from limits.storage import MemoryStorage  # loaded with the limiter

        storage = self.limiter.storage
        if isinstance(storage, MemoryStorage):
            return None
        return lambda: None if storage.check() else "the rate limit storage does not answer"

    def check_request(self, environ: dict) -> None:
        """Count one request of its client IP; raise RateLimited (with `retry_after`,
        seconds) when one of the configured rates is exceeded."""
        ip = client_ip(environ)
        environ[CLIENT_IP] = ip
        if self.limiter is None:
            return
        key = rate_key(ip)
        denied = self._denied.get(key)
        if denied is not None:
            until, rate = denied
            left = until - time.monotonic()
            if left > 0:
                self._refuse(ip, rate, max(1, math.ceil(left)))
            del self._denied[key]
        if self.fail_fast.skip():
            return  # the storage failed a moment ago: admit without waiting on it
        for rate in self.rates:
            try:
                allowed = self.limiter.hit(rate, "handshake", key)
            except Exception as e:  # the storage (Redis) is unreachable: fail open
                self.fail_fast.failed()
                self._storage_error(e)
                return
            self.fail_fast.answered()
            if not allowed:
                self._refuse(ip, rate, self._deny(key, rate))

    def _refuse(self, ip, rate, retry_after):
        error = RateLimited("too many handshakes", retry_after)
        self.refusals.record(error, ip, detail=f"over {rate}")
        raise error

    def _deny(self, key, rate):
        """Remember that `key` stays refused until its window frees a slot (no entry of a
        moving window leaves before its expiry, and other processes can only add more);
        return that time as Retry-After seconds."""
        assert self.limiter is not None  # only a limiter's refusal is remembered
        try:
            stats = self.limiter.get_window_stats(rate, "handshake", key)
        except Exception as e:
            self._storage_error(e)
            return int(rate.get_expiry())
        left = stats.reset_time - time.time()
        if stats.remaining == 0 and left > 0:
            now = time.monotonic()
            if len(self._denied) >= DENY_CACHE_SIZE and now >= self._next_prune:
                self._next_prune = now + 1.0
                for stale in [k for k, (until, _) in self._denied.items() if until <= now]:
                    del self._denied[stale]
            if len(self._denied) < DENY_CACHE_SIZE:  # else: ask the storage each time
                self._denied[key] = (now + left, rate)
        return max(1, math.ceil(left))

    def _storage_error(self, error):
        self._storage_errors.error(
            "rate limit storage failed (%s: %s); admitting handshakes meanwhile",
            type(error).__name__,
            error,
        )


class QuotaGate(Gate):
    """4004, 4005, 4008 from the app's plan (and the token's `limits` claim)."""

    def __init__(
        self,
        plans: dict[str, Limits],
        backend: QuotaBackend,
        refusals: Refusals,
    ) -> None:
        self.plans = plans
        self.backend = backend
        self.refusals = refusals

    def limits_of(self, session: Session) -> Limits:
        """The connection's effective Limits; InvalidToken (4002) for a bad claim."""
        limits = plan_of(session.app, self.plans)
        claim = session.principal.claims.get("limits")
        if claim is None:
            return limits
        try:
            return limits.lowered_by(claim)
        except ValueError as e:
            raise InvalidToken(f"invalid limits claim: {e}") from None

    def admit(self, session: Session) -> Callable[[], None]:
        principal = session.principal
        limits = self.limits_of(session)
        ip = session_ip(session.environ)
        app = f"{principal.tenant}/{principal.app}"
        # A token without `sub` is a user of its own, for this connection only.
        user = f"u:{principal.user}" if principal.user else f"c:{uuid.uuid4().hex}"
        lease = Lease(principal.tenant, principal.app, session.key.name, user)
        try:
            release = self.backend.acquire(lease, limits)
        except WsServerError as error:
            self.refusals.record(error, ip, app=app, detail=f"document {session.key.name}")
            raise
        if limits.max_ops_per_minute is not None:

            def exhausted(error):
                self.refusals.record(
                    error, ip, app=app, detail=f"over {limits.max_ops_per_minute} messages/minute"
                )

            session.message_budget = MessageBudget(limits.max_ops_per_minute, exhausted)
        return release

    def shutdown(self, flushed: bool) -> None:
        """Shutdown: every connection has closed; give back this process's share
        (a no-op in memory, drops the instance's lease in Redis)."""
        self.backend.close()


class WriteQuotaGate(QuotaGate):
    """The quota of an HTTP document API write (wsserver/http/documents.py): only
    `max_documents` (4005) applies, since a write makes its document active; the
    connection, user and message limits are about sockets. While the write runs it
    holds a lease like a connection's, so the document counts as active meanwhile."""

    def limits_of(self, session: Session) -> Limits:
        return Limits(max_documents=super().limits_of(session).max_documents)
