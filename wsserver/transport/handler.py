"""The HTTP request handler under every server: gevent-websocket's, with a deadline on
the request line and headers, and its refusals of bad upgrades made safe.

gevent's pywsgi waits for a request's headers for ever, so 500 sockets that send half
an upgrade and stall hold 500 descriptors (and, under gunicorn, fill
`worker_connections`, refusing everyone). Here the request line and headers must be
complete within `header_timeout` seconds of the handler starting to wait for them
(for each request of a keep-alive connection); otherwise the client gets a 408 and the
connection is dropped. A request's body gets as long again from the end of its
headers (every route reads its body at once, and pywsgi reads the rest of one after the
answer to keep the connection alive): a client that announces a body and stalls gets
the 408 too, or is dropped when its answer was already sent. Once the headers (and body)
are in, the deadline is gone: an open WebSocket has no time limit.

gevent-websocket 0.10 answers a bad upgrade (no or an unsupported Sec-WebSocket-Version,
a missing key, HTTP/1.0) with a `str` body, which pywsgi on Python 3 cannot send (a
TypeError and a traceback per request), and does not catch the error base64 raises for
a key that is not base64: both become plain 4xx answers here.

Once a WebSocket is open, the handler keeps nothing of the request it no longer reads
(the header deadline, the parsed headers, the 101's headers).

`wsserver serve` uses `WebSocketRequestHandler`; gunicorn uses `GunicornWorker`
(wsserver/gunicorn_conf.py), gevent-websocket's worker with this handler. What the
handler needs of the app (the deadline, who hears of a timeout, the access log, the
subprotocol to accept) is a `HandlerSettings` the app factory puts in the Flask app's
`extensions` (Flask's place for state of its extensions): the servers only hand the
handler the WSGI application, and gevent-websocket's own hook (an `app_protocol`
attribute on that object, matched as a substring) is not used.
"""

from __future__ import annotations

import binascii
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gevent
from geventwebsocket.handler import WebSocketHandler

from ..logs import log_access
from .headers import RequestHeaders

log = logging.getLogger(__name__)

DEFAULT_HEADER_TIMEOUT = 10.0
EXTENSION = "wsserver.handler"  # app.extensions: the app's HandlerSettings


@dataclass
class HandlerSettings:
    """What the request handler takes from the app (see the module docstring)."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    # (client ip, seconds) of a request whose headers took too long: counted, logged.
    on_header_timeout: Callable[[str, float], None] | None = None
    access_log: logging.Logger | None = None  # one line per request; None: none
    # The subprotocol to accept from a handshake's environ (None: none), answered in
    # the 101's Sec-WebSocket-Protocol.
    select_subprotocol: Callable[[dict], str | None] | None = None


_DEFAULTS = HandlerSettings()


def settings_of(application: Any) -> HandlerSettings:
    """The HandlerSettings of a WSGI application made by the app factory (defaults for
    any other)."""
    return getattr(application, "extensions", {}).get(EXTENSION, _DEFAULTS)


_REQUEST_TIMEOUT_BODY = b'{"error": "request headers took too long", "code": 408}'
_REQUEST_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n" % len(_REQUEST_TIMEOUT_BODY) + _REQUEST_TIMEOUT_BODY
)


class _HeadersTooSlow(BaseException):
    """Raised into the handler when the deadline passes. A BaseException, so that
    pywsgi's `except Exception` around header parsing (which would print a traceback
    and answer 400) lets it through to `handle_one_request`."""


class _BodyTooSlow(BaseException):
    """Raised by a body read past the body deadline (a BaseException like the above:
    Flask's and pywsgi's `except Exception` let it through to `handle_one_request`)."""


class _DeadlineReader:
    """The request body's reader: every read must be done by `deadline` (monotonic)."""

    def __init__(self, rfile: Any, deadline: float) -> None:
        self._rfile = rfile
        self._deadline = deadline

    def _bounded(self, read: Any, *args: Any) -> Any:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise _BodyTooSlow()
        with gevent.Timeout(remaining, _BodyTooSlow):
            return read(*args)

    def read(self, *args: Any) -> Any:
        return self._bounded(self._rfile.read, *args)

    def readline(self, *args: Any) -> Any:
        return self._bounded(self._rfile.readline, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rfile, name)


