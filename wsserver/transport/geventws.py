"""The one place wsserver reaches into gevent-websocket's WebSocket beyond its methods.

wsserver reads and writes the frames itself (transport/frames.py, connection.py):
gevent-websocket's `close(code, message)` sends no code (clients read garbage or 1006),
its unmasking is a pure-Python loop and it has no maximum message size (STACK-NOTES).
So a connection takes the socket from under it, and must keep it from writing on it.
Checked against gevent-websocket 0.10.1 (the newest release, 2017) and gevent 26.9.

- `socket_of`, `buffered_reader_of`: `ws.handler` is the pywsgi handler that upgraded
  the request; `socket` and `rfile` are its public attributes. The reader may hold the
  client's first frames, sent right behind the upgrade request.
- `release`: gevent-websocket has no way to mark a WebSocket closed without sending:
  its `close()` writes a code-less close frame, and its handler calls `close()` when the
  application returns unless the (documented, writable) `closed` attribute is set. We
  set it once our own close frame went out, or the socket was handed over
  (delayed_close.py) and must stay silent.

The sends themselves use gevent's public API: `socket.send(data, 0, 0.0)` (a timeout of
0: try once, raise BlockingIOError instead of waiting; about 0.16 µs more per call than
the underlying OS socket's `send`, measured) and non-blocking duplicates.
"""

from typing import Any


def socket_of(ws: Any) -> Any:
    """The client's socket (gevent's) under the WebSocket `ws`."""
    return ws.handler.socket


def buffered_reader_of(ws: Any) -> Any:
    """pywsgi's buffered reader of the request, None when there is none."""
    return ws.handler.rfile


def release(ws: Any) -> None:
    """gevent-websocket sends nothing more on `ws` (no close frame of its own)."""
    ws.closed = True
