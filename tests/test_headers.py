"""A request's headers (transport/headers.py): read as pywsgi read them with the `email`
package, and a malformed header block is a 400."""

import io
import socket
import urllib.request

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

_NAMES = st.sampled_from(["Host", "Upgrade", "Connection", "Content-Type", "X-A", "x-a", "Origin"])
_VALUES = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=20)
# A Content-Length that is not digits is a 400 (test_a_malformed_header_block_is_a_400).
_LENGTHS = st.tuples(st.just("content-length"), st.from_regex(r"[0-9]{1,5}", fullmatch=True))


@settings(max_examples=300, deadline=None)
@given(headers=st.lists(st.tuples(_NAMES, _VALUES) | _LENGTHS, max_size=8))
def test_headers_read_as_pywsgi_read_them_with_the_email_package(headers):
    from gevent.pywsgi import headers_factory

    assume(len({v for n, v in headers if n == "content-length"}) <= 1)  # else a 400

    from wsserver.transport.headers import RequestHeaders

    block = b"".join(f"{n}: {v}\r\n".encode("latin-1") for n, v in headers) + b"\r\n"
    ours, stdlib = RequestHeaders(io.BytesIO(block)), headers_factory(io.BytesIO(block))
    assert ours.status == stdlib.status == ""
    assert list(ours.headers) == list(stdlib.headers)
    for name in ("host", "X-A", "content-length", "Missing"):
        assert ours.get(name, "-") == stdlib.get(name, "-")
    assert ours.typeheader == stdlib.typeheader
    del ours["x-a"], stdlib["x-a"]
    assert list(ours.headers) == list(stdlib.headers)


@pytest.mark.parametrize(
    "bad",
    [
        b"X-Folded: a\r\n b",  # an obsolete line folding
        b"No colon here",
        b"Host : x",  # a space before the colon
        b"X-Long: " + b"a" * 65536,
        b"\r\n".join(b"X-%d: y" % i for i in range(101)),
        b"X-A: a\rContent-Length: 30",  # a bare CR (email: the end of a line)
        b"X-A: a\x00b",
        # What a proxy before the server could frame otherwise than pywsgi: the body of
        # the first two (pywsgi: none) carried a request of its own.
        b"Content-Length: 0\r\nContent-Length: 40",
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity",
        b"Transfer-Encoding: gzip, chunked",
        b"Transfer-Encoding: chunked\r\nContent-Length: 5",
        b"Content-Length: +2",
    ],
    ids=[
        "folding",
        "no-colon",
        "space-before-colon",
        "long-line",
        "101-headers",
        "cr",
        "nul",
        "two-lengths",
        "two-encodings",
        "not-chunked",
        "encoding-and-length",
        "signed-length",
    ],
)
def test_a_malformed_header_block_is_a_400(start_server, bad):
    server = start_server()
    s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    s.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n" + bad + b"\r\n\r\n")
    answer = s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:100]
    s.close()
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/livez", timeout=10) as r:
        assert r.status == 200  # the server goes on


def test_a_bare_cr_in_an_echoed_origin_is_a_400_not_a_500(start_server):
    # A preflight's Origin is echoed (some app allows any origin): Werkzeug raises on
    # a CR in a response header, so one that reached the app was a 500 and a traceback.
    server = start_server()
    s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    s.sendall(
        b"OPTIONS /discovery HTTP/1.1\r\nHost: x\r\nOrigin: https://a\rb\r\n"
        b"Access-Control-Request-Method: GET\r\n\r\n"
    )
    answer = s.recv(65536)
    s.close()
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:100]
    assert "Traceback" not in "".join(server.output)


@pytest.mark.parametrize(
    "block",
    [
        b"Content-Length: 5\r\n",
        b"Content-Length: 5\r\ncontent-length: 5\r\n",  # the same twice: one length
        b"Transfer-Encoding: Chunked \r\n",
    ],
)
def test_one_body_length_is_read(block):
    from wsserver.transport.headers import RequestHeaders

    assert RequestHeaders(io.BytesIO(b"Host: x\r\n" + block + b"\r\n")).status == ""
