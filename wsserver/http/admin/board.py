"""The live documents of every process, on a board in Redis: how any process of a
cluster answers the admin API for all of them, and reaches the others' connections."""

import json
import logging
import os
import socket
import time
import uuid

import gevent

from ...documents.key import DocKey
from ...logs import Throttled

log = logging.getLogger(__name__)

DELETE_WAIT = 5.0  # seconds a delete waits for the other processes' answers
# Seconds of each BLPOP for the other processes' answers to a delete: within the Redis
# client's read timeout (support/redis.py, SOCKET_TIMEOUT).
REPLY_POLL = 0.25


class RedisBoard:
    """The live documents of every process, on a board in Redis.

    Each process writes its summaries every PUBLISH_EVERY seconds under its own key,
    which expires when it stops (a killed process disappears within EXPIRE seconds),
    and listens on a channel for deletes. Redis errors are logged (throttled) and the
    API then shows this process's documents only.
    """

    PREFIX = "wsserver:admin:live:"
    CHANNEL = "wsserver:admin:drop"
    PUBLISH_EVERY = 1.0
    EXPIRE = 5

    def __init__(self, client, subscriber):
        self.client = client
        self.subscriber = subscriber  # a client without a read timeout: pub/sub
        self.node = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._errors = Throttled(log)
        self._cache = (0.0, [])
        self._greenlets = []  # its loops, once started

    def start(self, local, drop):
        self._local, self._drop = local, drop
        self._greenlets = [gevent.spawn(self._publish_loop), gevent.spawn(self._listen_loop)]

    def stop(self):
        """End the publishing and listening (the end of a shutdown); this process's
        entry expires from the board within EXPIRE seconds."""
        for greenlet in self._greenlets:
            greenlet.kill(block=False)
        self.subscriber.close()

    def _publish_loop(self):
        while True:
            self._publish()
            gevent.sleep(self.PUBLISH_EVERY)

    def _publish(self):
        try:
            self.client.set(self.PREFIX + self.node, json.dumps(self._local()), ex=self.EXPIRE)
        except Exception as e:  # redis-py raises RedisError and OSError subclasses
            self._errors.error("admin board: publish failed: %s: %s", type(e).__name__, e)

    def _listen_loop(self):
        while True:
            try:
                pubsub = self.subscriber.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.CHANNEL)
                for message in pubsub.listen():
                    request = json.loads(message["data"])
                    closed = self._drop(DocKey(*request["key"]))
                    self._publish()  # the board must not show it live here any more
                    self.client.rpush(request["reply"], closed)
                    self.client.expire(request["reply"], 30)
            except Exception as e:
                self._errors.error("admin board: listening failed: %s: %s", type(e).__name__, e)
                gevent.sleep(1)

    def others(self, cached=False):
        """Every other live process's summaries; `cached`: at most PUBLISH_EVERY old."""
        now = time.monotonic()
        if cached and now - self._cache[0] < self.PUBLISH_EVERY:
            return self._cache[1]
        own = self.PREFIX + self.node
        try:
            keys = [
                k
                for k in self.client.scan_iter(match=self.PREFIX + "*", count=100)
                if k.decode() != own
            ]
            values = self.client.mget(keys) if keys else []
        except Exception as e:
            self._errors.error("admin board: read failed: %s: %s", type(e).__name__, e)
            return []
        summaries = [s for v in values if v is not None for s in json.loads(v)]
        self._cache = (now, summaries)
        return summaries

    def drop_everywhere(self, key):
        """Ask every other process to drop `key`; wait for their answers (at most
        DELETE_WAIT seconds in all); return how many connections they closed."""
        reply = f"wsserver:admin:reply:{uuid.uuid4().hex}"
        try:
            listeners = self.client.publish(
                self.CHANNEL, json.dumps({"key": list(key), "reply": reply})
            )
            closed = 0
            deadline = time.monotonic() + DELETE_WAIT
            # Our own listener answers too (its drop finds nothing left to close).
            for _ in range(listeners):
                answer = None
                # Short BLPOPs on the client with a read timeout: a Redis frozen
                # mid-wait cannot end a long one, and a client without a read
                # timeout would wait for ever.
                while answer is None and (left := deadline - time.monotonic()) > 0:
                    answer = self.client.blpop([reply], timeout=min(REPLY_POLL, left))
                if answer is None:
                    break
                closed += int(answer[1])
            return closed
        except Exception as e:
            self._errors.error("admin board: delete request failed: %s: %s", type(e).__name__, e)
            return 0
