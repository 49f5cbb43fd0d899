"""Every process of a cluster on a board in Redis: how any process answers the admin API
for all of them (their live documents, connections, state and last hour), and reaches
the others' documents and connections.

Each process writes its record (`local()`: {"process", "documents", "current"}) on the
process heartbeat (support/liveness.py) under its own key, named by the process id and
expiring after the process TTL (a killed process disappears within it; one that stops
deletes its entry), its last hour of stats (stats.py) under another at each new point,
and listens on a channel for commands ({"kind": "drop", "key"}, {"kind": "close", "id",
"code", "reason"}, {"kind": "connections", "filters"}) that `handle(command)` carries
out here, answering JSON on the command's reply list. Connections are asked for, not
published: a process may hold thousands, and the console wants them only while an admin
looks. Redis errors are logged (throttled) and the API then shows this process only.
"""

import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import gevent

from ...logs import Throttled

log = logging.getLogger(__name__)

ASK_WAIT = 5.0  # seconds a command waits for the other processes' answers
# Seconds of each BLPOP for the other processes' answers: within the Redis client's
# read timeout (support/redis.py, SOCKET_TIMEOUT).
REPLY_POLL = 0.25


class RedisBoard:
    PREFIX = "wsserver:admin:live:"
    STATS = "wsserver:admin:stats:"
    CHANNEL = "wsserver:admin:drop"
    STATS_EXPIRE = 30  # a point comes every 10 s

    def __init__(self, client: Any, subscriber: Any, liveness: Any) -> None:
        self.client = client
        self.subscriber = subscriber  # a client without a read timeout: pub/sub
        self.liveness = liveness  # support/liveness.py: the id, the heartbeat, the TTL
        self.node = liveness.process
        self.expire_ms = int(liveness.ttl * 1000)
        self._errors = Throttled(log)
        self._cache: tuple[float, list[dict]] = (0.0, [])
        self._beat: Any = None
        self._listener: gevent.Greenlet | None = None
        self._stopping = False

    def start(
        self, local: Callable[[], dict[str, Any]], handle: Callable[[dict[str, Any]], Any]
    ) -> None:
        self._local, self._handle = local, handle
        self._beat = self.liveness.subscribe("admin board", self.publish, at_once=True)
        self._listener = gevent.spawn(self._listen_loop)

    def stop(self) -> None:
        """End the publishing and listening and take this process's entry off the board
        (the end of a shutdown; a process that cannot is gone within its TTL)."""
        self._stopping = True
        if self._beat is not None:
            self._beat.cancel()
        if self._listener is not None:
            self._listener.kill(block=False)
        self.subscriber.close()
        try:
            self.client.delete(self.PREFIX + self.node, self.STATS + self.node)
        except Exception as e:
            self._errors.error("admin board: goodbye failed: %s: %s", type(e).__name__, e)

    def publish(self) -> None:
        """This process's record on the board now."""
        try:
            record = dict(self._local(), node=self.node)
            self.client.set(self.PREFIX + self.node, json.dumps(record), px=self.expire_ms)
        except Exception as e:  # redis-py raises RedisError and OSError subclasses
            self._errors.error("admin board: publish failed: %s: %s", type(e).__name__, e)

    def publish_series(self, points: list[dict[str, Any]]) -> None:
        try:
            self.client.set(self.STATS + self.node, json.dumps(points), ex=self.STATS_EXPIRE)
        except Exception as e:
            self._errors.error("admin board: stats publish failed: %s: %s", type(e).__name__, e)

    def _listen_loop(self) -> None:
        while True:
            try:
                pubsub = self.subscriber.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.CHANNEL)
                for message in pubsub.listen():
                    command = json.loads(message["data"])
                    answer = self._handle(command)
                    if command.get("kind") != "connections":
                        self.publish()  # the board must show what the command changed
                    self.client.rpush(command["reply"], json.dumps(answer))
                    self.client.expire(command["reply"], 30)
            except Exception as e:
                if self._stopping:  # stop() closed the connection under the read
                    return
                self._errors.error("admin board: listening failed: %s: %s", type(e).__name__, e)
                gevent.sleep(1)

    def _read(self, prefix: str) -> list[Any]:
        own = prefix + self.node
        keys = [
            k for k in self.client.scan_iter(match=prefix + "*", count=100) if k.decode() != own
        ]
        values = self.client.mget(keys) if keys else []
        return [json.loads(v) for v in values if v is not None]

    def others(self, cached: bool = False) -> list[dict[str, Any]]:
        """Every other live process's record; `cached`: at most a heartbeat old."""
        now = time.monotonic()
        if cached and now - self._cache[0] < self.liveness.heartbeat:
            return self._cache[1]
        try:
            records = self._read(self.PREFIX)
        except Exception as e:
            self._errors.error("admin board: read failed: %s: %s", type(e).__name__, e)
            return []
        self._cache = (now, records)
        return records

    def others_series(self) -> list[list[dict[str, Any]]]:
        """Every other live process's last hour (their finished points)."""
        try:
            return self._read(self.STATS)
        except Exception as e:
            self._errors.error("admin board: stats read failed: %s: %s", type(e).__name__, e)
            return []

    def ask_everywhere(self, command: dict[str, Any]) -> list[Any]:
        """Have every process (this one too) carry out `command`; wait for their answers
        (at most ASK_WAIT seconds in all); the answers that came."""
        reply = f"wsserver:admin:reply:{uuid.uuid4().hex}"
        try:
            listeners = self.client.publish(self.CHANNEL, json.dumps(dict(command, reply=reply)))
            answers = []
            deadline = time.monotonic() + ASK_WAIT
            for _ in range(listeners):
                answer = None
                # Short BLPOPs on the client with a read timeout: a Redis frozen
                # mid-wait cannot end a long one, and a client without a read
                # timeout would wait for ever.
                while answer is None and (left := deadline - time.monotonic()) > 0:
                    answer = self.client.blpop([reply], timeout=min(REPLY_POLL, left))
                if answer is None:
                    break
                answers.append(json.loads(answer[1]))
            return answers
        except Exception as e:
            self._errors.error("admin board: command failed: %s: %s", type(e).__name__, e)
            return []
