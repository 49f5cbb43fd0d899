"""One client's WebSocket: reading messages, a bounded outgoing queue, and closing.

Fan-out never blocks on a client: `send` appends an already-encoded frame to the
connection's outbox and a writer greenlet drains it, joining everything queued into
one `sendall`. A client whose outbox grows past `max_pending_bytes` is too slow: the
queue is dropped and it is closed with 1013.
"""

import logging
import socket
import time
from collections import deque

import gevent
from gevent.event import Event

from . import frames
from .errors import TryAgainLater, WsServerError

log = logging.getLogger(__name__)

# How long a close waits for the client's close frame before dropping the socket.
CLOSE_TIMEOUT = 2.0


class Connection:
    def __init__(self, ws, max_message_size, max_pending_bytes, peer="-"):
        handler = ws.handler
        self.ws = ws
        self.sock = handler.socket
        self.peer = peer
        self.reader = frames.FrameReader(handler.rfile, max_message_size)
        self.reader.on_control = self._on_control
        self.max_pending_bytes = max_pending_bytes
        self.last_seen = time.monotonic()
        self.ping_sent = None
        self.closed = False  # no more frames will be sent by us
        self.close_code = None
        self.awareness_ids = set()  # awareness client ids this connection announced
        self.room = None
        self.principal = None
        self._outbox = deque()
        self._pending = 0
        self._wake = Event()
        self._done = Event()  # writer finished (flushed or gave up)
        self._writer = gevent.spawn(self._write_loop)

    # --- sending --------------------------------------------------------------------

    def send(self, frame):
        """Queue an encoded frame. Never blocks; a client that cannot keep up is closed."""
        if self.closed:
            return
        self._outbox.append(frame)
        self._pending += len(frame)
        if self._pending > self.max_pending_bytes:
            self._outbox.clear()
            self._pending = 0
            self.close(TryAgainLater())
            return
        self._wake.set()

    def send_message(self, message):
        self.send(frames.encode_frame(frames.OP_BINARY, message))

    def _write_loop(self):
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if not self._outbox:
                    if self.closed:
                        return
                    continue
                if len(self._outbox) == 1:
                    data = self._outbox.popleft()
                else:
                    data = b"".join(self._outbox)
                    self._outbox.clear()
                self._pending = 0
                self.sock.sendall(data)
                if self.closed and not self._outbox:
                    return
        except OSError as e:
            log.debug("send to %s failed: %s", self.peer, e)
            self.closed = True
            self._abort()
        finally:
            self._done.set()

    # --- closing --------------------------------------------------------------------

    def close(self, error=None, code=None, reason=""):
        """Send a close frame after what is queued, then drop the socket if the client
        does not answer within CLOSE_TIMEOUT. Idempotent; never blocks."""
        if self.closed:
            return
        if error is not None:
            code, reason = error.close_code, error.reason
        self.close_code = code
        self._outbox.append(frames.encode_close(code, reason))
        self.closed = True
        self._wake.set()
        gevent.spawn_later(CLOSE_TIMEOUT, self._abort)

    def _abort(self):
        """Shut the socket down so a reader blocked on it wakes up."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            # Already shut down or reset by the peer: nothing left to wake.
            log.debug("shutdown of %s: socket already gone", self.peer)

    def finish(self):
        """Called once the reader is done: let the writer flush briefly, then release."""
        if not self.closed:
            self.close(code=1000)
        self._done.wait(CLOSE_TIMEOUT)
        self._drain()
        self._writer.kill(block=False)
        # gevent-websocket would otherwise send its own (code-less) close frame.
        self.ws.closed = True

    def _drain(self):
        """Read and discard until the client closes its side (or CLOSE_TIMEOUT).

        Closing a socket with unread input makes the kernel send RST, and a client can
        then lose our close frame and report 1006 instead of our code.
        """
        with gevent.Timeout(CLOSE_TIMEOUT, False):
            try:
                while self.sock.recv(65536):
                    pass
            except OSError as e:
                log.debug("drain of %s ended: %s", self.peer, e)

    # --- receiving ------------------------------------------------------------------

    def _on_control(self, opcode, payload):
        if opcode == frames.OP_PING:
            self.send(frames.encode_frame(frames.OP_PONG, payload))
        # Pongs need nothing beyond last_seen, set by receive().

    def receive(self):
        """The next binary message, or None once the peer has closed or vanished.

        Protocol errors raise WsServerError subclasses; the caller closes with their code.
        """
        while True:
            try:
                opcode, payload = self.reader.read_message()
            except frames.ConnectionLost:
                return None
            except OSError:
                return None
            self.last_seen = time.monotonic()
            if opcode == frames.OP_BINARY:
                return payload
            if opcode == frames.OP_CLOSE:
                code, _ = frames.parse_close(payload)
                if not self.closed:
                    # Echo the code only (1005 means "none given": answer without one).
                    self.close(code=1000 if code in (1005, 1006) else code)
                return None
            self._on_control(opcode, payload)

    def ping(self):
        self.ping_sent = time.monotonic()
        self.send(frames.encode_frame(frames.OP_PING, b""))

    @property
    def answered_last_ping(self):
        return self.ping_sent is None or self.last_seen >= self.ping_sent


__all__ = ["Connection", "WsServerError"]
