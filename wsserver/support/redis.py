"""One way to reach Redis: one client (one connection pool) per URL per process with the
project's timeouts, and the fail-fast window that keeps a hung Redis from making every
handshake wait.

Every Redis user (the limits' quotas and rate storage, the region registry, the
fan-out's commands, the admin board) shares the process's `client(url)`; only a reader
that blocks on Redis by design gets a connection of its own (`blocking_client`: the
fan-out's stream reader, the admin board's listener). Every Redis connection of the
process is made here, so one set of timeouts (and one reading of the URL, TLS included)
applies: a handshake waits at most one `SOCKET_TIMEOUT` on a Redis that does not answer.
Each connection names itself (`CLIENT LIST`: `wsserver:HOST:PID`, plus `:PURPOSE` for a
blocking one), so an operator sees which process holds which. After a failure, `FailFast` makes the
handshake-path calls of every user that shares it skip Redis at once, for a growing,
capped window (each user then does what it does without Redis: the limits admit, the
registry refuses claims of new documents with 1013); background loops (heartbeats,
renewals) keep trying and close the window when Redis answers again.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from .backoff import Backoff

if TYPE_CHECKING:
    import redis

SOCKET_TIMEOUT = 0.5  # seconds, for connect and for every command
HEALTH_CHECK_INTERVAL = 30
FAIL_FAST_MIN, FAIL_FAST_MAX = 0.5, 5.0


_SHARED: dict[str, redis.Redis] = {}  # url -> the process's client for it


def client_name(purpose: str | None = None) -> str:
    """What this process's connections call themselves in `CLIENT LIST`."""
    name = f"wsserver:{socket.gethostname()}:{os.getpid()}"
    return f"{name}:{purpose}" if purpose else name


def client(url: str) -> redis.Redis:
    """The process's one redis-py client for `url` (made on first use), with the
    project's timeouts. Shared: its users never close it (its connections end with the
    process); redis-py's pool gives each greenlet a connection of its own."""
    shared = _SHARED.get(url)
    if shared is None:
        import redis  # here, not at the top: a process without Redis never loads it (~60 ms)

        shared = _SHARED[url] = redis.Redis.from_url(
            url,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=SOCKET_TIMEOUT,
            health_check_interval=HEALTH_CHECK_INTERVAL,
            client_name=client_name(),
        )
    return shared


def blocking_client(url: str, purpose: str, read_timeout: float | None) -> redis.Redis:
    """A client of its own for a reader that blocks on Redis by design (XREAD BLOCK,
    pub/sub, BLPOP): `read_timeout` seconds per read (None: none), the connect timeout
    of the others. The caller closes it."""
    import redis

    return redis.Redis.from_url(
        url,
        socket_timeout=read_timeout,
        socket_connect_timeout=SOCKET_TIMEOUT,
        health_check_interval=HEALTH_CHECK_INTERVAL,
        client_name=client_name(purpose),
    )


def without_certificate_check(url: str) -> str:
    """`url` with `ssl_cert_reqs=none` (redis-py's query parameter) when it is a
    rediss:// URL that does not say otherwise: TLS that encrypts but does not check
    the server's certificate (also skips the host name check), for providers whose
    certificate is self-signed (Heroku Redis). Every Redis user reads it from the URL,
    the `limits` library's storage included."""
    parts = urlsplit(url)
    if parts.scheme != "rediss" or "ssl_cert_reqs" in parse_qs(parts.query):
        return url
    query = f"{parts.query}&ssl_cert_reqs=none" if parts.query else "ssl_cert_reqs=none"
    return urlunsplit(parts._replace(query=query))


def redis_check(client: redis.Redis) -> Callable[[], str | None]:
    """A /healthz check (wsserver/http/health.py) that PINGs `client`'s Redis: None when
    it answers, else why not."""

    def check():
        try:
            client.ping()
        except Exception as e:  # any failure means unreachable: say which
            return f"{type(e).__name__}: {e}"[:200]
        return None

    return check


def rate_storage(url: str, key_prefix: str) -> Any:
    """The `limits` library's Redis storage for `url` (the handshake rate), on the shared
    client's connection pool."""
    from limits.storage import RedisStorage

    return RedisStorage(url, connection_pool=client(url).connection_pool, key_prefix=key_prefix)


class FailFast:
    """After a failure, `skip()` is True for a window that doubles (up to a cap) while
    failures go on (the project's Backoff rule); `answered()` (any successful call)
    closes it."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        first: float = FAIL_FAST_MIN,
        cap: float = FAIL_FAST_MAX,
    ) -> None:
        self.clock = clock
        self._until = 0.0
        self._window = Backoff(first, cap)
        self.failing = False  # the last call failed (for /healthz)

    def skip(self) -> bool:
        return self.clock() < self._until

    def failed(self) -> None:
        self.failing = True
        self._until = self.clock() + self._window.next()

    def answered(self) -> None:
        self.failing = False
        self._until = 0.0
        self._window.reset()
