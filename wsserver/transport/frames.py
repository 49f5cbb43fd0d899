"""WebSocket framing (RFC 6455) on the socket that gevent-websocket upgraded.

gevent-websocket performs the opening handshake; the frames are ours, because its
`WebSocket` sends close frames without the code, unmasks with a pure-Python loop over
every byte (blocking the process for ~150 ms per MB) and has no size limit. Here the
size limit is checked from the header before a byte of payload is read, payloads are
read and unmasked in chunks that yield to other greenlets, and close frames carry a
real code.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import gevent

from ..errors import (
    InvalidPayload,
    MessageTooBig,
    ProtocolViolation,
    UnsupportedData,
    truncate_reason,
)

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
_CONTROL = (OP_CLOSE, OP_PING, OP_PONG)

# Payloads are read and unmasked this many bytes at a time, yielding in between, so a
# large message costs the other connections a few short pauses instead of one long one.
CHUNK = 256 * 1024
# What one recv asks for when the reader needs a few bytes (a header, a small message).
READ_SIZE = 64 * 1024


class ConnectionLost(Exception):
    """The peer went away without a close frame (EOF or a socket error)."""


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """A server frame (never masked) carrying `payload` as one final frame."""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, length)
    elif length < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, length)
    return header + payload


def encode_close(code: int, reason: str = "") -> bytes:
    """A close frame: 2-byte big-endian code, then the UTF-8 reason (<= 123 bytes)."""
    return encode_frame(OP_CLOSE, struct.pack("!H", code) + truncate_reason(reason))


def parse_close(payload: bytes) -> tuple[int, str]:
    """(code, reason) from a close frame payload; (1005, "") when it has no code."""
    if len(payload) < 2:
        return 1005, ""
    code = struct.unpack("!H", payload[:2])[0]
    return code, payload[2:].decode("utf-8", "replace")


def _sendable_close_code(code: int) -> bool:
    """RFC 6455 7.4: the codes an endpoint may put on the wire. 1004 is reserved, 1005,
    1006 and 1015 are for reporting only, 1016-2999 are unassigned (1012-1014 are
    registered with IANA), 3000-4999 belong to libraries and applications."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def check_close(payload: bytes) -> tuple[int | None, str]:
    """(code, reason) of a client's close frame; None for the code when it has none.

    A code RFC 6455 forbids on the wire, or a 1-byte payload, is a ProtocolViolation
    (1002); a reason that is not UTF-8 is an InvalidPayload (1007).
    """
    if not payload:
        return None, ""
    if len(payload) < 2:
        raise ProtocolViolation("close frame with a 1-byte payload")
    code = struct.unpack("!H", payload[:2])[0]
    if not _sendable_close_code(code):
        raise ProtocolViolation(f"close code {code} is not allowed on the wire")
    try:
        return code, payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidPayload("close reason is not UTF-8") from None


# Payloads at least this long are unmasked by byte tables (`_unmask_by_tables`), shorter
# ones as one integer XOR: each is the faster on its side (a 256 KB chunk: ~0.37 ms
# against ~0.66).
TABLE_UNMASK = 1024
# _XOR[m] maps every byte b to b ^ m (bytes.translate's table).
_XOR = [bytes(b ^ m for b in range(256)) for m in range(256)]


def unmask(payload: bytes | bytearray | memoryview, mask: bytes) -> bytes:
    """XOR `payload` with the 4-byte `mask` at C speed, with no loop over bytes in Python.
    A chunk of a longer payload unmasks the same way when it starts at a multiple of 4."""
    n = len(payload)
    if not n:
        return b""
    if n >= TABLE_UNMASK:
        return _unmask_by_tables(payload, mask)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "little")
    return (int.from_bytes(payload, "little") ^ key).to_bytes(n, "little")


def _unmask_by_tables(payload, mask):
    # Byte i is XORed with mask[i % 4]: each of the four strided slices is translated with
    # its byte's table and put back in place (slicing, translate and the slice assignment
    # are C loops; one big-integer XOR costs about twice as much on long payloads).
    out = bytearray(len(payload))
    for i in range(4):
        out[i::4] = payload[i::4].translate(_XOR[mask[i]])
    return bytes(out)


