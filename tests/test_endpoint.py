"""The WebSocket endpoint's own contracts, below the wire (the wire is tested elsewhere)."""

import gevent
from gevent.event import Event

from wsserver.transport.endpoint import WebSocketEndpoint


class _Handshake:
    """A handshake check that takes a lease, then waits (a region registry that hangs)."""

    def __init__(self):
        self.waiting = Event()
        self.taken, self.released = [], []

    def check(self, environ):
        self.taken.append("lease")
        try:
            self.waiting.set()
            gevent.sleep(30)
        except gevent.GreenletExit:
            self.released.append("lease")  # what Handshake.admit does when interrupted
            raise


def test_a_connection_interrupted_during_its_handshake_interrupts_the_check():
    """The check runs in a greenlet of its own (for the connection's memory, see
    `WebSocketEndpoint._check`); killing the connection's greenlet (a shutdown) must stop
    it too, so that what it took is released rather than kept by a check nobody waits for."""
    endpoint = WebSocketEndpoint.__new__(WebSocketEndpoint)  # only _check is exercised
    endpoint.handshake = _Handshake()
    connection = gevent.spawn(endpoint._check, {})
    assert endpoint.handshake.waiting.wait(5)
    connection.kill(timeout=5)
    assert connection.dead
    assert endpoint.handshake.released == endpoint.handshake.taken == ["lease"]
