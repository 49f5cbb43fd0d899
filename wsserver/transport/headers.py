"""A request's header block, read the way pywsgi reads it but without the `email` package.

pywsgi (gevent) parses headers with `http.client.parse_headers`, which hands the block to
`email.parser`: a seventh of the CPU a WebSocket handshake costs the server (the 2,000
handshakes of `scripts/bench --scenarios open`: 58 -> 50 CPU ticks with this reader,
medians of four alternating runs).
pywsgi lets a handler choose the class (`MessageClass`, as `http.server` documents it);
`RequestHeaders` keeps what pywsgi and gevent-websocket use of it (`get`, `getheader`,
`del`, `headers`, `typeheader`, `status`) and the stdlib's limits: a line of at most
65,536 bytes, at most 100 header lines.

Stricter than the stdlib where RFC 9112 allows a server to be: a line that is not
`name: value` with a token as the name (a space before the colon included) and an
obsolete line folding (a line starting with a space or tab) make the request a 400
(`status` set, which pywsgi answers with 400), where `email` silently ended the headers
at such a line or folded it into the previous value; so does a value holding a CR or a
NUL (RFC 9110 5.5), where `email` took a bare CR for the end of a line; and so does a
body length that a proxy in front could read otherwise than pywsgi (`_check_framing`,
no request smuggling: pywsgi reads only the first of two Content-Lengths).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

MAX_LINE = 65536  # http.client's _MAXLINE
MAX_HEADERS = 100  # http.client's _MAXHEADERS
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_DIGITS = re.compile(r"[0-9]+")
# Headers that say where the body ends: another value in a second line is a 400.
_FRAMING = ("content-length", "transfer-encoding")


class RequestHeaders:
    """The header block read from `rfile` (after the request line), up to its blank line."""

    __slots__ = ("status", "_lines", "_first")

    def __init__(self, rfile: Any) -> None:
        self.status = ""  # pywsgi answers 400 when it is set
        self._lines: list[tuple[str, str]] = []
        self._first: dict[str, str] = {}  # lower-case name: the first value
        while True:
            line = rfile.readline(MAX_LINE + 1)
            if len(line) > MAX_LINE:
                self.status = "Line too long"
                return
            if line in (b"\r\n", b"\n", b""):
                self._check_framing()
                return
            if len(self._lines) == MAX_HEADERS:
                self.status = "Too many headers"
                return
            name, colon, value = line.decode("latin-1").partition(":")
            if not colon or not _TOKEN.fullmatch(name):
                self.status = "Invalid header line"  # obsolete folding too
                return
            value = value.lstrip(" \t").rstrip("\r\n")
            if "\r" in value or "\0" in value:
                # RFC 9110 5.5: reject (email ended the line at a bare CR; kept, it
                # reached Werkzeug, which raises on it: a 500 for an echoed Origin).
                self.status = "Invalid header value"
                return
            self._lines.append((name, value))
            key = name.lower()
            if key not in self._first:
                self._first[key] = value
            elif key in _FRAMING and (key == "transfer-encoding" or self._first[key] != value):
                self.status = "Ambiguous message framing"  # pywsgi reads the first only
                return

    def _check_framing(self) -> None:
        """A 400 for a body length pywsgi and a proxy before it could read differently
        (RFC 9112 6.1, 6.3): a Transfer-Encoding other than `chunked` (pywsgi decodes
        that alone), one beside a Content-Length (pywsgi would keep the connection),
        a Content-Length that is not digits (`int` takes "+5", "1_0")."""
        encoding = self._first.get("transfer-encoding")
        length = self._first.get("content-length")
        if encoding is not None:
            if length is not None or encoding.strip(" \t").lower() != "chunked":
                self.status = "Ambiguous message framing"
        elif length is not None and not _DIGITS.fullmatch(length.strip(" \t")):
            self.status = "Invalid Content-Length"

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of the header `name` (any case), else `default`."""
        return self._first.get(name.lower(), default)

    getheader = get

    def __delitem__(self, name: str) -> None:
        key = name.lower()
        self._first.pop(key, None)
        self._lines = [(n, v) for n, v in self._lines if n.lower() != key]

    @property
    def headers(self) -> Iterator[str]:
        """Each header as a `name: value` line, in the order received (pywsgi builds the
        environ from these)."""
        for name, value in self._lines:
            yield f"{name}: {value}\r\n"

    @property
    def typeheader(self) -> str | None:
        return self._first.get("content-type")
