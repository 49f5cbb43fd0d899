"""WebSocket framing (wsserver/frames.py): server frames, close frames, unmasking and
the client-frame reader with its limits."""

import io
import os
import random
import struct

import pytest

from wsserver.errors import InvalidPayload, MessageTooBig, ProtocolViolation, UnsupportedData
from wsserver.transport import frames

MASK = b"\x37\xfa\x21\x3d"


def naive_unmask(payload, mask):
    return bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def client_frame(opcode, payload, fin=True, mask=MASK, masked=True, rsv=0, length=None):
    """A client frame as a browser would send it (masked), with knobs to break it."""
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | rsv | opcode
    mbit = 0x80 if masked else 0
    if n < 126:
        header = struct.pack("!BB", b0, mbit | n)
    elif n < 65536:
        header = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        header = struct.pack("!BBQ", b0, mbit | 127, n)
    if not masked:
        return header + payload
    return header + mask + naive_unmask(payload, mask)


def non_minimal(marker, fmt, length):
    """A binary frame whose `length` is written in the 16-bit (marker 126) or 64-bit
    (127) field, with that many payload bytes (none for a length too large to send)."""
    payload = b"\x00" * length if length < 1 << 20 else b""
    header = struct.pack("!BB", 0x80 | frames.OP_BINARY, 0x80 | marker) + struct.pack(fmt, length)
    return header + MASK + payload


def test_minimal_lengths_at_the_boundaries_are_read():
    for length in (125, 126, 65535, 65536):
        payload = bytes(range(256)) * (length // 256) + bytes(length % 256)
        assert reader(client_frame(frames.OP_BINARY, payload)).read_message() == (
            frames.OP_BINARY,
            payload,
        )


def reader(data, max_message_size=16 * 1024 * 1024):
    return frames.FrameReader(io.BytesIO(data).read, max_message_size)


# --- server frames --------------------------------------------------------------------


@pytest.mark.parametrize(
    "length,header",
    [
        (0, b"\x82\x00"),
        (1, b"\x82\x01"),
        (125, b"\x82\x7d"),
        (126, b"\x82\x7e\x00\x7e"),
        (65535, b"\x82\x7e\xff\xff"),
        (65536, b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
        (1 << 20, b"\x82\x7f\x00\x00\x00\x00\x00\x10\x00\x00"),
    ],
)
def test_encode_frame_lengths(length, header):
    payload = os.urandom(length)
    frame = frames.encode_frame(frames.OP_BINARY, payload)
    assert frame == header + payload


def test_encode_frame_opcodes():
    assert frames.encode_frame(frames.OP_PING, b"") == b"\x89\x00"
    assert frames.encode_frame(frames.OP_PONG, b"ab") == b"\x8a\x02ab"


def test_encode_close_with_code_and_reason():
    assert frames.encode_close(1000) == b"\x88\x02\x03\xe8"
    assert frames.encode_close(4002, "token expired") == b"\x88\x0f\x0f\xa2token expired"
    assert frames.encode_close(1009, "message too big") == b"\x88\x11\x03\xf1message too big"


def test_encode_close_truncates_long_reason_to_123_bytes():
    frame = frames.encode_close(4003, "x" * 500)
    assert frame[:2] == b"\x88\x7d"  # 125 = 2 + 123: still a legal control frame
    assert frame[2:4] == b"\x0f\xa3"
    assert frame[4:] == b"x" * 123


def test_encode_close_never_splits_a_utf8_character():
    # 121 ASCII bytes + a 3-byte character would end at byte 124: the character is
    # dropped whole, not cut into invalid UTF-8.
    reason = "a" * 121 + "\u20ac" + "tail"
    frame = frames.encode_close(4007, reason)
    code, text = frames.parse_close(frame[2:])
    assert code == 4007
    assert frame[4:] == b"a" * 121
    assert frame[4:].decode("utf-8") == "a" * 121
    assert len(frame) - 4 <= 123
    # 4-byte characters all the way: 30 of them fit (120 bytes), the 31st would not.
    frame = frames.encode_close(4007, "\U0001f600" * 40)
    assert frame[4:].decode("utf-8") == "\U0001f600" * 30
    # exactly 123 bytes of 3-byte characters is kept entirely
    frame = frames.encode_close(4007, "\u20ac" * 41)
    assert frame[4:].decode("utf-8") == "\u20ac" * 41


def test_parse_close():
    assert frames.parse_close(b"\x03\xe8") == (1000, "")
    assert frames.parse_close(b"\x0f\xa1no token") == (4001, "no token")
    assert frames.parse_close(b"") == (1005, "")
    assert frames.parse_close(b"\x03") == (1005, "")


@pytest.mark.parametrize(
    "code", [1000, 1001, 1002, 1003, 1007, 1010, 1011, 1012, 1014, 3000, 4001, 4999]
)
def test_check_close_accepts_codes_allowed_on_the_wire(code):
    assert frames.check_close(struct.pack("!H", code) + "fin é".encode()) == (code, "fin é")


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535])
def test_check_close_refuses_codes_forbidden_on_the_wire(code):
    with pytest.raises(ProtocolViolation):
        frames.check_close(struct.pack("!H", code))


