"""Bad input against a real server process.

Each case: the offending connection gets its close code; another client of the same
document keeps working (it receives a later update from a third client, and nothing
from the offender); the document is unchanged (a fresh client syncing gets exactly the
previous content); the server logged no traceback.
"""

import random
import socket
import struct
import threading
import time
import uuid

import pytest
import websocket
import yaml
from conftest import ServerProcess, base_config, make_token
from pycrdt import Doc, Text
from test_update_check import one_item

from wsserver.errors import ProtocolViolation
from wsserver.protocol import codec
from wsserver.transport import frames

MAX_MESSAGE_SIZE = 65536


# --- a raw y-websocket client ------------------------------------------------------------


class Client:
    def __init__(self, server, doc, token=None, timeout=5):
        self.ws = websocket.create_connection(
            f"{server.url}/{doc}",
            subprotocols=["access_token", token or make_token()],
            timeout=timeout,
        )
        self.received = []  # every binary message, decoded as a server message

    def send(self, message):
        self.ws.send_binary(message)

    def recv(self, timeout=5):
        """The next binary message; AssertionError on a close frame or timeout."""
        self.ws.settimeout(timeout)
        opcode, frame = self.ws.recv_data_frame(True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            raise AssertionError(f"unexpected close {frames.parse_close(frame.data)}")
        if opcode != websocket.ABNF.OPCODE_BINARY:
            return self.recv(timeout)
        self.received.append(bytes(frame.data))
        return bytes(frame.data)

    def wait_for(self, message, timeout=5):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"did not receive {message[:40]!r}...")
            if self.recv(left) == message:
                return

    def wait_close(self, timeout=5):
        """Read until the server's close frame; return (code, reason)."""
        deadline = time.monotonic() + timeout
        while True:
            self.ws.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                opcode, frame = self.ws.recv_data_frame(True)
            except (websocket.WebSocketConnectionClosedException, ConnectionError) as e:
                raise AssertionError(f"connection dropped without a close frame: {e!r}")
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return frames.parse_close(frame.data)
            if opcode == websocket.ABNF.OPCODE_BINARY:
                self.received.append(bytes(frame.data))

    def sync(self):
        """Fetch the whole document with a step 1 for nothing; return it as a Doc."""
        self.send(codec.sync_step1(b"\x00"))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            # what the server sends decodes with the client-message codec too
            message = codec.decode(self.recv(max(0.01, deadline - time.monotonic())))
            if message.kind == codec.KIND_STEP2:
                doc = Doc()
                doc.apply_update(message.data)
                return doc
        raise AssertionError("no sync step 2")

    def close(self):
        try:
            self.ws.close(timeout=1)
        except Exception:
            self.ws.shutdown()


def text_of(doc):
    return str(doc.get("t", type=Text))


class Editor:
    """A pycrdt document whose edits are captured as updates."""

    def __init__(self, client_id):
        self.doc = Doc(client_id=client_id)
        self.text = self.doc.get("t", type=Text)
        self.updates = []
        self.doc.observe(lambda event: self.updates.append(event.update))

    def insert(self, s):
        self.text += s
        return self.updates[-1]


def masked_frame(opcode, payload, length=None, mask=b"\x9a\x01\x7e\x33", fin=True):
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | opcode
    if n < 126:
        header = struct.pack("!BB", b0, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", b0, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", b0, 0x80 | 127, n)
    return header + mask + frames.unmask(payload, mask)  # XOR both ways


# --- servers -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_server(tmp_path_factory):
    """One server for the bad-input cases, with a small max_message_size."""
    tmp = tmp_path_factory.mktemp("bad-input")
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(base_config(tmp, max_message_size=MAX_MESSAGE_SIZE)))
    server = ServerProcess(path).start()
    yield server
    if server.proc.poll() is None:
        server.proc.kill()
        server.proc.wait()


# --- the cases -------------------------------------------------------------------------------


def random_bytes():
    data = random.Random(20240601).randbytes(64)
    with pytest.raises(ProtocolViolation):  # deterministic: it cannot parse as anything
        codec.decode(data)
    return data


# A well-formed update whose first struct inserts "hello" into the root text "t" and
# whose second struct names a character (1#1) as its parent: yrs decodes it, applies the
# first struct, then raises RuntimeError("block parent <1#1> must be deleted or shared
# ref type") -- leaving "hello" in the document.
PARTIAL_UPDATE = bytes.fromhex("010201000401017405") + b"hello" + bytes.fromhex("04000101014100")


