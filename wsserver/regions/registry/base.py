"""The region registry: which region hosts each document right now.

A *claim* says "document K is live in region R". It is held by the nodes (processes)
of R that have connections to K, each holder with its own expiry, so a claim lives
while any of its holders renews it and dies by itself at most `ttl` seconds after the
last renewal of its last holder: a node that is killed (kill -9) or cut off loses its
claims within that bound. Nodes of different regions must share one registry (the
same SQLite file, or the same Redis) and the same document storage.

Backends implement the shared table's atomic operations, and nothing else:

    _claim(key, node, region, ttl) -> region
        Atomically: if a live holder of another region exists, answer that region and
        change nothing; else record `node` as a holder of `key` for `region`, expiring
        `ttl` seconds from now, and answer `region`.
    _renew(keys, node, ttl) -> set of keys
        Push the expiry of `node`'s live holdings of `keys`; answer the keys renewed.
        Never creates a holding, so a renewal racing a release cannot resurrect it.
    _release(key, node)
        Drop `node`'s holding (release-if-ours); the claim ends with its last holder.
    _lookup(key) -> region or None
        The region with a live holder of `key`, if any.
    _open(), _close()

This base class owns what every backend shares, on this node:

- how many of this node's connections use each document (`acquire` / `release`);
- the delayed release: `release_after` seconds after the node's last connection to a
  document closes, the room is evicted (flushed, compacted and dropped: updates are
  durable before they are echoed, and eviction waits for those still queued), and only
  then is the claim released, so the next region loads everything from storage and
  this node keeps no stale copy to serve if the document comes back. A connection that
  comes back before that cancels the release;
- the renewal of every claim this node holds, at most `heartbeat` seconds apart, on the
  process's heartbeat (support/liveness.py), whose id names this node in the table;
- outages: while the registry cannot be reached, this node keeps serving every
  document it holds (their handshakes need no registry call); only claims of new
  documents fail (1013), and after a failure they fail at once for a capped, growing
  back-off, so a hung registry costs a handshake at most one call timeout. When the
  registry answers again, the next heartbeat re-asserts every claim that expired
  meanwhile; the room is then refreshed from storage (`on_claim_reasserted`), since
  another region may have taken the document, written to it and let it go meanwhile.
- losing a claim: only a real conflict moves a document: a heartbeat that finds it
  claimed by another region closes its connections here (`on_claim_lost`, 4009 to that
  region) and drops its room *without* compaction (a snapshot of a stale copy would
  overwrite what the new region stored). Until that is done new connections get 1013.
  And `may_compact(key)`, asked before every compaction, says no as soon as ownership
  is in doubt (no successful renewal for a TTL, or a renewal that found the holding
  expired), so even a node that wakes up from a long freeze with clients still writing
  cannot overwrite the new owner's snapshot in the window before it notices.
- `close()` at clean shutdown: every claim released at once.

Blocking backends (SQLite) run their calls in one worker thread (`threaded = True`),
like wsserver/store does; Redis calls run in the calling greenlet (sockets are
cooperative under gevent).

Limits: a claim is per region, not per node. Two nodes of one region may both serve
a document; keeping their copies in step is the multi-process scale-out's job, not
the registry's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import gevent

from ... import metrics
from ...support.blocking import BlockingCalls

if TYPE_CHECKING:
    from ...documents.key import DocKey
from ...errors import RegistryUnavailable
from ...logs import Throttled
from ...support.backoff import Backoff
from ...support.liveness import Beat, Liveness
from ...support.redis import FailFast
from .holding import Holding
from .renewal import Renewal

log = logging.getLogger(__name__)

# Backoff(first, cap) between eviction attempts of a delayed release that failed.
RELEASE_RETRY = (0.2, 10.0)
# The longest a handshake waits for a document's lock (held while the document is
# claimed, or flushed and evicted before its release): then 1013, retry. Shutdown
# waits as long for each document, then leaves its claim to expire.
LOCK_TIMEOUT = 1.0


def _never_loaded(key, compact=True):
    return True


def _nothing_to_close(key, region):
    log.warning("claim on %s lost to %s; no connection closer installed", "/".join(key), region)


def _nothing_to_refresh(key):
    pass  # no documents are served by this registry's user (tests)


class Registry(BlockingCalls):
    threaded = False

    def __init__(
        self,
        region: str,
        release_after: float = 30.0,
        ttl: float = 15.0,
        heartbeat: float = 5.0,
        evict: Callable[..., bool] = _never_loaded,
        on_claim_lost: Callable[[DocKey, str | None], object] = _nothing_to_close,
        on_claim_reasserted: Callable[[DocKey], object] = _nothing_to_refresh,
        clock: Callable[[], float] = time.monotonic,
        fail_fast: FailFast | None = None,
        retry: tuple[float, float] = RELEASE_RETRY,
        liveness: Liveness | None = None,
    ) -> None:
        if not 0 < heartbeat < ttl:
            raise ValueError("heartbeat must be shorter than ttl")
        # The process's heartbeat and id; without one (a registry built alone, tests)
        # a heartbeat of its own at the registry's pace, and an id of its own.
        self._own_liveness = liveness is None
        self.liveness = liveness if liveness is not None else Liveness(heartbeat, ttl)
        if self.liveness.heartbeat >= ttl:
            raise ValueError("the process heartbeat must be shorter than the claims' ttl")
        self.region = region
        self.node = self.liveness.process
        self.release_after = release_after
        self.ttl = ttl
        self.heartbeat = heartbeat
        # evict(key, compact) -> True once no room of `key` is loaded in this process.
        self.evict = evict
        # on_claim_lost(key, region_or_None): close this node's connections to `key`.
        self.on_claim_lost = on_claim_lost
        # on_claim_reasserted(key): a claim that expired during an outage was taken
        # again; bring the live copy up to date with what storage holds.
        self.on_claim_reasserted = on_claim_reasserted
        self.clock = clock
        self.retry = retry  # the Backoff (first, cap) of a delayed release's evictions
        # After a failed registry call, claims of new documents fail at once (1013) for
        # a while: a hung registry must not make every handshake wait for a timeout.
        # Shared with the other Redis users of the process when the app passes one.
        self.fail_fast = fail_fast or FailFast(clock)
        self._errors = Throttled(log, every=10.0)
        self._holdings: dict[DocKey, Holding] = {}
        self._start_calls()
        self._beat: Beat | None = None
        self._last_renewal = clock()
        self.renewal = Renewal(self)
        self._closed = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.node})"

    # --- life cycle -----------------------------------------------------------------

    def start(self) -> Registry:
        self._call(self._open)
        self._last_renewal = self.clock()
        self._beat = self.liveness.subscribe(
            "region registry", self._beat_renew, every=self.heartbeat
        )
        if self._own_liveness:
            self.liveness.start()
        return self

    def close(self, release: bool = True) -> None:
        """Shutdown: stop renewing and, with `release`, let every claim of this node go
        at once (the caller has flushed every room first). A claim not released (or
        whose release fails, which is logged) expires within `ttl`.
        """
        if self._closed:
            return
        self._closed = True
        if self._beat is not None:
            self._beat.cancel()
        if self._own_liveness:
            self.liveness.stop()
        if not release:
            log.warning(
                "not every document was flushed: its claims expire within %.0fs "
                "instead of being released now",
                self.ttl,
            )
        for key, holding in list(self._holdings.items()):
            # not in the middle of a claim or a scheduled release, but never for ever
            if not holding.lock.acquire(timeout=LOCK_TIMEOUT):
                log.error(
                    "shutdown: %s is still being flushed or evicted; its claim "
                    "expires within %.0fs",
                    "/".join(key),
                    self.ttl,
                )
                continue
            try:
                if holding.claimed and release:
                    self._release_claim(key, holding)
            finally:
                holding.lock.release()
        self._holdings.clear()
        try:
            self._call(self._close)
        finally:
            self._stop_calls()

    def _backend(self, what, fn, *args):
        """Run a handshake-path backend call; any failure becomes RegistryUnavailable
        (1013 / 503), and so does every call during the fail-fast window that follows."""
        if self.fail_fast.skip():
            raise RegistryUnavailable()
        try:
            result = self._call(fn, *args)
        except RegistryUnavailable:
            raise
        except Exception as e:
            metrics.REGISTRY_ERRORS.inc()
            self._failed(what, e)
            raise RegistryUnavailable() from e
        self._answered()
        return result

    def _failed(self, what, error):
        self.fail_fast.failed()
        # One line per 10 s, no traceback: during an outage every handshake and every
        # heartbeat would otherwise log it.
        self._errors.error("region registry: %s failed: %s: %s", what, type(error).__name__, error)

    def _answered(self):
        self.fail_fast.answered()

    def health_check(self) -> Callable[[], str | None] | None:
        """A check of the backend for /healthz (wsserver/http/health.py), or None when
        the registry has nothing remote to reach (memory, SQLite)."""
        return None

    # --- connections ----------------------------------------------------------------

    def acquire(self, key: DocKey) -> str:
        """Count one more connection of this node to `key`, claiming it if needed.

        Returns the region hosting the document. When it is this node's region the
        caller must call `release(key)` exactly once when the connection ends; when it
        is another region nothing was taken. Raises RegistryUnavailable when the
        registry cannot be reached or the document is being let go after a lost claim.
        """
        while True:
            holding = self._holdings.get(key)
            if holding is None:
                holding = self._holdings[key] = Holding()
            if not holding.lock.acquire(timeout=LOCK_TIMEOUT):
                # A flush before the release is stuck (storage failing): the handshake
                # gets 1013 and the provider retries, rather than hanging.
                raise RegistryUnavailable("document is busy, retry")
            try:
                if self._holdings.get(key) is not holding:
                    continue  # released while we waited for the lock: start over
                if holding.lost:
                    raise RegistryUnavailable("document is moving, retry")
                if not holding.claimed:
                    try:
                        region = self._backend(
                            "claim", self._claim, key, self.node, self.region, self.ttl
                        )
                    except RegistryUnavailable:
                        self._forget_if_unused(key, holding)
                        raise
                    if region != self.region:
                        self._forget_if_unused(key, holding)
                        return region
                    holding.claimed = True
                holding.count += 1
                holding.generation += 1  # cancels a scheduled release
                return self.region
            finally:
                holding.lock.release()

    def _forget_if_unused(self, key, holding):
        if holding.count == 0 and not holding.claimed and self._holdings.get(key) is holding:
            del self._holdings[key]

    def release(self, key: DocKey, at_once: bool = False) -> None:
        """One connection of this node to `key` ended. Never blocks. `at_once`: it never
        reached the document (refused by a later check): when it was the last, let the
        claim go now instead of after `release_after`."""
        holding = self._holdings.get(key)
        if holding is None or holding.count <= 0:
            log.error("release of %s without a matching acquire", "/".join(key))
            return
        holding.count -= 1
        if holding.count == 0:
            self._schedule_release(key, holding, at_once)

    def _schedule_release(self, key, holding, at_once=False):
        holding.generation += 1
        delay = 0.0 if at_once or holding.lost or self._closed else self.release_after
        gevent.spawn(self._release_later, key, holding, holding.generation, delay)

    def _release_later(self, key: DocKey, holding: Holding, generation: int, delay: float) -> None:
        gevent.sleep(delay)
        backoff = Backoff(*self.retry)
        while True:
            with holding.lock:
                if (
                    holding.generation != generation
                    or holding.count
                    or self._holdings.get(key) is not holding
                ):
                    return  # a connection came back, or someone else finished the job
                try:
                    evicted = self.evict(key, compact=not holding.lost)
                except Exception:
                    log.exception("%s: eviction before release failed; retrying", "/".join(key))
                    evicted = False
                if evicted:
                    self._release_claim(key, holding)
                    return
            backoff.sleep()

    def _release_claim(self, key, holding):
        """Let the claim go (called with the key's lock held, the room evicted).

        The holding leaves the table only once the backend release is done: an acquire
        meanwhile waits on its lock, so its claim cannot reach the backend before this
        release and be undone by it.
        """
        holding.claimed = False
        try:
            self._call(self._release, key, self.node)
        except Exception:
            log.exception(
                "release of %s failed; the claim expires within %.0fs", "/".join(key), self.ttl
            )
        finally:
            if self._holdings.get(key) is holding:
                del self._holdings[key]
        log.debug("released %s", "/".join(key))

    def lookup(self, key: DocKey) -> str | None:
        """The region where `key` is live now, or None; claims nothing."""
        return self._backend("lookup", self._lookup, key)

    def may_compact(self, key: DocKey) -> bool:
        """True while this node surely still owns `key`: it holds the claim, and its
        claims were renewed less than a TTL ago. A node frozen or cut off for longer may
        have lost the document, and a snapshot of its copy would overwrite what the new
        owner stored (the store asks this before every compaction)."""
        holding = self._holdings.get(key)
        if holding is None or not holding.claimed or holding.lost or holding.refreshing:
            return False
        return self.clock() - self._last_renewal < self.ttl

    def holds(self, key: DocKey) -> bool:
        """True while this node holds a claim on `key` (for tests and /healthz)."""
        holding = self._holdings.get(key)
        return holding is not None and holding.claimed

    # --- heartbeat ------------------------------------------------------------------

    def _beat_renew(self) -> None:
        """The process's beat (support/liveness.py)."""
        if self._closed:
            return
        try:
            self.renewal.renew()
        except Exception:
            log.exception("region registry heartbeat failed")

    def renew(self) -> None:
        """Renew every claim this node holds; re-assert those that expired during an
        outage, and let go of those another region took (renewal.py)."""
        self.renewal.renew()

    # --- backend --------------------------------------------------------------------

    def _open(self):
        """Create tables, connect (in the worker thread when threaded)."""

    def _close(self):
        """Disconnect."""

    def _claim(self, key, node, region, ttl):
        raise NotImplementedError

    def _renew(self, keys, node, ttl):
        raise NotImplementedError

    def _release(self, key, node):
        raise NotImplementedError

    def _lookup(self, key):
        raise NotImplementedError