def test_check_close_payloads():
    assert frames.check_close(b"") == (None, "")
    with pytest.raises(ProtocolViolation):
        frames.check_close(b"\x03")
    with pytest.raises(InvalidPayload) as info:
        frames.check_close(b"\x03\xe8\xc3")
    assert info.value.close_code == 1007


# --- unmasking ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "length",
    [0, 1, 2, 3, 4, 5, 7, 8, 13, 125, 126, 1023, 4097]
    # both sides of the switch to byte tables, at every alignment
    + [frames.TABLE_UNMASK + d for d in (-1, 0, 1, 2, 3)],
)
def test_unmask_matches_naive_loop(length):
    rng = random.Random(length)
    payload = bytes(rng.randrange(256) for _ in range(length))
    for mask in (MASK, b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x01\x00\x00\x80"):
        assert frames.unmask(payload, mask) == naive_unmask(payload, mask)


def test_unmask_keeps_leading_and_trailing_zero_bytes():
    # int.from_bytes/to_bytes must not lose zero bytes at either end
    payload = naive_unmask(b"\x00\x00abc\x00\x00", MASK)
    assert frames.unmask(payload, MASK) == b"\x00\x00abc\x00\x00"


@pytest.mark.parametrize("extra", [0, 1, 2, 3, 5])
def test_reader_unmasks_payloads_larger_than_a_chunk(extra):
    # > CHUNK goes through the chunked path; lengths that are not multiples of 4 too.
    length = 2 * frames.CHUNK + 4 * 1000 + extra
    payload = random.Random(extra).randbytes(length)
    r = reader(client_frame(frames.OP_BINARY, payload))
    assert r.read_message() == (frames.OP_BINARY, payload)


def test_reader_small_messages():
    data = (
        client_frame(frames.OP_BINARY, b"")
        + client_frame(frames.OP_BINARY, b"\x00\x00\x01\x00")
        + client_frame(frames.OP_BINARY, bytes(range(200)))
        + client_frame(frames.OP_BINARY, b"z" * 70000)
    )
    r = reader(data)
    assert r.read_message() == (frames.OP_BINARY, b"")
    assert r.read_message() == (frames.OP_BINARY, b"\x00\x00\x01\x00")
    assert r.read_message() == (frames.OP_BINARY, bytes(range(200)))
    assert r.read_message() == (frames.OP_BINARY, b"z" * 70000)
    with pytest.raises(frames.ConnectionLost):
        r.read_message()


@pytest.mark.parametrize("seed", range(5))
def test_reader_reassembles_frames_however_the_bytes_arrive(seed):
    """A socket hands over what has arrived: a frame split over many reads, or many
    frames in one read, gives the same messages."""
    rng = random.Random(seed)
    payloads = [rng.randbytes(rng.choice([0, 1, 5, 125, 126, 300, 70000])) for _ in range(30)]
    data = b"".join(client_frame(frames.OP_BINARY, p) for p in payloads)
    stream = io.BytesIO(data)

    def recv(n):  # 1 to 3000 bytes at a time, never more than asked
        return stream.read(min(n, rng.randint(1, 3000)))

    r = frames.FrameReader(recv, 1 << 20)
    assert [r.read_message() for _ in payloads] == [(frames.OP_BINARY, p) for p in payloads]
    with pytest.raises(frames.ConnectionLost):
        r.read_message()


def test_reader_returns_control_frames():
    r = reader(
        client_frame(frames.OP_PING, b"hi")
        + client_frame(frames.OP_PONG, b"")
        + client_frame(frames.OP_CLOSE, b"\x03\xe8bye")
    )
    assert r.read_message() == (frames.OP_PING, b"hi")
    assert r.read_message() == (frames.OP_PONG, b"")
    assert r.read_message() == (frames.OP_CLOSE, b"\x03\xe8bye")


# --- limits and violations --------------------------------------------------------------


class HeaderOnly(io.BytesIO):
    """A socket-like stream (`read` as `recv`: up to n bytes) that gives the header's
    bytes only and fails the test if the reader asks for more."""

    def __init__(self, data, header_len):
        super().__init__(data)
        self.header_len = header_len

    def read(self, n=-1):
        if self.tell() >= self.header_len:
            raise AssertionError("payload read before the size check")
        return super().read(min(n, self.header_len - self.tell()))


@pytest.mark.parametrize("length", [1025, 65536, 1 << 30, (1 << 63) - 1])
def test_message_too_big_is_raised_from_the_header(length):
    header = client_frame(frames.OP_BINARY, b"", length=length)  # header + mask only
    r = frames.FrameReader(HeaderOnly(header, len(header)).read, 1024)
    with pytest.raises(MessageTooBig) as info:
        r.read_message()
    assert info.value.close_code == 1009


def test_message_at_the_limit_is_accepted():
    r = reader(client_frame(frames.OP_BINARY, b"a" * 1024), max_message_size=1024)
    assert r.read_message() == (frames.OP_BINARY, b"a" * 1024)


def test_fragments_count_towards_the_limit():
    first = client_frame(frames.OP_BINARY, b"a" * 600, fin=False)
    second = client_frame(frames.OP_CONTINUATION, b"b" * 600)
    data = first + second
    header_len = len(first) + len(second) - 600  # the second frame's payload is never read
    r = frames.FrameReader(HeaderOnly(data, header_len).read, 1024)
    with pytest.raises(MessageTooBig):
        r.read_message()


def test_unmasked_client_frame_is_a_protocol_violation():
    with pytest.raises(ProtocolViolation) as info:
        reader(client_frame(frames.OP_BINARY, b"abc", masked=False)).read_message()
    assert info.value.close_code == 1002


@pytest.mark.parametrize(
    "data",
    [
        client_frame(frames.OP_BINARY, b"abc", rsv=0x40),  # RSV1 without an extension
        client_frame(0x3, b"abc"),  # reserved data opcode
        client_frame(0xB, b""),  # reserved control opcode
        client_frame(frames.OP_PING, b"x" * 126),  # control frame > 125
        client_frame(frames.OP_PING, b"", fin=False),  # fragmented control frame
        client_frame(frames.OP_CONTINUATION, b"abc"),  # continuation with nothing to continue
        client_frame(frames.OP_BINARY, b"a", fin=False) + client_frame(frames.OP_BINARY, b"b"),
        # RFC 6455 5.2: lengths in the fewest bytes, a 64-bit one below 2**63
        non_minimal(126, "!H", 5),
        non_minimal(126, "!H", 125),
        non_minimal(127, "!Q", 5),
        non_minimal(127, "!Q", 65535),
        non_minimal(127, "!Q", 1 << 63),
    ],
)
def test_malformed_frames_are_protocol_violations(data):
    with pytest.raises(ProtocolViolation):
        reader(data).read_message()


def test_text_frame_is_unsupported_data():
    with pytest.raises(UnsupportedData) as info:
        reader(client_frame(frames.OP_TEXT, b"hello")).read_message()
    assert info.value.close_code == 1003


def test_fragmented_text_is_unsupported_data():
    data = client_frame(frames.OP_TEXT, b"he", fin=False) + client_frame(
        frames.OP_CONTINUATION, b"y"
    )
    with pytest.raises(UnsupportedData):
        reader(data).read_message()


def test_fragmented_message_is_reassembled_with_control_frames_in_between():
    seen = []
    data = (
        client_frame(frames.OP_BINARY, b"\x00\x02", fin=False)
        + client_frame(frames.OP_PING, b"p1")
        + client_frame(frames.OP_CONTINUATION, b"\x03ab", fin=False, mask=b"\x01\x02\x03\x04")
        + client_frame(frames.OP_PONG, b"")
        + client_frame(frames.OP_CONTINUATION, b"c")
        + client_frame(frames.OP_BINARY, b"next")
    )
    r = reader(data)
    r.on_control = lambda op, payload: seen.append((op, payload))
    assert r.read_message() == (frames.OP_BINARY, b"\x00\x02\x03abc")
    assert seen == [(frames.OP_PING, b"p1"), (frames.OP_PONG, b"")]
    assert r.read_message() == (frames.OP_BINARY, b"next")


def test_close_inside_a_fragmented_message_ends_it():
    data = client_frame(frames.OP_BINARY, b"ab", fin=False) + client_frame(
        frames.OP_CLOSE, b"\x03\xe8"
    )
    assert reader(data).read_message() == (frames.OP_CLOSE, b"\x03\xe8")


def test_fragmented_large_message_across_chunks():
    a = random.Random(1).randbytes(frames.CHUNK + 3)
    b = random.Random(2).randbytes(frames.CHUNK + 1)
    data = client_frame(frames.OP_BINARY, a, fin=False) + client_frame(frames.OP_CONTINUATION, b)
    assert reader(data).read_message() == (frames.OP_BINARY, a + b)


@pytest.mark.parametrize("cut", [0, 1, 2, 5, 9, 20])
def test_connection_lost_mid_frame(cut):
    data = client_frame(frames.OP_BINARY, b"0123456789" * 3)[:cut]
    with pytest.raises(frames.ConnectionLost):
        reader(data).read_message()


def test_connection_lost_mid_chunked_payload():
    data = client_frame(frames.OP_BINARY, b"", length=frames.CHUNK * 3) + b"x" * (frames.CHUNK + 10)
    with pytest.raises(frames.ConnectionLost):
        reader(data).read_message()