CASES = {
    # name: (what the offender sends, expected close code)
    "random bytes": (lambda c: c.send(random_bytes()), 1002),
    "truncated varint": (lambda c: c.send(b"\x00\x02\x80"), 1002),
    "truncated message type": (lambda c: c.send(b"\x80"), 1002),
    "varint too long": (lambda c: c.send(b"\x00\x02" + b"\xff" * 9 + b"\x01"), 1002),
    "truncated update": (lambda c: c.send(codec.sync_update(b"x" * 10)[:-3]), 1002),
    "trailing bytes": (lambda c: c.send(codec.sync_step1(b"\x00") + b"\x00"), 1002),
    "unknown message type": (lambda c: c.send(b"\x09\x00"), 1002),
    "garbage update": (lambda c: c.send(codec.sync_update(b"garbage!")), 1007),
    # A valid update with bytes after it, inside the sync message (issue 22 item 3):
    # yrs ignores them, so they were stored and sent on.
    "update with trailing bytes": (
        lambda c: c.send(codec.sync_update(Editor(client_id=7).insert("x") + b"\x00junk")),
        1007,
    ),
    "step 2 with trailing bytes": (
        lambda c: c.send(codec.sync_step2(Editor(client_id=7).insert("x") + b"\x00")),
        1007,
    ),
    "garbage step 2": (lambda c: c.send(codec.sync_step2(b"\xff\xff\xff\xff\x0f")), 1007),
    "partially applicable update": (lambda c: c.send(codec.sync_update(PARTIAL_UPDATE)), 1007),
    # Numbers yrs reads otherwise than JS Yjs (protocol/update.py): client 2^53 + 7 is
    # client 7 to yrs, a clock of 2^32 is clock 0; the server would hold another document.
    "client id of 2^53 or more": (
        lambda c: c.send(codec.sync_update(one_item(client=2**53 + 7))),
        1007,
    ),
    "clock of 2^32 or more": (lambda c: c.send(codec.sync_update(one_item(clock=2**32))), 1007),
    "garbage state vector": (lambda c: c.send(codec.sync_step1(b"garbage")), 1002),
    "awareness not JSON": (lambda c: c.send(codec.awareness(b"\x01\x05\x01\x03{x}")), 1002),
    "truncated awareness": (lambda c: c.send(codec.awareness(b"\x02\x05\x01\x02{}")), 1002),
    "oversize message": (
        lambda c: c.send(codec.sync_update(b"\x00" * (MAX_MESSAGE_SIZE + 1))),
        1009,
    ),
    "oversize fragmented message": (
        lambda c: c.ws.sock.sendall(
            masked_frame(frames.OP_BINARY, b"\x00" * 40000, fin=False)
            + masked_frame(frames.OP_CONTINUATION, b"\x00" * 40000)
        ),
        1009,
    ),
    "text frame": (lambda c: c.ws.send("hello"), 1003),
    "unmasked frame": (lambda c: c.ws.sock.sendall(b"\x82\x04\x00\x00\x01\x00"), 1002),
    "reserved opcode": (lambda c: c.ws.sock.sendall(masked_frame(0x3, b"\x00\x00\x01\x00")), 1002),
    # RFC 6455 5.2: a length in more bytes than it needs (issue 22 item 3).
    "non-minimal 64-bit length": (
        lambda c: c.ws.sock.sendall(
            b"\x82\xff" + struct.pack("!Q", 4) + b"\x00" * 4 + b"\x00\x00\x01\x00"
        ),
        1002,
    ),
    "non-minimal 16-bit length": (
        lambda c: c.ws.sock.sendall(
            b"\x82\xfe" + struct.pack("!H", 4) + b"\x00" * 4 + b"\x00\x00\x01\x00"
        ),
        1002,
    ),
    # Close frames (issue 8 item 8): codes RFC 6455 forbids on the wire are a 1002, a
    # reason that is not UTF-8 a 1007; allowed codes are echoed.
    **{
        f"close code {code}": (lambda c, code=code: _send_close(c, struct.pack("!H", code)), 1002)
        for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535)
    },
    "close with a 1-byte payload": (lambda c: _send_close(c, b"\x03"), 1002),
    "close reason not UTF-8": (
        lambda c: _send_close(c, struct.pack("!H", 1000) + b"ok \xff\xfe"),
        1007,
    ),
    "close reason cut inside a character": (
        lambda c: _send_close(c, struct.pack("!H", 4000) + "é".encode()[:1]),
        1007,
    ),
    **{
        f"close code {code} is echoed": (
            lambda c, code=code: _send_close(c, struct.pack("!H", code) + "bye é".encode()),
            code,
        )
        for code in (1000, 1001, 1011, 1014, 3000, 4999)
    },
    "close without a code is answered 1000": (lambda c: _send_close(c, b""), 1000),
}


