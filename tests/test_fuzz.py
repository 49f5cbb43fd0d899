"""Fuzzing what an anonymous client can send (issue 8 item 4), with Hypothesis, against
one real server process: the handshake (path, token, subprotocols, headers), every
y-websocket message type, WebSocket frames and close frames. Whatever arrives, the
server answers with a defined code (never 1011, never a 500) and logs no traceback and
no ERROR. Bounded: a few hundred examples in total, some seconds.
"""

import base64
import hashlib
import hmac
import json
import os
import socket
import struct
import uuid

import pytest
import yaml
from conftest import AUDIENCE, SCOPE, SECRET, ServerProcess, base_config
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Text
from test_bad_input import masked_frame

from wsserver.protocol import codec
from wsserver.transport import frames

MAX_MESSAGE_SIZE = 4096
# FUZZ_EXAMPLES=2000 for a longer hunt; the default keeps the whole file at some seconds.
FUZZ = settings(
    deadline=None,
    database=None,
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", 150)),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Codes a hostile client may get: the token and name refusals, the protocol codes.
HANDSHAKE_CODES = {4001, 4002, 4003, 4007}
MESSAGE_CODES = {1000, 1002, 1003, 1007, 1009}


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    path = tmp / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            base_config(
                tmp, max_message_size=MAX_MESSAGE_SIZE, refusal_delay=0, storage="memory://"
            )
        )
    )
    server = ServerProcess(path).start()
    yield server
    server.stop()
    assert_clean_log(server.log())


def assert_clean_log(text):
    assert "Traceback" not in text and " ERROR " not in text, text[-4000:]


