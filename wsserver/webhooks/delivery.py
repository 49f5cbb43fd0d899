"""Webhook delivery: a bounded queue per process and a few sender greenlets.

The data plane only ever calls `enqueue`, which never waits: when the queue is full
the event is dropped, counted and logged (throttled, so a dead endpoint under load
does not flood the log either). Memory stays bounded whatever the receivers do:
QUEUE_SIZE queued events plus one in flight per sender.

A sender POSTs the signed body (wsserver/webhooks/signing.py, signed afresh at each
attempt so the timestamp is the attempt's) with a REQUEST_TIMEOUT for the whole
request. A 2xx answer is delivered; a 5xx, a timeout or a connection error is
retried with capped exponential back-off, up to ATTEMPTS in all; any other answer
(4xx: the receiver refuses it) and running out of attempts drop the event, counted
and logged. Redirects are not followed: the configured URL is the receiver.

The stdlib sockets are gevent's (the server patches them at start), so a hanging
receiver only ever parks its sender greenlet.
"""

from __future__ import annotations

import http.client
import logging
from collections import Counter
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import gevent
from gevent.queue import Full, Queue

from .. import metrics
from ..logs import Throttled
from ..support.backoff import Backoff
from ..support.wait import wait_until
from . import signing

if TYPE_CHECKING:
    from .settings import Hook

Event = tuple["Hook", str, bytes]  # a hook, the event's name, the signed JSON body

log = logging.getLogger(__name__)

QUEUE_SIZE = 1000
SENDERS = 4
ATTEMPTS = 6
REQUEST_TIMEOUT = 5.0
RETRY_MIN, RETRY_MAX = 0.5, 8.0
USER_AGENT = "wsserver-webhooks"


class Delivery:
    """Queue and senders; `counts()` for /healthz: queued, in flight, delivered, retried,
    dropped (the last three also in /metrics: wsserver_webhook_events_total)."""

    def __init__(
        self,
        queue_size: int = QUEUE_SIZE,
        senders: int = SENDERS,
        attempts: int = ATTEMPTS,
        retry: tuple[float, float] = (RETRY_MIN, RETRY_MAX),
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.attempts = attempts
        self.retry = retry  # Backoff(first, cap) of the attempts of one event
        self.timeout = timeout
        self.queue: Queue[Event] = Queue(maxsize=queue_size)
        self.counters: Counter[str] = Counter()
        self._drops = Throttled(log)
        self._busy = 0
        self._senders = [gevent.spawn(self._send_loop) for _ in range(senders)]

    def enqueue(self, hook: Hook, event: str, body: bytes) -> None:
        """Queue `body` (bytes, the JSON of `event`) for `hook`; never blocks."""
        try:
            self.queue.put_nowait((hook, event, body))
        except Full:
            self._drop("queue full", hook, event)

    def counts(self) -> dict[str, int]:
        return {
            "queued": self.queue.qsize(),
            "in_flight": self._busy,
            "delivered": self.counters["delivered"],
            "retried": self.counters["retried"],
            "dropped": self.counters["dropped"],
        }

    def close(self, timeout: float) -> None:
        """Give queued events up to `timeout` seconds to go out, then stop the senders;
        what is left is dropped (counted)."""
        wait_until(lambda: not (self.queue.qsize() or self._busy), timeout)
        gevent.killall(self._senders, block=False)
        left = self.queue.qsize() + self._busy
        if left:
            self._count("dropped", left)
            log.error("webhooks: %d events not delivered at shutdown", left)

    # --- senders --------------------------------------------------------------------

    def _send_loop(self) -> None:
        while True:
            hook, event, body = self.queue.get()
            self._busy += 1
            try:
                self._deliver(hook, event, body)
            except Exception:
                # A bug here must not kill the sender (the queue would then only fill).
                log.exception("webhook delivery to %s failed", hook.url)
                self._drop("internal error", hook, event)
            finally:
                self._busy -= 1

    def _deliver(self, hook: Hook, event: str, body: bytes) -> None:
        backoff = Backoff(*self.retry)
        for attempt in range(1, self.attempts + 1):
            status, problem = self._post(hook, body)
            if status is not None and 200 <= status < 300:
                self._count("delivered")
                return
            if status is not None and status < 500:
                self._drop(f"answered {status}", hook, event)
                return
            if attempt == self.attempts:
                break
            self._count("retried")
            delay = backoff.next()
            log.info("webhook %s to %s: %s; retrying in %.1fs", event, hook.url, problem, delay)
            gevent.sleep(delay)
        self._drop(f"{self.attempts} attempts failed, the last: {problem}", hook, event)

    def _post(self, hook: Hook, body: bytes) -> tuple[int | None, str | None]:
        """One attempt: (HTTP status, None) or (None, what went wrong) / (5xx, text)."""
        parts = urlsplit(hook.url)
        connection_class = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            **signing.headers(hook.secret, body),
        }
        host = parts.hostname or ""  # never empty: a hook's url must name a host (settings.py)
        connection = connection_class(host, parts.port, timeout=self.timeout)
        try:
            # The socket timeout bounds each read; this bounds the whole request (a
            # receiver trickling its answer byte by byte).
            with gevent.Timeout(self.timeout):
                connection.request("POST", path, body=body, headers=headers)
                response = connection.getresponse()
                response.read(4096)  # a little of the body, so the connection ends cleanly
            if response.status >= 500:
                return response.status, f"answered {response.status}"
            return response.status, None
        except gevent.Timeout:
            return None, f"no answer within {self.timeout:g}s"
        except (OSError, http.client.HTTPException) as e:
            return None, f"{type(e).__name__}: {e}"
        finally:
            connection.close()

    def _count(self, outcome: str, n: int = 1) -> None:
        self.counters[outcome] += n
        metrics.WEBHOOK_EVENTS.labels(outcome).inc(n)

    def _drop(self, why: str, hook: Hook, event: str) -> None:
        self._count("dropped")
        self._drops.error("webhook %s to %s dropped: %s", event, hook.url, why)