def _send_close(client, payload):
    client.ws.sock.sendall(masked_frame(frames.OP_CLOSE, payload))


def _vanish(client):
    # a header promising 1 MB, 10 bytes of it, then the TCP connection goes away
    client.ws.sock.sendall(masked_frame(frames.OP_BINARY, b"", length=1 << 20) + b"\x00" * 10)
    client.ws.sock.shutdown(socket.SHUT_RDWR)
    client.ws.sock.close()


def _vanish_between_fragments(client):
    client.ws.sock.sendall(masked_frame(frames.OP_BINARY, b"\x00\x02", fin=False))
    client.ws.sock.shutdown(socket.SHUT_RDWR)
    client.ws.sock.close()


VANISH = {"vanish mid-message": _vanish, "vanish between fragments": _vanish_between_fragments}


def _run_case(server, offend, expected_code):
    doc = f"bad-{uuid.uuid4().hex[:12]}"
    log_start = len(server.output)
    writer = Editor(client_id=101)
    first = writer.insert("hello")

    a = Client(server, doc)
    a.send(codec.sync_update(first))
    a.wait_for(codec.sync_update(first))  # durable and echoed
    b = Client(server, doc)
    b_step1 = b.recv()
    assert codec.decode(b_step1).kind == codec.KIND_STEP1

    offender = Client(server, doc)
    offend(offender)
    if expected_code is not None:
        code, reason = offender.wait_close()
        assert code == expected_code, (code, reason)
        assert len(reason.encode()) <= 123
    offender.close()

    # the document is unchanged: a fresh client gets exactly the previous content
    fresh = Client(server, doc)
    fresh_doc = fresh.sync()
    assert text_of(fresh_doc) == "hello"
    assert fresh_doc.get_state() == writer.doc.get_state()
    fresh.close()

    # the other client of the document carries on: it gets a later update from a third
    second = writer.insert(" world")
    c = Client(server, doc)
    c.send(codec.sync_update(second))
    c.wait_for(codec.sync_update(second))
    b.wait_for(codec.sync_update(second))
    # ...and it received nothing the offender sent
    updates_to_b = [m for m in b.received if codec.decode(m).kind == codec.KIND_UPDATE]
    assert updates_to_b == [codec.sync_update(second)]
    assert text_of(c.sync()) == "hello world"
    for client in (a, b, c):
        client.close()

    assert server.proc.poll() is None, "the server exited"
    log = "".join(server.output[log_start:])
    assert "Traceback" not in log, log


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(small_server, name):
    offend, code = CASES[name]
    _run_case(small_server, offend, code)


@pytest.mark.parametrize("name", list(VANISH))
def test_client_vanishing(small_server, name):
    _run_case(small_server, VANISH[name], None)


def test_the_server_survived_every_case(small_server):
    # runs after the cases above (pytest keeps file order): one more full round trip
    _run_case(small_server, lambda c: c.send(b"\x00\x02\x80"), 1002)
    import urllib.request

    with urllib.request.urlopen(f"{small_server.http}/healthz", timeout=5) as response:
        assert response.status == 200


# --- a large valid message does not freeze the others -----------------------------------------


def test_large_message_does_not_freeze_other_connections(start_server):
    server = start_server()  # default limits: 16 MiB
    big_doc, small_doc = f"big-{uuid.uuid4().hex[:8]}", f"small-{uuid.uuid4().hex[:8]}"
    big_editor = Editor(client_id=201)
    big_update = big_editor.insert("x" * (8 * 1024 * 1024))
    big_message = codec.sync_update(big_update)
    assert len(big_message) > 8 * 1024 * 1024
    frame = masked_frame(frames.OP_BINARY, big_message)

    big = Client(server, big_doc, timeout=30)
    big.recv()  # step 1
    small = Client(server, small_doc)
    small.recv()
    small_editor = Editor(client_id=202)

    chunk = 256 * 1024
    state = {"sending": False, "sent": False, "echo": None, "error": None}

    def upload():
        try:
            state["sending"] = True
            for i in range(0, len(frame), chunk):
                big.ws.sock.sendall(frame[i : i + chunk])
                time.sleep(0.02)  # a client on a slow link: ~0.7 s for 8 MB
            state["sent"] = True
            big.wait_for(big_message, timeout=30)
            state["echo"] = time.monotonic()
        except Exception as e:  # reported by the main thread
            state["error"] = e

    thread = threading.Thread(target=upload, daemon=True)
    latencies = []  # (sent while uploading?, seconds)
    thread.start()
    deadline = time.monotonic() + 60
    while thread.is_alive() and time.monotonic() < deadline:
        uploading = state["sending"] and not state["sent"]
        update = small_editor.insert(".")
        started = time.monotonic()
        small.send(codec.sync_update(update))
        small.wait_for(codec.sync_update(update), timeout=10)
        latencies.append((uploading and not state["sent"], time.monotonic() - started))
    thread.join(5)
    assert state["error"] is None, state["error"]
    assert state["echo"] is not None, "the large message was not echoed"
    during = [t for uploading, t in latencies if uploading]
    # the other connection progressed while the large message was still being sent...
    assert len(during) >= 5, latencies
    # ...and never waited long (generous: a frozen process shows up as seconds)
    assert max(t for _, t in latencies) < 1.0, sorted(t for _, t in latencies)[-5:]
    # the large update is the document
    fresh = Client(server, big_doc, timeout=30)
    assert text_of(fresh.sync()) == "x" * (8 * 1024 * 1024)
    for client in (big, small, fresh):
        client.close()


