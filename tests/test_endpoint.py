"""The WebSocket endpoint's own contracts, below the wire (the wire is tested elsewhere)."""

from types import SimpleNamespace

import gevent
from gevent.event import Event

from wsserver.endpoint import WebSocketEndpoint


def _endpoint(check):
    """An endpoint with only what `_check` uses: a handshake whose check is `check`."""
    endpoint = WebSocketEndpoint.__new__(WebSocketEndpoint)
    endpoint.handshake = SimpleNamespace(check=check)
    return endpoint


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
    handshake = _Handshake()
    connection = gevent.spawn(_endpoint(handshake.check)._check, {})
    assert handshake.waiting.wait(5)
    connection.kill(timeout=5)
    assert connection.dead
    assert handshake.released == handshake.taken == ["lease"]


class _Session:
    def __init__(self):
        self.released = 0

    def release(self):
        self.released += 1


def test_a_check_that_ends_while_its_connection_is_killed_releases_its_session():
    """The kill and the check's wake-up queued in the same hub turn, the kill first: the
    connection's greenlet stops the check, but the check ends first (its wake-up was
    already queued) with a session, which must be let go, not dropped with the greenlet."""
    session, go, waiting = _Session(), Event(), Event()

    def check(environ):
        waiting.set()
        go.wait()  # a registry answer on its way
        return session

    connection = gevent.spawn(_endpoint(check)._check, {})
    assert waiting.wait(5)
    connection.kill(block=False)
    go.set()
    connection.join(5)
    assert connection.dead and isinstance(connection.value, gevent.GreenletExit)
    assert session.released == 1


def test_a_refusal_keeps_the_traceback_of_the_check():
    """What the check raised reaches the connection's greenlet with the check's own
    frames in its traceback (a log of an unexpected failure must show where it was)."""
    import traceback

    def deep_inside_the_check():
        raise ValueError("broken")

    try:
        _endpoint(lambda environ: deep_inside_the_check())._check({})
    except ValueError as error:
        names = [frame.name for frame in traceback.extract_tb(error.__traceback__)]
    assert "deep_inside_the_check" in names
