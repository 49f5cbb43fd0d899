"""Quota counters: who holds a share of which app's limits, in-process or cluster-wide.

Three counts decide 4004, 4005 and 4008, checked in that order and taken all at once:

    connections  open connections of an app (tenant, app)        limit max_connections
    documents    documents of an app with >= 1 open connection   limit max_documents
    users        distinct users among a document's connections   limit max_users_per_doc

A connection holds a *lease*: (tenant, app, document, user). `user` is "u:" + the
token's `sub`, or "c:" + a random id for a token without one (its own user). Taking a
lease is check-then-increment in one atomic step, so a refusal leaves no trace, and
opening a document that is already active, or joining as a user the document already
has, never trips 4005 or 4008.

`QuotaBackend` holds what every backend shares (the local record of held leases,
idempotent release, refusal by code); subclasses implement `_acquire` and `_release`:
`MemoryQuota` (this process only: the default) and `RedisQuota`
(wsserver/quota/redis_backend.py: every process and node sharing one Redis).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, NamedTuple

from ..errors import ConnectionLimit, DocumentLimit, UserLimit

if TYPE_CHECKING:
    from .plans import Limits

log = logging.getLogger(__name__)

REFUSALS = {4004: ConnectionLimit, 4005: DocumentLimit, 4008: UserLimit}


class Lease(NamedTuple):
    tenant: str
    app: str
    doc: str
    user: str


def refusal_code(
    limits: Limits,
    connections: int,
    documents: int,
    doc_active: bool,
    users: int,
    user_present: bool,
) -> int:
    """The rule every backend applies (the Redis one in Lua): 0 to admit, else the code.

    `connections`, `documents`, `users`: the current counts of the app, the app and the
    document; `doc_active` / `user_present`: whether the document already has a
    connection / the user already has a connection to it.
    """
    if limits.max_connections is not None and connections >= limits.max_connections:
        return 4004
    if limits.max_documents is not None and not doc_active and documents >= limits.max_documents:
        return 4005
    if (
        limits.max_users_per_doc is not None
        and not user_present
        and users >= limits.max_users_per_doc
    ):
        return 4008
    return 0


class QuotaBackend:
    """Shared logic; see the module docstring."""

    def __init__(self) -> None:
        # Lease -> open connections of this process holding it
        self.held: Counter[Lease] = Counter()

    def health_check(self) -> Callable[[], str | None] | None:
        """A check of the remote counters for /healthz, or None when they are local."""
        return None

    def acquire(self, lease: Lease, limits: Limits) -> Callable[[], None]:
        """Take `lease` under `limits` (settings.Limits) or raise ConnectionLimit,
        DocumentLimit or UserLimit. Returns the release callable (runs once)."""
        code = self._acquire(lease, limits)
        if code:
            raise REFUSALS[code]()
        self.held[lease] += 1
        released: list[bool] = []

        def release():
            if released:
                return
            released.append(True)
            self._release(lease)  # which calls _forget(lease) at its own right moment

        return release

    def _forget(self, lease):
        left = self.held[lease] - 1
        if left > 0:
            self.held[lease] = left
        else:
            del self.held[lease]

    def usage(self, tenant: str, app: str, doc: str | None = None) -> dict[str, int]:
        """{connections, documents[, users]} as this backend counts them (tests, metrics)."""
        raise NotImplementedError

    def close(self) -> None:
        """Give back every share this process holds (clean shutdown)."""

    # --- what subclasses implement --------------------------------------------------

    def _acquire(self, lease, limits):
        """Check and count atomically; return 0 (admitted) or the refusal code."""
        raise NotImplementedError

    def _release(self, lease):
        """Give one share of `lease` back; call `self._forget(lease)` exactly once, at the
        point where `held` must stop counting it (see RedisQuota: not during a resync)."""
        raise NotImplementedError


class MemoryQuota(QuotaBackend):
    """Counts in this process only: the default, and right for one process. Under
    `gunicorn -w N` without Redis every worker enforces the limits on its own share."""

    def __init__(self) -> None:
        super().__init__()
        # Pure dict work that never yields to another greenlet; the lock only matters
        # if real threads ever call in.
        self._lock = threading.Lock()
        # (tenant, app) -> open connections
        self._connections: Counter[tuple[str, str]] = Counter()
        # (tenant, app) -> {doc: connections}
        self._documents: defaultdict[tuple[str, str], Counter[str]] = defaultdict(Counter)
        # (tenant, app, doc) -> {user: connections}
        self._users: defaultdict[tuple[str, str, str], Counter[str | None]] = defaultdict(Counter)

    def _acquire(self, lease, limits):
        app = (lease.tenant, lease.app)
        doc = (lease.tenant, lease.app, lease.doc)
        with self._lock:
            documents: Mapping[str, int] = self._documents.get(app, {})
            users: Mapping[str | None, int] = self._users.get(doc, {})
            code = refusal_code(
                limits,
                self._connections[app],
                len(documents),
                lease.doc in documents,
                len(users),
                lease.user in users,
            )
            if code:
                return code  # nothing was written: reading a Counter adds no key
            self._connections[app] += 1
            self._documents[app][lease.doc] += 1
            self._users[doc][lease.user] += 1
            return 0

    def _release(self, lease):
        self._forget(lease)
        app = (lease.tenant, lease.app)
        doc = (lease.tenant, lease.app, lease.doc)
        with self._lock:
            _decrement(self._connections, app)
            _decrement(self._documents[app], lease.doc)
            if not self._documents[app]:
                del self._documents[app]
            _decrement(self._users[doc], lease.user)
            if not self._users[doc]:
                del self._users[doc]

    def usage(self, tenant: str, app: str, doc: str | None = None) -> dict[str, int]:
        result = {
            "connections": self._connections.get((tenant, app), 0),
            "documents": len(self._documents.get((tenant, app), {})),
        }
        if doc is not None:
            result["users"] = len(self._users.get((tenant, app, doc), {}))
        return result


def _decrement(counter, key):
    left = counter.get(key, 0) - 1
    if left > 0:
        counter[key] = left
    else:
        if left < 0:
            log.error("quota counter %r released more often than taken", key)
        counter.pop(key, None)
