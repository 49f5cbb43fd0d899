"""One client's WebSocket: reading messages, a bounded outgoing queue, and closing.

Fan-out never blocks on a client. `send` hands an already-encoded frame straight to
the kernel (a non-blocking send: no greenlet switch, no wake-up); only what the kernel
does not take is queued, and a writer greenlet exists only while such a backlog does,
joining the small frames queued into one `sendall`.

A frame over BIG_FRAME is never tried inline: it is queued for the writer (copying 8 MB
into 50 sockets inside the fan-out loop held the process for ~350 ms). Writers copy big
frames into the kernel one socket at a time, through `_BIG_LANE`, in slices of
SEND_SLICE with a yield between slices (so readers and small frames keep flowing);
a socket that cannot take more leaves the lane and sends the rest as its client reads
(waiting for the lane again made an 8 MB fan-out ~60 ms slower). One big update thus
reaches its recipients one after the other, the first ones early, instead of all of
them at the end of a round robin; each recipient's later frames wait behind it, so
every connection still gets its frames in order. Frames are queued as they are, never
copied per connection (the rest of a partly sent frame is a memoryview of it).

A client whose backlog grows past `max_pending_bytes` is too slow: the backlog is
dropped and it is closed with 1013.
Sockets get TCP_NODELAY, as Node's `ws` does: small frames must not wait for the
client's delayed ACK (Nagle), which added ~40 ms to the tail latency.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import gevent
from gevent.lock import Semaphore

from .. import metrics
from ..errors import TryAgainLater, WsServerError
from ..protocol.codec import kind_of
from . import frames, geventws

if TYPE_CHECKING:  # the floors above, for type hints only
    from ..documents.room import Room
    from ..handshake.claims import Principal

log = logging.getLogger(__name__)

# How long a close waits for the client's close frame before dropping the socket (a
# client that answers is dropped as soon as its close frame is in: `_handshake_done`).
CLOSE_TIMEOUT = 2.0
# A frame longer than this goes through the writer greenlet and the lane (module doc).
BIG_FRAME = 64 * 1024
# Held by the writer copying a big frame into its socket; FIFO, so the writers of one
# fan-out take their turns in the order the frames were queued.
_BIG_LANE = Semaphore()
# Bytes of a big frame handed to the kernel between two yields: ~1 ms of copying on
# loopback. Smaller slices made an 8 MB fan-out to 50 clients slower (last client at
# ~740 ms with 256 KB, ~630 ms with 1 MB) without shortening anyone's wait.
SEND_SLICE = 1024 * 1024
_IDS = itertools.count(1)


class Connection:
    def __init__(
        self, ws: Any, max_message_size: int, max_pending_bytes: int, peer: str = "-"
    ) -> None:
        self.ws = ws
        self.sock = geventws.socket_of(ws)
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as e:  # not TCP (a Unix socket behind a proxy): nothing to tune
            log.debug("TCP_NODELAY not set for %s: %s", peer, e)
        self.peer = peer
        # Read once, for what it may hold beyond the request.
        self._rfile = geventws.buffered_reader_of(ws)
        self.reader = frames.FrameReader(self._recv, max_message_size, self._on_control)
        self.max_pending_bytes = max_pending_bytes
        self.last_seen = time.monotonic()
        self.ping_sent: float | None = None
        self.closed = False  # no more frames will be sent by us
        self.close_code: int | None = None
        self.close_received = False  # the client's close frame came
        self.synced = False  # its sync step 1 was answered (endpoint.py; restarts.py waits on it)
        # Once closed: when we stop waiting for the client.
        self._close_deadline: float | None = None
        self._abort_timer = None  # once closed: drops the socket at that deadline
        self.awareness_ids: set[int] = set()  # awareness client ids this connection owns (room.py)
        self.awareness_ignored = 0  # its awareness entries for ids others own, dropped
        self.awareness_announced = False  # it sent an awareness update (room.py)
        self.room: Room | None = None  # the room it is a member of (documents/room.py)
        self.principal: Principal | None = None  # who its token speaks for
        # Names this connection in logs and the admin console: unique in this process,
        # and the pid tells processes apart.
        self.id = f"{os.getpid():x}-{next(_IDS)}"
        # What the admin console shows of it: when it came (Unix time), what it sent
        # (counted by the endpoint) and what it was sent (frames, their bytes).
        self.since = time.time()
        self.messages_in = self.bytes_in = self.messages_out = self.bytes_out = 0
        # The backlog, bytes the kernel has not taken yet: a deque while there is one (an
        # empty deque is ~750 bytes, a quarter of what an idle connection holds in Python).
        self._outbox: deque[bytes | memoryview] | None = None
        self._pending = 0
        self._writer: gevent.Greenlet | None = None  # a greenlet while there is a backlog
        self._head_partial = False  # the backlog starts with the rest of a begun frame

    # --- sending --------------------------------------------------------------------

    def send(self, frame: bytes) -> None:
        """Send an encoded frame, or queue it. Never blocks; a client that cannot keep
        up is closed."""
        if not self.closed:
            self.messages_out += 1
            self.bytes_out += len(frame)
            self._send(frame)

    def _send(self, frame):
        if self._writer is None and len(frame) > BIG_FRAME:
            # No backlog: the writer takes the frame at once, as the kernel would take a
            # small one, so it is on its way rather than queued (max_pending_bytes counts
            # what waits behind it; a step 2 bigger than that limit still goes out).
            self._writer = gevent.spawn(self._write_loop, frame)
            return
        if self._writer is None:
            # No backlog, so nothing can be overtaken: try the kernel directly.
            try:
                sent = self.sock.send(frame, 0, 0.0)  # a timeout of 0: never waits
            except BlockingIOError:
                sent = 0
            except OSError as e:
                self._lost(e)
                return
            if sent == len(frame):
                return
            if sent:
                frame = memoryview(frame)[sent:]
            self._head_partial = sent > 0  # its start is on the wire: never drop the rest
        if self._outbox is None:
            self._outbox = deque()
        self._outbox.append(frame)
        self._pending += len(frame)
        if self._pending > self.max_pending_bytes and not self.closed:
            head = self._outbox[0] if self._head_partial else None
            self._outbox.clear()
            if head is not None:
                self._outbox.append(head)
            self._pending = len(head) if head is not None else 0
            log.info(
                "closing %s: 1013 client too slow (over %d bytes queued)",
                self.peer,
                self.max_pending_bytes,
            )
            self.close(TryAgainLater())
            return
        if self._writer is None:
            self._writer = gevent.spawn(self._write_loop)

    @property
    def sending(self) -> bool:
        """Frames are queued that the socket has not taken yet (a writer drains them)."""
        return self._writer is not None

    def send_message(self, message: bytes) -> None:
        metrics.sent(kind_of(message), len(message))
        self.send(frames.encode_frame(frames.OP_BINARY, message))

    def _take(self):
        """The next bytes to write: a big frame alone, or the small ones before the next
        big one joined (one `sendall`, one copy of small frames only)."""
        outbox = self._outbox
        assert outbox is not None  # called while there is a backlog
        data = outbox.popleft()
        if len(data) <= BIG_FRAME and outbox and len(outbox[0]) <= BIG_FRAME:
            parts = [data]
            while outbox and len(outbox[0]) <= BIG_FRAME:
                parts.append(outbox.popleft())
            data = b"".join(parts)
        self._pending -= len(data)
        self._head_partial = False
        return data

    def _write_loop(self, first=None):
        try:
            if first is not None:
                self._write_big(memoryview(first))
            while self._outbox:
                data = self._take()
                if len(data) <= BIG_FRAME:
                    self.sock.sendall(data)  # waits for the socket to drain; others run
                    continue
                self._write_big(memoryview(data))
        except OSError as e:
            self._lost(e)
        finally:
            self._writer = None
            if not self._outbox:
                self._outbox = None

    def _write_big(self, view):
        """Copy one big frame into the socket: through the lane until the socket is full,
        then as fast as it drains (see the module doc)."""
        done, size = 0, len(view)
        with _BIG_LANE:
            while done < size:
                try:
                    done += self.sock.send(view[done : done + SEND_SLICE], 0, 0.0)
                except BlockingIOError:
                    break  # the socket is full: let the next big frame go meanwhile
                gevent.sleep(0)
        while done < size:
            # Waits (other greenlets run) until the socket takes something.
            done += self.sock.send(view[done : done + SEND_SLICE])
            gevent.sleep(0)

    def _lost(self, error):
        log.debug("send to %s failed: %s", self.peer, error)
        self.closed = True
        self._outbox = None
        self._pending = 0
        self._abort()

    # --- closing --------------------------------------------------------------------

    def close(
        self, error: WsServerError | None = None, code: int | None = None, reason: str = ""
    ) -> None:
        """Send a close frame after what is queued; the socket is dropped once the
        client's close frame is in, or CLOSE_TIMEOUT from now if it does not answer.
        Idempotent; never blocks."""
        if self.closed:
            return
        if error is not None:
            code, reason = error.close_code, error.reason
        elif code is None:
            code = 1000  # neither: a normal closure
        self.close_code = code
        self.closed = True
        self._close_deadline = time.monotonic() + CLOSE_TIMEOUT
        self._send(frames.encode_close(code, reason))
        self._abort_timer = gevent.spawn_later(CLOSE_TIMEOUT, self._abort)

    def _abort(self):
        """Shut the socket down: a reader blocked on it wakes up, and the client sees
        the TCP connection end (after what the kernel still holds for it)."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            # Already shut down or reset by the peer: nothing left to wake.
            log.debug("shutdown of %s: socket already gone", self.peer)

    def _handshake_done(self):
        """Both close frames passed: the server closes the TCP connection first (RFC 6455
        7.1.1). Browsers fire `onclose` only then; waiting for the client to drop it
        delayed every close event by CLOSE_TIMEOUT. Only once our close frame left the
        backlog: the writer, when there is one, ends and `finish` shuts down then."""
        if self._writer is None:
            self._abort()

    def hand_over(self) -> None:
        """The socket now belongs to someone else (transport/delayed_close.py): send
        nothing more, and keep gevent-websocket from sending its own close frame."""
        self.closed = True
        geventws.release(self.ws)

    def finish(self) -> None:
        """Called once the reader is done: let the writer flush our close frame, wait
        for the client's (until CLOSE_TIMEOUT after ours at most), then shut the socket
        down and release it."""
        if not self.closed:
            self.close(code=1000)
        # None: closed by a failed send (`_lost`), with nothing left to wait for.
        deadline = self._close_deadline or time.monotonic()
        writer = self._writer
        if writer is not None:
            writer.join(max(0.0, deadline - time.monotonic()))
        if self._writer is not None:
            self._writer.kill(block=False)
        elif not self.close_received:
            self._await_close(deadline)
        self._abort()
        if self._abort_timer is not None:
            self._abort_timer.kill(block=False)
        # gevent-websocket would otherwise send its own (code-less) close frame.
        geventws.release(self.ws)

    def _await_close(self, deadline):
        """Read and discard the client's frames until its close frame (or `deadline`).

        Closing a socket with unread input makes the kernel send RST, and a client can
        then lose our close frame and report 1006 instead of our code. A client whose
        frames cannot be read any more (it broke the framing) is drained byte by byte
        until it closes its side.
        """
        with gevent.Timeout(max(0.0, deadline - time.monotonic()), False):
            try:
                while self.reader.read_message()[0] != frames.OP_CLOSE:
                    pass
                return
            except (frames.ConnectionLost, OSError) as e:
                log.debug("%s gone before its close frame: %s", self.peer, e)
                return
            except WsServerError as e:
                log.debug("%s broke the framing after our close: %s", self.peer, e)
            try:
                while self.sock.recv(65536):
                    pass
            except OSError as e:
                log.debug("drain of %s ended: %s", self.peer, e)

    # --- receiving ------------------------------------------------------------------

    def _recv(self, n):
        """The frame reader's `recv`: the socket's, after whatever pywsgi's buffered
        reader already took beyond the HTTP request (a client may send its first frames
        right behind the upgrade request)."""
        rfile = self._rfile
        if rfile is not None:
            self._rfile = None
            data = rfile.read1(n)  # what it holds, or one read of the socket
            # Closing it frees its 8 KB buffer (a third of an idle connection's memory);
            # the socket stays open: it is ours now.
            rfile.close()
            if data:
                return data
        return self.sock.recv(n)

    def _on_control(self, opcode, payload):
        if opcode == frames.OP_PING:
            self.send(frames.encode_frame(frames.OP_PONG, payload))
        # Pongs need nothing beyond last_seen, set by receive().

    def receive(self) -> bytes | None:
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
                self.close_received = True
                code, _ = frames.check_close(payload)  # raises for a forbidden code
                if not self.closed:
                    # Echo the code only (none given: answer 1000).
                    self.close(code=1000 if code is None else code)
                self._handshake_done()
                return None
            self._on_control(opcode, payload)

    def ping(self) -> None:
        self.ping_sent = time.monotonic()
        self.send(frames.encode_frame(frames.OP_PING, b""))

    @property
    def answered_last_ping(self) -> bool:
        return self.ping_sent is None or self.last_seen >= self.ping_sent
