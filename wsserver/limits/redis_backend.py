"""Cluster-wide quota counters in Redis, that a killed process cannot leak.

Every process (instance, named by the process's id: support/liveness.py) registers in
one sorted set scored by its lease expiry (Redis server time + `lease_seconds`) and
renews it on the process's heartbeat, at most lease/3 seconds apart. What an instance
holds is written twice, atomically, by Lua scripts (`register_script`; redis-py falls
back from EVALSHA to EVAL by itself):

    wsserver:{quota}:a:<app>:c          open connections of the app   (string)
    wsserver:{quota}:a:<app>:d          doc -> connections             (hash: HLEN = active docs)
    wsserver:{quota}:a:<app>:u:<doc>    user -> connections            (hash: HLEN = users)
    wsserver:{quota}:j:<instance>       lease -> connections           (its journal)
    wsserver:{quota}:instances          instance -> lease expiry, ms  (sorted set)

(`<app>` is `len(tenant):tenant:len(app):app`, so no two apps share a key.) Every
script first *reaps* instances whose lease has expired: it subtracts each one's
journal from the counters and deletes it. So a process that dies by kill -9 stops
counting at most `lease_seconds` after its last heartbeat, at the next handshake or
heartbeat of any other process; a clean shutdown releases every connection as it closes.

An instance that finds itself reaped (it stalled past its lease) or that missed a
write while Redis was unreachable *resyncs*: one script replaces its journal and its
share of the counters with what it really holds (`QuotaBackend.held`). Acquire and
release calls wait while a resync runs, and a resync waits for those in flight, so
none is lost between the snapshot and the script.

Redis down: a handshake is admitted (fail open: collaboration does not stop with
Redis), the error is logged, and the next heartbeat that reaches Redis resyncs.
Needs Redis 5 or newer (scripts read TIME before writing). All keys carry the hash tag
`{quota}`, so they share one slot (what a Redis Cluster would need; only a single Redis
is tested). Use a separate database (redis://host/N) for separate deployments.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import redis
from gevent.event import AsyncResult, Event

from .. import metrics
from ..logs import Throttled
from ..support.liveness import Liveness
from ..support.redis import FailFast, redis_check
from ..support.redis import client as redis_client
from .backends import QuotaBackend

log = logging.getLogger(__name__)

PREFIX = "wsserver:{quota}:"
LOST = -1  # the acquire script's answer when this instance was reaped: resync first
NO_LIMIT = -1

_COMMON = r"""
local P = ARGV[1]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function app_base(t, a)
  return P .. 'a:' .. #t .. ':' .. t .. ':' .. #a .. ':' .. a
end
local function decr(key, n)
  if redis.call('DECRBY', key, n) <= 0 then redis.call('DEL', key) end
end
local function hdecr(key, field, n)
  if redis.call('HINCRBY', key, field, -n) <= 0 then redis.call('HDEL', key, field) end
end
local function account(l, n)
  local base = app_base(l[1], l[2])
  redis.call('INCRBY', base .. ':c', n)
  redis.call('HINCRBY', base .. ':d', l[3], n)
  redis.call('HINCRBY', base .. ':u:' .. l[3], l[4], n)
end
local function unaccount(l, n)
  local base = app_base(l[1], l[2])
  decr(base .. ':c', n)
  hdecr(base .. ':d', l[3], n)
  hdecr(base .. ':u:' .. l[3], l[4], n)
end
local function drop_instance(inst)
  local journal = P .. 'j:' .. inst
  local entries = redis.call('HGETALL', journal)
  for i = 1, #entries, 2 do
    unaccount(cjson.decode(entries[i]), tonumber(entries[i + 1]))
  end
  redis.call('DEL', journal)
  redis.call('ZREM', P .. 'instances', inst)
  return #entries / 2
end
local function reap(now)
  local dead = redis.call('ZRANGEBYSCORE', P .. 'instances', '-inf', now, 'LIMIT', 0, 16)
  for _, inst in ipairs(dead) do drop_instance(inst) end
  return #dead
end
"""

# KEYS: instances, journal. ARGV: prefix, instance, lease_ms, lease (JSON),
# max_connections, max_documents, max_users_per_doc (-1: no limit).
# Returns 0 (taken), 4004/4005/4008 (refused, nothing written) or -1 (reaped: resync).
_ACQUIRE = (
    _COMMON
    + r"""
local now = now_ms()
reap(now)
if not redis.call('ZSCORE', KEYS[1], ARGV[2]) then return -1 end
local l = cjson.decode(ARGV[4])
local base = app_base(l[1], l[2])
local maxc, maxd, maxu = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
if maxc >= 0 and tonumber(redis.call('GET', base .. ':c') or '0') >= maxc then return 4004 end
local docs = base .. ':d'
if maxd >= 0 and redis.call('HEXISTS', docs, l[3]) == 0
    and redis.call('HLEN', docs) >= maxd then return 4005 end