# --- raw sockets ----------------------------------------------------------------------------


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_of(header, payload, sign):
    """A JWT assembled by hand from any JSON header and payload."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    if sign:
        signature = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    else:
        signature = os.urandom(32)
    return f"{signing_input}.{b64url(signature)}"


class Raw:
    """One raw client connection: an HTTP upgrade with any request line and headers."""

    def __init__(self, server, path, headers):
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        lines = [
            f"GET {path} HTTP/1.1",
            "Host: 127.0.0.1",
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Version: 13",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        ]
        lines += [f"{name}: {value}" for name, value in headers]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        self.buffer = b""

    def _read(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self.buffer += data

    def status(self):
        """The HTTP status of the answer (101 when upgraded)."""
        while b"\r\n\r\n" not in self.buffer:
            self._read()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        return int(head.split(b" ", 2)[1])

    def frame(self):
        """The next server frame: (opcode, payload)."""
        while True:
            if len(self.buffer) >= 2:
                length, offset = self.buffer[1] & 0x7F, 2
                if length == 126 and len(self.buffer) >= 4:
                    length, offset = struct.unpack("!H", self.buffer[2:4])[0], 4
                elif length == 127 and len(self.buffer) >= 10:
                    length, offset = struct.unpack("!Q", self.buffer[2:10])[0], 10
                if length < 126 or offset > 2:
                    if len(self.buffer) >= offset + length:
                        opcode = self.buffer[0] & 0x0F
                        payload = self.buffer[offset : offset + length]
                        self.buffer = self.buffer[offset + length :]
                        return opcode, payload
            self._read()

    def until_close_or(self, wanted):
        """Read frames until a close frame (return its code) or a binary message for
        which `wanted(message)` is true (return None)."""
        while True:
            opcode, payload = self.frame()
            if opcode == frames.OP_CLOSE:
                return frames.parse_close(payload)[0]
            if opcode == frames.OP_BINARY and wanted(payload):
                return None

    def send(self, data):
        self.sock.sendall(data)

    def close(self):
        self.sock.close()


# --- the handshake --------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


def claim(good, *others):
    return st.one_of(st.just(good), *others, json_values)


@st.composite
def tokens(draw):
    kind = draw(st.sampled_from(["jwt", "jwt", "jwt", "text", "segments"]))
    if kind == "text":
        return draw(st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=300))
    if kind == "segments":
        parts = draw(st.lists(st.binary(max_size=40), min_size=1, max_size=4))
        return ".".join(b64url(p) for p in parts)
    header = {
        "alg": draw(claim("HS256", st.sampled_from(["none", "RS256", "HS512", "EdDSA"]))),
        "typ": "JWT",
    }
    if draw(st.booleans()):
        header["kid"] = draw(claim("k1", st.just("g1"), st.text(max_size=5)))
    header.update(
        draw(
            st.dictionaries(
                st.sampled_from(["crit", "jku", "x5u", "b64", "cty"]), json_values, max_size=2
            )
        )
    )
    now = 1_900_000_000
    payload = {
        "tenantId": draw(claim("acme", st.just("globex"), st.just("initech"))),
        "appId": draw(claim("editor", st.just("locked"), st.just("nope"))),
        "aud": draw(claim(AUDIENCE, st.lists(st.just(AUDIENCE), max_size=2))),
        "scope": draw(claim(SCOPE, st.just(f"read {SCOPE}"))),
        "exp": draw(claim(now, st.integers(0, 2**64), st.floats())),
    }
    for name in ("sub", "nbf", "iat", "limits", "documents", "access"):
        if draw(st.booleans()):
            payload[name] = draw(
                st.one_of(
                    json_values,
                    st.dictionaries(
                        st.sampled_from(
                            [
                                "max_connections",
                                "max_documents",
                                "max_users_per_doc",
                                "max_ops_per_minute",
                                "x",
                            ]
                        ),
                        json_values,
                        max_size=3,
                    ),
                )
            )
    payload = {k: v for k, v in payload.items() if draw(st.integers(0, 9)) > 0}
    return jwt_of(header, payload, sign=draw(st.booleans()))


header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60)
paths = st.one_of(
    st.just("/doc"),
    st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=80).map(lambda p: "/" + p),
    st.text(max_size=30).map(
        lambda p: (
            "/"
            + "".join(c if c.isprintable() and c != " " else "x" for c in p)
            .encode()
            .decode("latin-1")
        )
    ),
)


@st.composite
def handshakes(draw):
    path = draw(paths)
    token = draw(tokens())
    via = draw(st.sampled_from(["protocol", "query", "header", "none", "mixed"]))
    headers = []
    if via in ("protocol", "mixed"):
        offered = draw(st.lists(st.sampled_from(["access_token", token, "x", ""]), max_size=4))
        headers.append(("Sec-WebSocket-Protocol", ", ".join(offered or ["access_token", token])))
    if via in ("query", "mixed"):
        path += draw(st.sampled_from(["?token=", "?a=1&token=", "?token=x&token="])) + token
    if via in ("header", "mixed"):
        headers.append(
            ("Authorization", draw(st.sampled_from(["Bearer ", "bearer  ", "Basic "])) + token)
        )
    if draw(st.booleans()):
        headers.append(("Origin", draw(st.sampled_from(["https://editor.acme.com", "null", ""]))))
    headers += draw(
        st.lists(
            st.tuples(
                st.sampled_from(
                    [
                        "X-Forwarded-For",
                        "Sec-WebSocket-Protocol",
                        "Origin",
                        "Authorization",
                        "X-Junk",
                    ]
                ),
                header_text,
            ),
            max_size=2,
        )
    )
    return path, headers


def _bearer(header):
    payload = {
        "tenantId": "acme",
        "appId": "editor",
        "aud": AUDIENCE,
        "scope": SCOPE,
        "exp": 1_900_000_000,
    }
    return "/doc", [("Authorization", "Bearer " + jwt_of(header, payload, sign=True))]


@pytest.mark.long
@FUZZ
@given(handshake=handshakes())
# A non-string kid or a crit header was a PyJWT error nobody caught: 1011 and a traceback.
@example(handshake=_bearer({"alg": "HS256", "kid": ["k1"]}))
@example(handshake=_bearer({"alg": "HS256", "kid": {"k1": 1}}))
@example(handshake=_bearer({"alg": "HS256", "kid": 1}))
@example(handshake=_bearer({"alg": "HS256", "kid": "k1", "crit": ["exp"]}))
def test_fuzz_the_handshake(fuzz_server, handshake):
    path, headers = handshake
    start = len(fuzz_server.output)
    raw = Raw(fuzz_server, path, headers)
    try:
        status = raw.status()
        if status == 101:
            code = raw.until_close_or(lambda m: codec.decode(m).kind == codec.KIND_STEP1)
            assert code is None or code in HANDSHAKE_CODES, (code, handshake)
        else:
            assert 400 <= status < 500, (status, handshake)
    except EOFError:
        pass  # a request the HTTP layer refused outright: no answer is a defined answer
    finally:
        raw.close()
    assert_clean_log("".join(fuzz_server.output[start:]))


# --- messages and frames on an open connection ---------------------------------------------


def _valid_update():
    doc = Doc(client_id=7)
    updates = []
    doc.observe(lambda event: updates.append(event.update))
    text = doc.get("t", type=Text)
    text += "hello"
    text.insert(2, "xy")
    del text[0:1]
    return updates


VALID_UPDATES = _valid_update()


@st.composite
def mutated_updates(draw):
    update = bytearray(draw(st.sampled_from(VALID_UPDATES)))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        i = draw(st.integers(0, max(0, len(update) - 1)))
        if action == "flip" and update:
            update[i] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del update[i:]
        else:
            update[i:i] = draw(st.binary(min_size=1, max_size=4))
    return bytes(update)


def var_uint(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


awareness_states = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 3000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.binary(max_size=20),
    st.just(b""),
    st.just(b"null"),
    st.just(b'{"x": NaN}'),
)


@st.composite
def awareness_updates(draw):
    entries = draw(
        st.lists(
            st.tuples(
                st.one_of(st.integers(0, 2**32), st.integers(0, 2**56 - 1)),
                st.one_of(st.integers(0, 10), st.integers(0, 2**56 - 1)),
                awareness_states,
            ),
            max_size=3,
        )
    )
    data = var_uint(len(entries)) + b"".join(
        var_uint(cid) + var_uint(clock) + var_uint(len(state)) + state
        for cid, clock, state in entries
    )
    return data


payloads = st.one_of(st.binary(max_size=64), mutated_updates())
messages = st.one_of(
    payloads.map(codec.sync_update),
    payloads.map(codec.sync_step2),
    st.one_of(
        st.binary(max_size=24),
        st.lists(st.tuples(st.integers(0, 2**40), st.integers(0, 2**40)), max_size=3).map(
            lambda pairs: (
                var_uint(len(pairs)) + b"".join(var_uint(a) + var_uint(b) for a, b in pairs)
            )
        ),
    ).map(codec.sync_step1),
    awareness_updates().map(codec.awareness),
    st.binary(max_size=16).map(lambda b: b"\x03" + b),  # query awareness (+ junk)
    st.tuples(st.integers(0, 2**40), st.integers(0, 2**40), st.binary(max_size=16)).map(
        lambda t: var_uint(t[0]) + var_uint(t[1]) + t[2]
    ),
    st.binary(max_size=64),
)


def _is_step2(message):
    return message[:2] == b"\x00\x01"


def _open(server, doc):
    from conftest import make_token

    raw = Raw(server, f"/{doc}", [("Authorization", f"Bearer {make_token()}")])
    assert raw.status() == 101
    return raw


def _probe(raw):
    """Send a step 1 after the fuzzed input: the reply (or a close before it) tells that
    the server has dealt with everything sent before."""
    try:
        raw.send(masked_frame(frames.OP_BINARY, codec.sync_step1(b"\x00")))
    except OSError:
        pass  # the server already closed: its close frame is buffered on our side
    return raw.until_close_or(_is_step2)


@FUZZ
@given(sequence=st.lists(messages, min_size=1, max_size=3))
def test_fuzz_every_message_type(fuzz_server, sequence):
    start = len(fuzz_server.output)
    raw = _open(fuzz_server, f"fuzz-{uuid.uuid4().hex[:6]}")
    try:
        for message in sequence:
            raw.send(masked_frame(frames.OP_BINARY, message))
        code = _probe(raw)
        assert code is None or code in MESSAGE_CODES, (code, sequence)
    except EOFError:
        pytest.fail(f"dropped without a close frame: {sequence}")
    finally:
        raw.close()
    assert_clean_log("".join(fuzz_server.output[start:]))


@st.composite
def raw_frames(draw):
    """(frame bytes, the close code the server may echo when it is a valid close frame)."""
    opcode = draw(st.integers(0, 15))
    payload = draw(st.binary(max_size=140))
    if opcode == frames.OP_CLOSE and draw(st.booleans()):
        payload = struct.pack("!H", draw(st.integers(0, 65535))) + draw(
            st.one_of(st.binary(max_size=20), st.text(max_size=20).map(str.encode))
        )
    b0 = opcode | draw(st.sampled_from([0x80, 0x80, 0x00, 0x90, 0xC0]))
    masked = draw(st.sampled_from([True, True, True, False]))
    header = struct.pack("!BB", b0, (0x80 if masked else 0) | min(len(payload), 125))
    if len(payload) > 125:
        header = struct.pack("!BBH", b0, (0x80 if masked else 0) | 126, len(payload))
    mask = draw(st.binary(min_size=4, max_size=4))
    frame = header + (mask + frames.unmask(payload, mask) if masked else payload)
    echo = None
    if opcode == frames.OP_CLOSE and len(payload) >= 2:
        echo = struct.unpack("!H", payload[:2])[0]
    return frame, echo


@FUZZ
@given(sequence=st.lists(raw_frames(), min_size=1, max_size=3))
def test_fuzz_frames(fuzz_server, sequence):
    start = len(fuzz_server.output)
    raw = _open(fuzz_server, f"frames-{uuid.uuid4().hex[:6]}")
    echoed = {echo for _, echo in sequence if echo is not None}  # a valid close is echoed
    try:
        raw.send(b"".join(frame for frame, _ in sequence))
        code = _probe(raw)
        assert code is None or code in MESSAGE_CODES | echoed, (code, sequence)
    except EOFError:
        pytest.fail(f"dropped without a close frame: {sequence}")
    finally:
        raw.close()
    assert_clean_log("".join(fuzz_server.output[start:]))


# --- the HTTP request itself ----------------------------------------------------------------

http_bytes = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@st.composite
def http_requests(draw):
    method = draw(st.sampled_from([b"GET", b"POST", b"HEAD", b"OPTIONS", b"G\xffT", b""]))
    target = draw(st.one_of(st.just(b"/doc"), http_bytes.map(lambda b: b"/" + b)))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.x", b""]))
    headers = [(b"Host", b"127.0.0.1")]
    if draw(st.booleans()):
        headers += [
            (b"Upgrade", draw(st.sampled_from([b"websocket", b"WebSocket", b"h2c"]))),
            (b"Connection", draw(st.sampled_from([b"Upgrade", b"keep-alive, Upgrade"]))),
        ]
    headers += draw(
        st.lists(
            st.tuples(
                st.sampled_from(
                    [
                        b"Sec-WebSocket-Key",
                        b"Sec-WebSocket-Version",
                        b"Content-Length",
                        b"Transfer-Encoding",
                        b"Sec-WebSocket-Protocol",
                        b"Origin",
                        b"X-Forwarded-For",
                        b"Expect",
                        b"Junk_Header",
                    ]
                ),
                http_bytes,
            ),
            max_size=4,
        )
    )
    body = draw(st.binary(max_size=30))
    lines = [b" ".join(p for p in (method, target, version) if p)]
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def upgrade(*headers, version=b"HTTP/1.1"):
    lines = [
        b"GET /doc " + version,
        b"Host: x",
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        *headers,
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n"


@FUZZ
@given(request=http_requests())
# gevent-websocket answered these with a str body: a TypeError traceback each
@example(request=upgrade())  # no Sec-WebSocket-Version
@example(request=upgrade(b"Sec-WebSocket-Version: 8"))
@example(request=upgrade(b"Sec-WebSocket-Version: 13"))  # no key
@example(
    request=upgrade(
        b"Sec-WebSocket-Version: 13",
        b"Sec-WebSocket-Key: c2hvcnQ=",
    )
)
@example(request=upgrade(b"Sec-WebSocket-Version: 13", version=b"HTTP/1.0"))
# ...and this one raised binascii.Error (a key that is not base64)
@example(request=upgrade(b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Key: a"))
def test_fuzz_the_http_request(fuzz_server, request):
    start = len(fuzz_server.output)
    sock = socket.create_connection(("127.0.0.1", fuzz_server.port), timeout=5)
    try:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)  # nothing more: the server must answer or drop
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    except (ConnectionResetError, BrokenPipeError):
        answer = b""
    finally:
        sock.close()
    if answer.startswith(b"HTTP/1.1 5"):
        pytest.fail(f"{answer[:200]!r} for {request!r}")
    if request.startswith(b"GET /doc HTTP/1.") and b"Sec-WebSocket-Key: dGhl" not in request:
        assert answer.startswith(b"HTTP/1.1 4"), (answer[:200], request)
    assert_clean_log("".join(fuzz_server.output[start:]))


@settings(FUZZ, max_examples=max(1, FUZZ.max_examples // 3))  # HTTP round trips are slower
@given(
    name=st.text(max_size=80),
    token=tokens(),
    via=st.sampled_from(["query", "header", "none"]),
    origin=st.sampled_from([None, "https://editor.acme.com", "https://evil.example", ""]),
)
def test_fuzz_discovery(fuzz_server, name, token, via, origin):
    import urllib.error
    import urllib.parse
    import urllib.request

    start = len(fuzz_server.output)
    query = {"documentName": name}
    headers = {"Origin": origin} if origin is not None else {}
    if via == "query":
        query["token"] = token
    elif via == "header":
        headers["Authorization"] = f"Bearer {token}"
    url = f"{fuzz_server.http}/discovery?{urllib.parse.urlencode(query)}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
            status, body = r.status, json.load(r)
    except urllib.error.HTTPError as e:
        status, body = e.code, json.load(e)
    assert status == 200 or (400 <= status < 500 and body["code"] in HANDSHAKE_CODES), (
        status,
        body,
        name,
        token,
    )
    assert_clean_log("".join(fuzz_server.output[start:]))