def _updates_received(client, count, timeout=30):
    """The next `count` sync updates `client` receives, in order (other messages skipped)."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        message = client.recv(max(0.01, deadline - time.monotonic()))
        if message[:2] == bytes([codec.MESSAGE_SYNC, codec.SYNC_UPDATE]):
            got.append(message)
    return got


def test_big_updates_reach_every_client_whole_and_in_order_with_small_ones(start_server):
    """Big frames go through each connection's writer and the shared lane
    (transport/connection.py) while small ones are sent at once: every client must still
    get every update whole, each sender's in the order sent, all clients the same order."""
    server = start_server()
    doc = f"bigfan-{uuid.uuid4().hex[:8]}"
    receivers = [Client(server, doc, timeout=30) for _ in range(5)]
    a, b = Client(server, doc, timeout=30), Client(server, doc, timeout=30)
    for client in (*receivers, a, b):
        client.recv()  # step 1
    editor_a, editor_b = Editor(client_id=501), Editor(client_id=502)
    sizes = [10, 2 << 20, 10, 10, 1 << 20, 100 * 1024, 10, 3 << 20, 10]
    sent_a = [codec.sync_update(editor_a.insert(str(i) * n)) for i, n in enumerate(sizes)]
    sent_b = [codec.sync_update(editor_b.insert(f"b{i}")) for i in range(40)]

    def write_b():
        for message in sent_b:
            b.send(message)
            time.sleep(0.002)

    thread = threading.Thread(target=write_b, daemon=True)
    thread.start()
    for message in sent_a:
        a.send(message)
    thread.join(10)
    total = len(sent_a) + len(sent_b)
    seen = [_updates_received(client, total) for client in receivers]
    for got in seen:
        assert got == seen[0]  # one order for everyone
        assert [m for m in got if m in sent_a] == sent_a  # whole, and each sender's in order
        assert [m for m in got if m in sent_b] == sent_b
    expected = Doc()
    for message in sent_a + sent_b:
        expected.apply_update(codec.decode(message).data)
    fresh = Client(server, doc, timeout=30)
    assert text_of(fresh.sync()) == text_of(expected)
    for client in (*receivers, a, b, fresh):
        client.close()


def test_a_client_that_stops_reading_does_not_hold_up_big_updates_to_the_others(start_server):
    """Big frames are copied into sockets one at a time; a socket that takes nothing more
    must give that turn up, or one stalled client would stop big updates to everyone."""
    server = start_server()  # max_pending_bytes 64 MiB: the stalled client stays open
    doc = f"bigstall-{uuid.uuid4().hex[:8]}"
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", server.port))
    stalled.sendall(
        (
            f"GET /{doc} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {make_token()}\r\n\r\n"
        ).encode()
    )
    writer, reader = Client(server, doc, timeout=30), Client(server, doc, timeout=30)
    writer.recv()
    reader.recv()
    editor = Editor(client_id=601)
    for i in range(4):  # the first fills the stalled socket; the next ones queue behind it
        message = codec.sync_update(editor.insert(str(i) * (2 << 20)))
        writer.send(message)
        reader.wait_for(message, timeout=10)
    assert "1013" not in server.log()
    for client in (writer, reader):
        client.close()
    stalled.close()


# --- the same inputs against a Room directly: the code, and the document untouched ----------


