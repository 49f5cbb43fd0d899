"""The fan-out on Redis Streams (Redis 6.2 or newer: XTRIM MINID).

Keys, all under the hash tag `{fanout}` so that one XREAD may name them all (what a
Redis Cluster would need; a single Redis is what is tested):

    wsserver:{fanout}:doc:<tenant>/<app>/<name>   one stream per live document
    wsserver:{fanout}:hosts                       alive / goodbye entries of every process
    wsserver:{fanout}:wake:<host>                 written by a process to itself, so its
                                                  blocking read returns and picks up a
                                                  document it just subscribed to

Memory stays bounded three ways: every XADD trims its stream to about `maxlen` entries
(MAXLEN ~), the heartbeat trims the streams this process wrote to entries younger than
`retention_seconds` (XTRIM MINID ~), and every stream expires `idle_seconds` after its
last entry (a document nobody edits leaves nothing behind). A reader that was trimmed
past (it stalled longer than the retention, or was more than `maxlen` entries behind)
finds out (`_trimmed_past`) and reloads from the store.

Two connections: one for commands (tail ids, publishing, trimming; the project's short
timeouts, so a hung Redis costs one of them, after which the engine stops asking until the reader
gets an answer again) and one for the reader's blocking XREAD.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import redis

from ..support.redis import SOCKET_TIMEOUT, blocking_client
from ..support.redis import client as redis_client
from .base import Fanout
from .entries import Fields, parse_id
from .reader import Entries

PREFIX = "wsserver:{fanout}:"


class RedisStreamsFanout(Fanout):
    def __init__(
        self,
        url: str,
        prefix: str = PREFIX,
        maxlen: int = 10_000,
        retention_seconds: float = 60.0,
        idle_seconds: float = 3600,
        timeout: float = SOCKET_TIMEOUT,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.url = url
        self.prefix = prefix
        self.maxlen = maxlen
        self.retention_seconds = retention_seconds
        self.idle_ms = int(idle_seconds * 1000)
        self.timeout = timeout
        self.hosts_stream = prefix + "hosts"
        self.wake_stream = prefix + "wake:" + self.host.decode()
        # redis.Redis clients once connected (Any: redis-py's stubs reject its own bytes
        # field dicts and str stream ids, which it takes)
        self.commands: Any = None
        self.reader: Any = None  # the blocking reader's connection
        self._written: dict[str, int] = {}  # stream -> ms of the last id appended since a trim

    def stream_of(self, key: tuple[str, str, str]) -> str:
        return self.prefix + "doc:" + "/".join(quote(part, safe="") for part in key)

    def _connect(self) -> None:
        if self.commands is None:
            self.commands = redis_client(self.url)
            # The blocking read waits up to block_ms by design: its timeout is beyond it.
            self.reader = blocking_client(
                self.url, "fanout-reader", self.block_ms / 1000 + 2 * self.timeout
            )
        self.commands.ping()
        self.reader.ping()

    def _disconnect(self) -> None:
        if self.reader is not None:
            self.reader.close()  # `commands` is the process's shared client

    def _tail(self, stream: str) -> str:
        last = self.commands.xrevrange(stream, count=1)
        return last[0][0].decode() if last else "0-0"

    def _publish(self, items: list[tuple[str, Fields]]) -> list[bytes]:
        pipe = self.commands.pipeline(transaction=False)
        for stream, fields in items:
            pipe.xadd(stream, fields, maxlen=self.maxlen, approximate=True)
            pipe.pexpire(stream, self.idle_ms)
        results = pipe.execute()
        ids = results[::2]
        for (stream, _), entry_id in zip(items, ids):
            self._written[stream] = parse_id(entry_id)[0]
        return ids

    def _read(self, positions: dict[str, str], block_ms: int) -> list[tuple[str, Entries]]:
        reply = self.reader.xread(positions, count=self.read_count, block=block_ms) or []
        if isinstance(reply, dict):  # RESP3
            reply = list(reply.items())
        return [
            (stream.decode(), [(entry_id.decode(), fields) for entry_id, fields in entries])
            for stream, entries in reply
            if entries
        ]

    def _trimmed_past(self, positions: dict[str, str]) -> set[str]:
        """Streams whose entries right after the given positions may be gone. Trimming
        removes the oldest entries first, so while the entry at a position is still
        there nothing after it was trimmed; once it is gone and the stream starts after
        it, some entries we never read may have gone with it."""
        pipe = self.commands.pipeline(transaction=False)
        streams = list(positions)
        for stream in streams:
            pipe.xrange(stream, positions[stream], positions[stream], count=1)
            pipe.execute_command("XINFO", "STREAM", stream)
        replies = pipe.execute(raise_on_error=False)
        trimmed = set()
        for stream, kept, info in zip(streams, replies[::2], replies[1::2]):
            if isinstance(info, redis.ResponseError):
                continue  # no such stream (expired, or Redis restarted): nothing to miss
            for reply in (kept, info):
                if isinstance(reply, Exception):
                    raise reply
            first = _pairs(info).get(b"first-entry")
            if not kept and first and parse_id(first[0]) > parse_id(positions[stream]):
                trimmed.add(stream)
        return trimmed

    def _trim(self) -> None:
        # The streams this process appended to since the last trim (others trim theirs;
        # a stream nobody writes to any more is bounded by MAXLEN and then expires).
        written, self._written = self._written, {}
        if not written:
            return
        pipe = self.commands.pipeline(transaction=False)
        for stream, ms in written.items():
            pipe.xtrim(stream, minid=f"{int(ms - self.retention_seconds * 1000)}", approximate=True)
        pipe.execute()


def _pairs(info: Any) -> dict[bytes, Any]:
    """XINFO's flat [key, value, ...] reply (RESP2) or dict (RESP3) as a dict."""
    if isinstance(info, dict):
        return {k if isinstance(k, bytes) else str(k).encode(): v for k, v in info.items()}
    return {info[i]: info[i + 1] for i in range(0, len(info), 2)}
