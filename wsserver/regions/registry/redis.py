"""The Redis registry, for real deployments: `redis: redis://...` shared by every node
of every region.

One hash per document, `wsserver:registry:<tenant>/<app>/<name>` (each part
percent-encoded), holding `region` and one field `h:<node>` per holder node whose value
is that holding's expiry in milliseconds of the Redis server's clock (`TIME`, so the
nodes' clocks do not matter). The key itself expires with its last holder (PEXPIREAT),
so nothing is left behind by a node that was killed.

Every operation is one Lua script, so claim, renew and release are atomic: a claim
takes the document only when no live holder of another region exists, a renewal only
extends a live holding of its own node, a release only drops its own node's field.
Single-key scripts only, so a renewal of many documents is a pipeline of them (and
the layout works on Redis Cluster). Needs Redis 5 or later (effects replication, for
TIME in a writing script); tested with 7.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import redis

from ...documents.key import DocKey
from ...support.redis import client as redis_client
from ...support.redis import redis_check
from .base import Registry

PREFIX = "wsserver:registry:"

# Shared prologue: `now` in ms from the server clock; live holders counted, expired
# ones removed, `latest` = the furthest live expiry, `region` = the recorded region.
_SCAN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local fields = redis.call('HGETALL', KEYS[1])
local region = false
local live = 0
local latest = 0
for i = 1, #fields, 2 do
  local f, v = fields[i], fields[i + 1]
  if f == 'region' then
    region = v
  else
    local expires = tonumber(v)
    if expires == nil or expires <= now then
      if write then redis.call('HDEL', KEYS[1], f) end
    else
      live = live + 1
      if expires > latest then latest = expires end
    end
  end
end
"""

CLAIM = (
    "local write = true\n"
    + _SCAN
    + """
if live > 0 and region ~= ARGV[1] then
  return region
end
local expires = now + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'region', ARGV[1], 'h:' .. ARGV[2], string.format('%d', expires))
redis.call('PEXPIREAT', KEYS[1], string.format('%d', math.max(latest, expires)))
return ARGV[1]
"""
)

RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local field = 'h:' .. ARGV[1]
local current = tonumber(redis.call('HGET', KEYS[1], field))
if current == nil or current <= now then
  return 0
end
local expires = now + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], field, string.format('%d', expires))
local pttl = redis.call('PTTL', KEYS[1])
if pttl >= 0 and now + pttl < expires then
  redis.call('PEXPIREAT', KEYS[1], string.format('%d', expires))
end
return 1
"""

RELEASE = (
    """
redis.call('HDEL', KEYS[1], 'h:' .. ARGV[1])
local write = true
"""
    + _SCAN
    + """
if live == 0 then
  redis.call('DEL', KEYS[1])
end
return live
"""
)

LOOKUP = (
    "local write = false\n"
    + _SCAN
    + """
if live > 0 then
  return region
end
return false
"""
)


def _text(value: Any) -> Any:
    """A script's bulk-string answer as text (the shared client answers bytes)."""
    return value.decode() if isinstance(value, bytes) else value


def redis_key(key: DocKey) -> str:
    return PREFIX + "/".join(quote(part, safe="") for part in key)


class RedisRegistry(Registry):
    threaded = False  # redis-py's sockets are cooperative under gevent's monkey patching

    def __init__(self, region: str, url: str, **options: Any) -> None:
        super().__init__(region, **options)
        self.url = url
        self.client: redis.Redis | None = None

    def _open(self):
        self.client = redis_client(self.url)
        self._claim_script = self.client.register_script(CLAIM)
        self._renew_script = self.client.register_script(RENEW)
        self._release_script = self.client.register_script(RELEASE)
        self._lookup_script = self.client.register_script(LOOKUP)

    def health_check(self) -> Callable[[], str | None]:
        return redis_check(redis_client(self.url))

    def _close(self):
        self.client = None  # the process's shared client (support/redis.py): not ours to close

    def _claim(self, key, node, region, ttl):
        return _text(
            self._claim_script(keys=[redis_key(key)], args=[region, node, int(ttl * 1000)])
        )

    def _renew(self, keys, node, ttl):
        if self.client is None:
            raise RuntimeError("the registry is closed")  # a call racing the shutdown
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            self._renew_script(keys=[redis_key(key)], args=[node, int(ttl * 1000)], client=pipe)
        return {key for key, ok in zip(keys, pipe.execute()) if ok}

    def _release(self, key, node):
        self._release_script(keys=[redis_key(key)], args=[node])

    def _lookup(self, key):
        return _text(self._lookup_script(keys=[redis_key(key)])) or None