class _Conn:
    def __init__(self):
        self.frames, self.messages, self.awareness_ids, self.room = [], [], set(), None
        self.awareness_ignored, self.principal = 0, None

    def send(self, frame):
        self.frames.append(frame)

    def send_message(self, message):
        self.messages.append(message)


@pytest.fixture
def room_with_hello():
    from wsserver.documents import DocKey
    from wsserver.documents.room import Room
    from wsserver.documents.storage.memory import MemoryStore

    store = MemoryStore().start()
    room = Room(DocKey("acme", "editor", "unit"), store, 500, 1 << 22)
    room.load()
    writer = Editor(client_id=101)
    conn = _Conn()
    room.join(conn)
    room.apply_update(writer.insert("hello"), conn)
    assert store.flush(timeout=5)
    yield room, conn, writer
    store.close(timeout=2)


INVALID_UPDATES = {
    "garbage": b"garbage!",
    "huge struct count": b"\xff\xff\xff\xff\x0f",
    "truncated": bytes.fromhex("01010100040101740568656c"),
    "partially applicable": PARTIAL_UPDATE,
}


@pytest.mark.parametrize("name", list(INVALID_UPDATES))
def test_room_refuses_an_invalid_update_with_1007(room_with_hello, name):
    from wsserver.errors import InvalidPayload

    room, conn, _ = room_with_hello
    with pytest.raises(InvalidPayload) as info:
        room.receive(conn, codec.decode(codec.sync_update(INVALID_UPDATES[name])))
    assert info.value.close_code == 1007


@pytest.mark.parametrize("name", list(INVALID_UPDATES))
def test_room_document_is_unchanged_by_an_invalid_update(room_with_hello, name):
    room, conn, writer = room_with_hello
    before = room.doc.get_update()
    frames_before = list(conn.frames)
    try:
        room.receive(conn, codec.decode(codec.sync_update(INVALID_UPDATES[name])))
    except Exception:
        pass  # which exception is the test above
    assert text_of(room.doc) == "hello"
    assert room.doc.get_state() == writer.doc.get_state()
    assert room.doc.get_update() == before
    assert room.pending == 0 and conn.frames == frames_before  # nothing stored or sent


def test_message_of_exactly_max_message_size_is_accepted(small_server):
    doc = f"limit-{uuid.uuid4().hex[:8]}"
    n = MAX_MESSAGE_SIZE - 40
    while True:  # find the text length whose update message is exactly the limit
        editor = Editor(client_id=301)
        message = codec.sync_update(editor.insert("y" * n))
        if len(message) == MAX_MESSAGE_SIZE:
            break
        n += MAX_MESSAGE_SIZE - len(message)
    client = Client(small_server, doc)
    client.send(message)
    client.wait_for(message)
    assert text_of(client.sync()) == "y" * n
    client.close()


@pytest.mark.long
def test_a_client_that_stops_reading_is_closed_with_1013_and_others_carry_on(start_server):
    """A reader that never drains its socket must not grow the server's memory without
    bound nor slow the others: past max_pending_bytes it is closed with 1013."""
    server = start_server(max_pending_bytes=64 * 1024)
    doc = f"slow-{uuid.uuid4().hex[:8]}"
    # A raw socket with a tiny receive buffer that we never read from: the server's
    # sends back up into its outbox.
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", server.port))
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    stalled.sendall(
        (
            f"GET /{doc} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {make_token()}\r\n"
            "\r\n"
        ).encode()
    )
    watcher = Client(server, doc)
    writer = Client(server, doc)
    editor = Editor(client_id=77)
    # Up to ~12 MB of updates, each echoed to all three: more than the kernel's socket
    # buffers of the stalled connection can
    # absorb; in batches that the watcher and the writer read as they go.
    for batch in range(60):
        if "1013 client too slow" in server.log():
            break
        for i in range(50):
            writer.send(codec.sync_update(editor.insert(f"{batch:02d}{i:02d}" + "x" * 4000)))
        last = codec.sync_update(editor.updates[-1])
        writer.wait_for(last, timeout=30)
        watcher.wait_for(last, timeout=30)  # the watcher gets everything, in order
    deadline = time.monotonic() + 10
    while "1013" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    server.wait_log("closing 127.0.0.1: 1013 client too slow")
    # and its socket is dropped (it never answered the close): reading reaches EOF
    stalled.settimeout(10)
    while True:
        try:
            if not stalled.recv(1 << 20):
                break
        except ConnectionResetError:
            break
    # the document is whole for a newcomer
    fresh = Client(server, doc)
    assert text_of(fresh.sync()) == str(editor.text)
    for c in (watcher, writer, fresh):
        c.close()
    stalled.close()
