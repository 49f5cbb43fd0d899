"""Refusals answered late, at no cost while they wait.

y-websocket providers 1.x and 2.x reset their back-off when a socket opens, so a
refused client (4001/4002/4003/4007) reconnects about ten times a second per tab, for
ever. Answering the close frame `delay` seconds late slows each tab to one attempt per
`delay`. While it waits, a refused socket costs one file descriptor: no greenlet, no
reader, no gunicorn `worker_connections` slot. The handler greenlet returns at once;
the socket lives on in a duplicate descriptor, and one greenlet per process answers the
due ones in deadline order (the delay is constant, so arrival order is deadline order).

At most `max_waiting` sockets wait; beyond that a refusal is answered at once. At the
deadline the close frame is sent and our side shut down (FIN); a second, short wait
lets the client's close frame arrive, which is then read and discarded, so closing the
descriptor does not reset a connection whose client still reads our close frame.
"""

from __future__ import annotations

import logging
import socket
import time
from collections import deque
from typing import TYPE_CHECKING

import gevent
from gevent import ssl

from . import frames

if TYPE_CHECKING:
    from ..errors import WsServerError

log = logging.getLogger(__name__)

# After our close frame and FIN, how long the client has to answer before we let go.
CLOSE_GRACE = 1.0


class DelayedCloses:
    def __init__(self, delay: float, max_waiting: int) -> None:
        self.delay = delay
        self.max_waiting = max_waiting
        # (deadline, socket, close frame), deadlines ascending
        self._waiting: deque[tuple[float, socket.socket, bytes]] = deque()
        # (deadline, socket): close frame sent, FIN sent
        self._closing: deque[tuple[float, socket.socket]] = deque()
        self._worker: gevent.Greenlet | None = None

    def __len__(self) -> int:
        return len(self._waiting) + len(self._closing)

    def take(self, sock: socket.socket, error: WsServerError) -> bool:
        """Answer `error` (a WsServerError) on `sock` after the delay. Returns False, and
        takes nothing, when the delay is off or `max_waiting` sockets already wait: the
        caller then closes as usual."""
        if self.delay <= 0 or len(self._waiting) >= self.max_waiting:
            return False
        if isinstance(sock, ssl.SSLSocket):
            return False  # TLS in this process (gunicorn --certfile): frames cannot be raw
        try:
            duplicate = sock.dup()
        except OSError as e:  # out of descriptors: answer now instead
            log.debug("cannot delay a refusal: %s", e)
            return False
        # Ours alone: its sends and reads try once and never wait (BlockingIOError).
        duplicate.setblocking(False)
        frame = frames.encode_close(error.close_code, error.reason)
        self._waiting.append((time.monotonic() + self.delay, duplicate, frame))
        if self._worker is None:
            self._worker = gevent.spawn(self._run)
        return True

    def close_all(self) -> None:
        """Answer every waiting refusal now (shutdown)."""
        while self._waiting:
            _, sock, frame = self._waiting.popleft()
            if self._answer(sock, frame):
                self._release(sock)
        while self._closing:
            self._release(self._closing.popleft()[1])

    def _run(self) -> None:
        try:
            while self._waiting or self._closing:
                now = time.monotonic()
                while self._waiting and self._waiting[0][0] <= now:
                    _, sock, frame = self._waiting.popleft()
                    if self._answer(sock, frame):
                        self._closing.append((now + CLOSE_GRACE, sock))
                while self._closing and self._closing[0][0] <= now:
                    self._release(self._closing.popleft()[1])
                heads = [q[0][0] for q in (self._waiting, self._closing) if q]
                if heads:
                    gevent.sleep(max(0.0, min(heads) - time.monotonic()))
        finally:
            self._worker = None

    @staticmethod
    def _answer(sock: socket.socket, frame: bytes) -> bool:
        """Send the close frame and FIN without waiting; False if the socket is gone."""
        try:
            sock.send(frame)  # a few bytes into an idle socket: the kernel takes them
            sock.shutdown(socket.SHUT_WR)
            return True
        except OSError as e:  # the client gave up first
            log.debug("delayed refusal: client already gone (%s)", e)
            sock.close()
            return False

    @staticmethod
    def _release(sock: socket.socket) -> None:
        """Discard what the client sent (its frames, its close frame), then close."""
        try:
            while sock.recv(65536):
                continue
        except OSError as e:
            if not isinstance(e, BlockingIOError):  # EAGAIN: all read, the usual end
                log.debug("delayed refusal: %s", e)
        sock.close()