class FrameReader:
    """Reads client frames through `recv(n)` and assembles messages.

    `recv(n)` is a socket's: up to `n` bytes, waiting for at least one, b"" at EOF.
    The reader keeps its own buffer, so a small message costs one `recv` (no buffered
    file object, no read per header field), and an idle connection holds no buffer.

    `read_message()` returns (opcode, payload) for a complete data message (always
    OP_BINARY: text raises UnsupportedData) or for a control frame, which the caller
    answers. Limits: `max_message_size` bytes per message, fragments included.
    """

    def __init__(
        self,
        recv: Callable[[int], bytes],
        max_message_size: int,
        on_control: Callable[[int, bytes], object] | None = None,
    ) -> None:
        self.recv = recv
        self.max_message_size = max_message_size
        # (opcode, payload) of a ping/pong between fragments; None: ignored.
        self.on_control = on_control
        self._buf = b""  # received, not yet read: self._buf[self._pos:]
        self._pos = 0

    def _read_exact(self, n):
        buf, pos = self._buf, self._pos
        end = pos + n
        if end <= len(buf):
            if end == len(buf):
                self._buf, self._pos = b"", 0  # all read: hold nothing while idle
            else:
                self._pos = end
            return buf[pos:end]
        parts = [buf[pos:]] if pos < len(buf) else []
        have = len(buf) - pos
        while have < n:
            # Small reads ask for a whole READ_SIZE (the next frames come with them);
            # a big payload asks for what it still needs, never much more.
            data = self.recv(max(n - have, READ_SIZE))
            if not data:
                raise ConnectionLost("connection closed mid-frame" if have else "connection closed")
            parts.append(data)
            have += len(data)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        if have == n:
            self._buf, self._pos = b"", 0
            return data
        self._buf, self._pos = data, n
        return data[:n]

    def _read_payload(self, length, mask):
        if length <= CHUNK:
            return unmask(self._read_exact(length), mask)
        parts = []
        done = 0
        while done < length:  # every chunk starts at a multiple of 4 (CHUNK is one)
            size = min(CHUNK, length - done)
            parts.append(unmask(self._read_exact(size), mask))
            done += size
            gevent.sleep(0)
        return b"".join(parts)

    def read_frame(self, already: int = 0) -> tuple[int, int, bytes]:
        """One frame: (fin, opcode, payload). `already` counts bytes of the message so far."""
        b0, b1 = self._read_exact(2)
        fin = b0 & 0x80
        if b0 & 0x70:
            raise ProtocolViolation("reserved bits set")
        opcode = b0 & 0x0F
        if not b1 & 0x80:
            raise ProtocolViolation("client frame not masked")
        length = b1 & 0x7F
        if opcode in _CONTROL:
            if length > 125 or not fin:
                raise ProtocolViolation("bad control frame")
        elif opcode not in (OP_CONTINUATION, OP_TEXT, OP_BINARY):
            raise ProtocolViolation(f"unknown opcode {opcode}")
        # RFC 6455 5.2: "the minimal number of bytes MUST be used to encode the length",
        # and a 64-bit length has its most significant bit 0.
        if length == 126:
            length = struct.unpack("!H", self._read_exact(2))[0]
            if length < 126:
                raise ProtocolViolation("non-minimal frame length")
        elif length == 127:
            length = struct.unpack("!Q", self._read_exact(8))[0]
            if length < 65536:
                raise ProtocolViolation("non-minimal frame length")
            if length >> 63:
                raise ProtocolViolation("frame length with its most significant bit set")
        mask = self._read_exact(4)
        if opcode not in _CONTROL and already + length > self.max_message_size:
            raise MessageTooBig()
        return fin, opcode, self._read_payload(length, mask)

    def read_message(self) -> tuple[int, bytes]:
        fin, opcode, payload = self.read_frame()
        if opcode in _CONTROL:
            return opcode, payload
        if opcode == OP_CONTINUATION:
            raise ProtocolViolation("continuation without a message")
        if opcode == OP_TEXT:
            raise UnsupportedData()
        if fin:
            return opcode, payload
        parts = [payload]
        size = len(payload)
        while True:
            fin, op, payload = self.read_frame(size)
            if op in _CONTROL:
                # Control frames may arrive between fragments; only pings and pongs can
                # be answered later, a close ends the message.
                if op == OP_CLOSE:
                    return op, payload
                if self.on_control is not None:
                    self.on_control(op, payload)
                continue
            if op != OP_CONTINUATION:
                raise ProtocolViolation("new message inside a fragmented one")
            parts.append(payload)
            size += len(payload)
            if fin:
                return opcode, b"".join(parts)