local users = base .. ':u:' .. l[3]
if maxu >= 0 and redis.call('HEXISTS', users, l[4]) == 0
    and redis.call('HLEN', users) >= maxu then return 4008 end
account(l, 1)
redis.call('HINCRBY', KEYS[2], ARGV[4], 1)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
return 0
"""
)

# KEYS: instances, journal. ARGV: prefix, instance, lease (JSON). 1 released, 0 not held.
_RELEASE = (
    _COMMON
    + r"""
local n = tonumber(redis.call('HGET', KEYS[2], ARGV[3]) or '0')
if n <= 0 then return 0 end
if n == 1 then redis.call('HDEL', KEYS[2], ARGV[3])
else redis.call('HINCRBY', KEYS[2], ARGV[3], -1) end
unaccount(cjson.decode(ARGV[3]), 1)
return 1
"""
)

# KEYS: instances. ARGV: prefix, instance, lease_ms. 1 renewed, 0 reaped (resync).
_HEARTBEAT = (
    _COMMON
    + r"""
local now = now_ms()
reap(now)
if not redis.call('ZSCORE', KEYS[1], ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
return 1
"""
)

# KEYS: instances, journal. ARGV: prefix, instance, lease_ms, then lease, count pairs:
# replace this instance's share with exactly those leases.
_RESYNC = (
    _COMMON
    + r"""
local now = now_ms()
reap(now)
drop_instance(ARGV[2])
for i = 4, #ARGV, 2 do
  local n = tonumber(ARGV[i + 1])
  account(cjson.decode(ARGV[i]), n)
  redis.call('HSET', KEYS[2], ARGV[i], n)
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
return 1
"""
)

# KEYS: instances. ARGV: prefix, instance. Clean shutdown: give everything back.
_LEAVE = (
    _COMMON
    + r"""
return drop_instance(ARGV[2])
"""
)

# KEYS: instances. ARGV: prefix, tenant, app, doc ('' for none). Counts after reaping.
_USAGE = (
    _COMMON
    + r"""
reap(now_ms())
local base = app_base(ARGV[2], ARGV[3])
local users = 0
if ARGV[4] ~= '' then users = redis.call('HLEN', base .. ':u:' .. ARGV[4]) end
return {tonumber(redis.call('GET', base .. ':c') or '0'), redis.call('HLEN', base .. ':d'), users}
"""
)


def _encode(lease):
    return json.dumps(list(lease), separators=(",", ":"))


def _limit(value):
    return NO_LIMIT if value is None else value


class RedisQuota(QuotaBackend):
    """See the module docstring. `liveness`: the process's heartbeat and id (without one,
    an id and a heartbeat of its own at the lease's pace); `heartbeat=False` (unit tests)
    leaves renewing the lease to explicit `heartbeat()` calls."""

    def __init__(
        self,
        url: str,
        lease_seconds: float = 30.0,
        heartbeat: bool = True,
        client: redis.Redis | None = None,
        prefix: str = PREFIX,
        fail_fast: FailFast | None = None,
        liveness: Liveness | None = None,
    ) -> None:
        super().__init__()
        self.client = client or redis_client(url)
        # Shared with the process's other Redis users: after a failure, handshakes skip
        # Redis (admitting, as on any Redis error) instead of each waiting a timeout.
        self.fail_fast = fail_fast or FailFast()
        self.prefix = prefix
        self.lease_ms = int(lease_seconds * 1000)
        self.interval = lease_seconds / 3.0
        self._own_liveness = heartbeat and liveness is None
        if liveness is None:
            liveness = Liveness(self.interval, lease_seconds)
        self.instance = liveness.process
        self._instances = prefix + "instances"
        self._journal = prefix + "j:" + self.instance
        register = self.client.register_script
        self._acquire_script = register(_ACQUIRE)
        self._release_script = register(_RELEASE)
        self._heartbeat_script = register(_HEARTBEAT)
        self._resync_script = register(_RESYNC)
        self._leave_script = register(_LEAVE)
        self._usage_script = register(_USAGE)
        self._synced = False  # False: our share in Redis may be wrong; resync before use
        self._inflight = 0
        self._drained = Event()
        self._drained.set()
        self._resyncing = None  # AsyncResult while a resync runs
        self._closed = False
        self._errors = Throttled(log)
        self._beat = None
        if heartbeat:
            # Registered at once (the first beat), not a heartbeat later.
            self._beat = liveness.subscribe(
                "quota lease", self._renew_lease, every=self.interval, at_once=True
            )
            liveness.start()  # its own; the process's is started already (a no-op)
        self.liveness = liveness

    # --- QuotaBackend ---------------------------------------------------------------

    def _acquire(self, lease, limits):
        if self.fail_fast.skip():
            self._synced = False  # the lease is held locally; the next resync writes it
            return 0
        try:
            for _ in range(2):
                if not self._synced:
                    self.resync()
                code = self._in_flight(
                    self._acquire_script,
                    [self._instances, self._journal],
                    [
                        self.prefix,
                        self.instance,
                        self.lease_ms,
                        _encode(lease),
                        _limit(limits.max_connections),
                        _limit(limits.max_documents),
                        _limit(limits.max_users_per_doc),
                    ],
                )
                if code != LOST:
                    self.fail_fast.answered()
                    return int(code)
                log.warning(
                    "quota: instance %s was reaped (lease expired); resyncing", self.instance
                )
                self._synced = False
            raise redis.RedisError("instance reaped twice in a row")
        except redis.RedisError as e:
            # Fail open; the lease is held locally and the next resync writes it.
            self._synced = False
            self._error("acquire", e)
            return 0

    def _release(self, lease):
        if self.fail_fast.skip():
            self._forget(lease)
            self._synced = False  # the next resync writes what is held
            return
        try:
            # `held` drops the lease only once no resync is running: a resync that read
            # `held` without it, followed by this release, would count it out twice.
            self._in_flight(
                self._release_script,
                [self._instances, self._journal],
                [self.prefix, self.instance, _encode(lease)],
                before=lambda: self._forget(lease),
            )
        except redis.RedisError as e:
            self._synced = False  # the next resync drops it
            self._error("release", e)

    def usage(self, tenant: str, app: str, doc: str | None = None) -> dict[str, int]:
        connections, documents, users = self._usage_script(
            [self._instances], [self.prefix, tenant, app, doc or ""]
        )
        result = {"connections": int(connections), "documents": int(documents)}
        if doc is not None:
            result["users"] = int(users)
        return result

    def health_check(self) -> Callable[[], str | None]:
        return redis_check(self.client)

    def close(self) -> None:
        """Stop the heartbeat and give back this instance's whole share."""
        self._closed = True
        if self._beat is not None:
            self._beat.cancel()
        if self._own_liveness:
            self.liveness.stop()
        try:
            self._leave_script([self._instances], [self.prefix, self.instance])
        except redis.RedisError as e:
            self._error("leave", e)

    # --- lease ----------------------------------------------------------------------

    def heartbeat(self) -> None:
        """Renew this instance's lease (resyncing if it was reaped or is out of date);
        reaps expired instances on the way. Raises RedisError."""
        if self._synced and self._heartbeat_script(
            [self._instances], [self.prefix, self.instance, self.lease_ms]
        ):
            return
        if self._synced:
            log.warning("quota: instance %s was reaped (lease expired); resyncing", self.instance)
        self._synced = False
        self.resync()

    def resync(self) -> None:
        """Replace this instance's share in Redis with what it holds. One at a time:
        callers arriving during a resync wait for it. Raises RedisError."""
        if self._resyncing is not None:
            self._resyncing.get()
            return
        self._resyncing = done = AsyncResult()
        try:
            self._drained.wait()
            args: list[str | int] = [self.prefix, self.instance, self.lease_ms]
            for lease, count in self.held.items():
                args += [_encode(lease), count]
            self._resync_script([self._instances, self._journal], args)
            self._synced = True
            done.set(None)
        except BaseException as e:
            done.set_exception(e)
            raise
        finally:
            self._resyncing = None

    def _in_flight(self, script, keys, args, before=None):
        """Run an acquire/release script, never overlapping a resync's snapshot;
        `before` runs once no resync is under way, right before the script."""
        while self._resyncing is not None:
            self._resyncing.wait()
        if before is not None:
            before()
        self._inflight += 1
        self._drained.clear()
        try:
            return script(keys, args)
        finally:
            self._inflight -= 1
            if not self._inflight:
                self._drained.set()

    def _renew_lease(self) -> None:
        """The process's beat (support/liveness.py), at most lease/3 seconds apart."""
        if self._closed:
            return
        try:
            self.heartbeat()
            self.fail_fast.answered()
        except redis.RedisError as e:
            self._error("heartbeat", e)

    def _error(self, what, error):
        """Log Redis errors at most once per 10 s, with how many were not logged."""
        metrics.REDIS_ERRORS.labels("limits").inc()
        self.fail_fast.failed()
        self._errors.error(
            "quota: redis %s failed (%s: %s); admitting and resyncing later",
            what,
            type(error).__name__,
            error,
        )