class WebSocketRequestHandler(WebSocketHandler):
    """gevent-websocket's handler with the header deadline and safe upgrade refusals."""

    def MessageClass(self, rfile: Any, *args: Any) -> RequestHeaders:  # noqa: N802 (pywsgi names it)
        """The request's headers, without the `email` package (transport/headers.py)."""
        return RequestHeaders(rfile)

    def handle_one_request(self) -> Any:
        settings = settings_of(self.server.application)
        timeout = self._header_timeout = settings.header_timeout
        self._header_deadline = gevent.Timeout.start_new(timeout, _HeadersTooSlow)
        try:
            return super().handle_one_request()
        except (_HeadersTooSlow, _BodyTooSlow) as e:
            self.close_connection = True
            if isinstance(e, _BodyTooSlow) and self.headers_sent:
                return None  # answered already: only the connection is dropped
            on_timeout = settings.on_header_timeout
            if on_timeout is not None:
                address = self.client_address  # a path string on a Unix socket
                on_timeout(address[0] if isinstance(address, tuple) else "-", timeout)
            return ("408", _REQUEST_TIMEOUT_RESPONSE)
        finally:
            self._end_header_deadline()

    def read_request(self, raw_requestline: str) -> Any:
        # The headers are read when this returns: the rest of the request (the
        # application, the WebSocket) runs without the deadline.
        try:
            return super().read_request(raw_requestline)
        finally:
            self._end_header_deadline()

    def _end_header_deadline(self) -> None:
        # Dropped, not only cancelled: a WebSocket would keep it (and its timer) as long
        # as it stays open.
        deadline, self._header_deadline = self._header_deadline, None
        if deadline is not None:
            deadline.cancel()

    def handle_error(self, t: Any, v: Any, tb: Any) -> None:
        if isinstance(v, _BodyTooSlow):  # pywsgi's bare except would answer 500
            raise v
        super().handle_error(t, v, tb)

    def get_environ(self) -> Any:
        environ = super().get_environ()
        body = self.wsgi_input
        if body is not None and (body.content_length or body.chunked_input):
            # The body by the same timeout again (an upgrade reads the socket itself).
            body.rfile = _DeadlineReader(body.rfile, time.monotonic() + self._header_timeout)
        return environ

    def run_websocket(self) -> None:
        # The 101 is sent: the parsed request headers and our answer's are not read again
        # (the environ keeps what the handshake reads); an open WebSocket would keep them,
        # ~2 KB per connection.
        self.headers = self.response_headers = None
        super().run_websocket()

    def log_request(self) -> None:
        """One access line per request (a WebSocket's when it ends: status 101, its
        lifetime as the duration) on the app's `access_log` logger, when it has one
        (`access_log: true`, or gunicorn's --access-logfile). gevent-websocket's own
        line (logger `geventwebsocket.handler`, plain HTTP only) is not used: it is why
        gunicorn's access log stayed empty (gunicorn writes it from its own pywsgi
        handler, which this one is not)."""
        logger = settings_of(self.server.application).access_log
        if logger is None:
            return
        environ = self.environ or {}
        raw = self.status or "000"  # pywsgi: bytes once answered, a str on its errors
        status = (raw.decode("latin-1") if isinstance(raw, bytes) else str(raw)).split()[0]
        finished = self.time_finish or time.time()
        address = self.client_address
        log_access(
            logger,
            method=environ.get("REQUEST_METHOD", "-"),
            path=environ.get("PATH_INFO", "")
            + (f"?{q}" if (q := environ.get("QUERY_STRING")) else ""),
            status=int(status) if status.isdigit() else 0,
            duration=finished - self.time_start,
            # After the app: REMOTE_ADDR is the client behind `trusted_proxies`.
            ip=environ.get("REMOTE_ADDR") or (address[0] if isinstance(address, tuple) else "-"),
        )

    def upgrade_websocket(self) -> list[bytes] | None:
        select = settings_of(self.server.application).select_subprotocol
        protocol = select(self.environ) if select is not None else None
        if protocol is not None:  # answered with the 101 (gevent-websocket builds it)
            start_response = self.start_response  # type: ignore[has-type]  # pywsgi: untyped

            def start_with_protocol(status: str, headers: list, exc_info: Any = None) -> Any:
                if status.startswith("101"):
                    headers = [*headers, ("Sec-WebSocket-Protocol", protocol)]
                return start_response(status, headers, exc_info)

            self.start_response = start_with_protocol
        try:
            result = super().upgrade_websocket()
        except binascii.Error:  # gevent-websocket only catches TypeError from b64decode
            log.debug("invalid Sec-WebSocket-Key from %s", self.client_address)
            self.start_response("400 Bad Request", [])
            result = ["Invalid Sec-WebSocket-Key"]
        finally:
            self.__dict__.pop("start_response", None)  # the next request's is pywsgi's
        if result:
            return [part.encode("utf-8") if isinstance(part, str) else part for part in result]
        return result


def __getattr__(name: str) -> Any:
    """`GunicornWorker` (gunicorn_conf's `worker_class`): gevent-websocket's gunicorn
    worker with the header deadline, made on first use. Its base imports gunicorn's
    worker machinery (the reloader's inotify included: ~20 ms), which `wsserver serve`
    never needs."""
    if name != "GunicornWorker":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from geventwebsocket.gunicorn.workers import GeventWebSocketWorker

    class GunicornWorker(GeventWebSocketWorker):
        """gevent-websocket's gunicorn worker with the header deadline."""

        wsgi_handler = WebSocketRequestHandler

    GunicornWorker.__qualname__ = name
    globals()[name] = GunicornWorker  # made once: later lookups find it here
    return GunicornWorker
