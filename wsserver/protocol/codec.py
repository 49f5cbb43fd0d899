"""The y-websocket wire format: one y-protocols message per binary WebSocket message.

Encoding uses pycrdt's helpers. Decoding is strict and ours: pycrdt's `Decoder` slices
past the end of a truncated message without complaint, and a server must tell a
truncated message from a short one. Every decoding failure raises
`ProtocolViolation` (close code 1002).

    message        = varUint(messageType) payload
    sync           = 0 varUint(syncType) varBytes(data)   step1: state vector,
                                                          step2/update: a Yjs update
    awareness      = 1 varBytes(awareness update)
    auth           = 2 ...                                (server -> client only)
    access         = 2 2 varString("read")                (server -> a read-only client)
    queryAwareness = 3
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, NamedTuple

from pycrdt import (
    YMessageType,
    YSyncMessageType,
    create_awareness_message,
    write_message,
    write_var_uint,
)

from ..errors import ProtocolViolation

MESSAGE_SYNC = YMessageType.SYNC
MESSAGE_AWARENESS = YMessageType.AWARENESS
MESSAGE_AUTH = 2  # y-protocols/auth; pycrdt has no constant for it
MESSAGE_QUERY_AWARENESS = 3  # likewise

SYNC_STEP1 = YSyncMessageType.SYNC_STEP1
SYNC_STEP2 = YSyncMessageType.SYNC_STEP2
SYNC_UPDATE = YSyncMessageType.SYNC_UPDATE

# The update Yjs encodes for "nothing": zero structs, empty delete set.
EMPTY_UPDATE = b"\x00\x00"

# A varUint longer than this cannot be a length or a message type we accept.
_MAX_VARUINT_BYTES = 8


class Message:
    """A decoded client message: `kind` is one of the KIND_* names, `data` its payload."""

    __slots__ = ("kind", "data")

    def __init__(self, kind: str, data: bytes) -> None:
        self.kind = kind
        self.data = data

    def __repr__(self) -> str:
        return f"Message({self.kind!r}, {len(self.data)} bytes)"


KIND_STEP1 = "sync-step1"
KIND_STEP2 = "sync-step2"
KIND_UPDATE = "sync-update"
KIND_AWARENESS = "awareness"
KIND_QUERY_AWARENESS = "query-awareness"

_SYNC_KINDS: dict[int, str] = {
    SYNC_STEP1: KIND_STEP1,
    SYNC_STEP2: KIND_STEP2,
    SYNC_UPDATE: KIND_UPDATE,
}


def read_var_uint(buf: bytes | bytearray, pos: int) -> tuple[int, int]:
    """Read a lib0 varUint at `pos`; return (value, next position)."""
    value = 0
    shift = 0
    end = min(len(buf), pos + _MAX_VARUINT_BYTES)
    while pos < end:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    if pos >= len(buf):
        raise ProtocolViolation("truncated varint")
    raise ProtocolViolation("varint too long")


def read_var_bytes(buf: bytes | bytearray, pos: int) -> tuple[bytes, int]:
    """Read a length-prefixed byte string at `pos`; return (bytes, next position)."""
    length, pos = read_var_uint(buf, pos)
    end = pos + length
    if end > len(buf):
        raise ProtocolViolation("truncated message")
    return bytes(buf[pos:end]), end


def decode(buf: bytes | bytearray) -> Message:
    """Decode one client message. Raises ProtocolViolation for anything malformed."""
    if not buf:
        raise ProtocolViolation("empty message")
    msg_type, pos = read_var_uint(buf, 0)
    if msg_type == MESSAGE_SYNC:
        sync_type, pos = read_var_uint(buf, pos)
        kind = _SYNC_KINDS.get(sync_type)
        if kind is None:
            raise ProtocolViolation(f"unknown sync message type {sync_type}")
        data, pos = read_var_bytes(buf, pos)
    elif msg_type == MESSAGE_AWARENESS:
        kind = KIND_AWARENESS
        data, pos = read_var_bytes(buf, pos)
    elif msg_type == MESSAGE_QUERY_AWARENESS:
        kind = KIND_QUERY_AWARENESS
        data = b""
    else:
        raise ProtocolViolation(f"unexpected message type {msg_type}")
    if pos != len(buf):
        raise ProtocolViolation("trailing bytes after message")
    return Message(kind, data)


def kind_of(message: bytes) -> str:
    """The KIND_* of a message this server encoded (its first two bytes tell), for
    counting what is sent without decoding it."""
    if message[0] == MESSAGE_AWARENESS:
        return KIND_AWARENESS
    return _SYNC_KINDS.get(message[1], "other") if message[0] == MESSAGE_SYNC else "other"


# pycrdt exports creators for updates and awareness only; step 1 and 2 use its framing.
_STEP1_PREFIX = bytes([MESSAGE_SYNC, SYNC_STEP1])
_STEP2_PREFIX = bytes([MESSAGE_SYNC, SYNC_STEP2])


def sync_step1(state_vector: bytes) -> bytes:
    return _STEP1_PREFIX + write_message(state_vector)


def sync_step2(update: bytes) -> bytes:
    return _STEP2_PREFIX + write_message(update)


_UPDATE_PREFIX = bytes([MESSAGE_SYNC, SYNC_UPDATE])


def sync_update(update: bytes) -> bytes:
    # One copy of the update (pycrdt's create_update_message makes two: an 8 MB update
    # held the hub ~25 ms there, most of it first-touching fresh memory).
    return b"".join((_UPDATE_PREFIX, write_var_uint(len(update)), update))


def awareness(update: bytes) -> bytes:
    return create_awareness_message(update)


# y-protocols/auth reads the first varUint of an auth message and knows only 0
# (permission denied, which providers log as a warning); any other value is read and
# ignored, by y-websocket 1.x to 3.x alike. ACCESS tells the app a connection's access.
AUTH_ACCESS = 2


def access(level: str) -> bytes:
    """The auth message telling the client its `level` of access ("read")."""
    return bytes([MESSAGE_AUTH, AUTH_ACCESS]) + write_message(level.encode())


# Deepest JSON nesting accepted in an awareness state. Real states are a few levels deep
# (a user, a cursor holding two relative positions); a deeper one is hostile: Python's
# parser raises RecursionError near 1,000 levels, and clients would choke on it too.
MAX_AWARENESS_DEPTH = 64


class AwarenessEntry(NamedTuple):
    """One client's entry of an awareness update; `state` is its raw JSON bytes, and
    `removal` says that it is empty or JSON null (the client is gone)."""

    client_id: int
    clock: int
    state: bytes
    removal: bool = False


def _refuse_constant(name: str) -> None:
    # json.loads accepts NaN and Infinity, which JSON.parse in every client rejects.
    raise ValueError(f"{name} is not JSON")


def _check_awareness_state(state: bytes) -> Any:
    """The parsed state, or ProtocolViolation."""
    try:
        # Decoded first: json.loads would take bytes in UTF-16 or UTF-32, with a BOM or
        # with encoded surrogates, which the clients' readVarString + JSON.parse reject.
        value = json.loads(state.decode("utf-8"), parse_constant=_refuse_constant)
    except RecursionError:
        raise ProtocolViolation("awareness state nested too deeply") from None
    except ValueError:
        raise ProtocolViolation("awareness state is not JSON") from None
    # Iterative, so that checking the depth cannot itself recurse too deeply.
    parsed, stack = value, [(value, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > MAX_AWARENESS_DEPTH:
                raise ProtocolViolation("awareness state nested too deeply")
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)
    return parsed


def parse_awareness_update(data: bytes) -> list[AwarenessEntry]:
    """Validate an awareness update strictly; return its entries, in order.

    pycrdt's `Awareness.apply_awareness_update` reads with the lenient Decoder, so a
    truncated update would be half-applied; this runs first and rejects it whole. Each
    state must be JSON (or empty) without NaN/Infinity and at most MAX_AWARENESS_DEPTH
    levels deep.
    """
    count, pos = read_var_uint(data, 0)
    entries = []
    for _ in range(count):
        client_id, pos = read_var_uint(data, pos)
        clock, pos = read_var_uint(data, pos)
        state, pos = read_var_bytes(data, pos)
        removal = not state or _check_awareness_state(state) is None
        entries.append(AwarenessEntry(client_id, clock, state, removal))
    if pos != len(data):
        raise ProtocolViolation("trailing bytes in awareness update")
    return entries


def encode_awareness_entries(entries: Sequence[AwarenessEntry]) -> bytes:
    """The awareness update holding `entries` (as parse_awareness_update returns them)."""
    parts = [write_var_uint(len(entries))]
    for entry in entries:
        parts += (
            write_var_uint(entry.client_id),
            write_var_uint(entry.clock),
            write_message(entry.state),
        )
    return b"".join(parts)
