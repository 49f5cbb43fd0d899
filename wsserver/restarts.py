"""Restarts nobody notices: a process hands its clients to its successor only once the
successor accepts on the same port.

Stopping a process closes its clients with 1012 and they reconnect at once (y-websocket
retries after 100-200 ms). If nothing accepts on the port at that moment (the old process
stopped listening, the new one is still importing), their handshakes are refused and
they back off: the restart is an outage. Both ways of restarting below keep one
listening socket accepting throughout, and close the old process's clients only after
the new process accepts on it. A plain restart (stop, then start) at least takes the
port early (`listen`, before the app is built) and queues a burst (BACKLOG).

One `wsserver serve` process: `wsserver serve --replace` (same host and port) asks the
process serving there, over a Unix socket beside it (`control_path`, mode 0600: only
its user may ask), for its listening socket (SCM_RIGHTS), starts accepting on that same
socket (one kernel queue: no connection is dropped between the two), then tells the
old process to stop (`Successor.release`): it stops accepting, closes its clients with
1012 (they come back to the new process), flushes its documents and exits. Without
Redis the two processes do not share their updates; for that second nothing is lost
(every update is durable before it is echoed, and a reconnecting provider's step 2
brings back whatever the new process lacks).

gunicorn (`WEB_CONCURRENCY >= 2`, Redis): `kill -HUP <master pid>` starts a new set of
workers and sends SIGTERM to the old ones at once. The master's `on_reload` hook records
the reload (`mark_reload`); every worker records when it is ready to accept
(`mark_ready`); an old worker's SIGTERM waits (accepting and serving meanwhile) until
as many workers newer than the reload are ready, at most `wait` seconds, then stops
accepting and closes its clients with 1012 as any shutdown does. A worker stopped for
any other reason (gunicorn's own stop, a crash) waits for nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterable
from typing import Any

import gevent

from .errors import CommandError
from .support.wait import wait_until

log = logging.getLogger(__name__)

_ASK = b"listener"
_GO = b"go"
# Seconds a successor waits for the serving process's answers.
ANSWER_TIMEOUT = 5.0
# Seconds a stopping process keeps serving after it stopped accepting, before it closes
# its clients: a connection accepted just before gets through its handshake and its
# first sync instead of a 1012 in the middle of it. At least SETTLE (a connection may
# still be on its way from the accept to the endpoint), then until every connection's
# sync step 1 was answered, at most SETTLE_MAX (a client that never sends one).
SETTLE = 0.25
SETTLE_MAX = 2.0
# The listening socket's queue of connections not yet accepted (gunicorn's default; the
# kernel caps it at net.core.somaxconn). Every client of a restarted process comes back
# within tens of milliseconds (y-websocket waits 200 ms after a close, whatever the
# code); gevent's default of 128 overflowed with 500 of them while the new process was
# busy loading their documents, the kernel dropped their SYNs and they retried a second
# later (TCP's first retransmission): `scripts/bench --scenarios replace`, resync p99
# 1.3 s in half the runs, ~0.5 s with this.
BACKLOG = 2048


def stop_accepting(servers: Iterable[Any], replaced: bool, connections: Iterable[Any]) -> None:
    """Stop accepting on `servers` (gevent servers): the `before_closing` of a shutdown.
    When a successor accepts on the port (`replaced`), let the handshakes under way among
    `connections` (the endpoint's) end first; a plain stop's clients hear their 1012 at
    once."""
    for server in servers:
        server.stop_accepting()
    if replaced:
        gevent.sleep(SETTLE)
        wait_until(
            lambda: all(c.synced or c.closed for c in list(connections)), SETTLE_MAX - SETTLE
        )


def control_path(host: str, port: int) -> str:
    """The Unix socket of the `wsserver serve` listening on host:port."""
    return os.path.join(tempfile.gettempdir(), f"wsserver-{host}-{port}.sock")


class Successor:
    """A starting process that took the listening socket of the one serving its port."""

    def __init__(self, channel: socket.socket, listener: socket.socket) -> None:
        self.channel = channel
        self.listener = listener

    def release(self) -> None:
        """We accept now: the old process may stop (its clients come to us)."""
        try:
            self.channel.sendall(_GO)
        except OSError as e:
            log.warning("could not tell the replaced process to stop: %s", e)
        finally:
            self.channel.close()


def take_over(path: str) -> Successor | None:
    """The listening socket of the process serving `path`'s port, or None when no
    process serves there (nothing at `path`, or a stale socket of a dead one)."""
    channel = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    channel.settimeout(ANSWER_TIMEOUT)
    try:
        channel.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        channel.close()
        return None
    try:
        channel.sendall(_ASK)
        _, fds, _, _ = socket.recv_fds(channel, 16, 1)
    except OSError:
        channel.close()
        raise
    if not fds:
        channel.close()
        raise OSError(f"the process at {path} sent no listening socket")
    listener = socket.socket(fileno=fds[0])
    return Successor(channel, listener)


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on host:port with a queue of BACKLOG (gevent's, once patched).
    `wsserver serve` takes its port before it builds its app (imports, storage: about
    half a second), so a client coming back from the process it follows after a plain
    stop waits in the queue until the app accepts, instead of being refused and backing
    off. CommandError when the port cannot be had."""
    sock = None
    try:
        # As the resolver encodes the name, first: what the IDNA codec refuses (an empty
        # label, one over 63 characters) is a UnicodeError, which gevent's resolver
        # thread would also print as a traceback.
        host.encode("idna")
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gevent's servers
        sock.bind(address)
        sock.listen(BACKLOG)
    except (OSError, UnicodeError) as e:
        if sock is not None:
            sock.close()
        reason = getattr(e, "strerror", None) or e
        raise CommandError(f"cannot listen on {host}:{port}: {reason}") from None
    return sock


def taken_over(host: str, port: int) -> tuple[socket.socket, Successor]:
    """`--replace`: the listening socket of the process serving host:port (its queue
    made BACKLOG long, whatever the process that made it chose), and that process.
    CommandError when no process serves there, or it does not answer."""
    try:
        successor = take_over(control_path(host, port))
    except OSError as e:
        raise CommandError(f"--replace: the process serving the port did not answer: {e}") from e
    if successor is None:
        raise CommandError(f"--replace: no wsserver serves {host}:{port}")
    successor.listener.listen(BACKLOG)
    return successor.listener, successor


def accepting(
    server: Any, successor: Successor | None, stop: Callable[[float, bool], object]
) -> Handover:
    """`server` (a started gevent server) accepts: the process it replaced, if any, may
    stop (its clients come here), and a later successor may take over by the same way
    (`stop(0, True)`: the port stays served throughout, so no drain; a settle)."""
    if successor is not None:
        successor.release()
    path = control_path(*server.address[:2])
    return Handover(path, server.socket, lambda: gevent.spawn(stop, 0, True)).start()


class Handover:
    """In a serving process: answers a successor at `path` (see the module doc).
    `on_replaced()` runs once the successor accepts: it stops accepting and shuts the
    process down."""

    def __init__(
        self, path: str, listener: socket.socket, on_replaced: Callable[[], object]
    ) -> None:
        self.path = path
        self.listener = listener
        self.on_replaced = on_replaced
        self._server: socket.socket | None = None
        self._inode: int | None = None
        self._loop: gevent.Greenlet | None = None

    def start(self) -> Handover:
        if os.path.exists(self.path):
            os.unlink(self.path)  # a dead process's, or the one we replace (it is done with it)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        umask = os.umask(0o177)
        try:
            server.bind(self.path)
        finally:
            os.umask(umask)
        server.listen(4)
        self._server = server
        self._inode = os.stat(self.path).st_ino
        self._loop = gevent.spawn(self._serve, server)
        return self

    def _serve(self, server: socket.socket) -> None:
        while True:
            channel, _ = server.accept()
            gevent.spawn(self._answer, channel)

    def _answer(self, channel: socket.socket) -> None:
        try:
            if channel.recv(16) != _ASK:
                return
            socket.send_fds(channel, [b"ok"], [self.listener.fileno()])
            if channel.recv(16) != _GO:
                return  # the successor gave up (it failed to start): we go on serving
            log.info("a new process accepts on this port: handing the clients over")
            self.on_replaced()
        except OSError as e:
            log.warning("handover to a successor failed: %s", e)
        finally:
            channel.close()

    def close(self) -> None:
        """Stop answering; remove the socket file unless a successor's replaced it."""
        if self._loop is not None:
            self._loop.kill(block=False)
        if self._server is not None:
            self._server.close()
        with contextlib.suppress(FileNotFoundError):  # gone already: nothing to remove
            if os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)


# --- gunicorn ---------------------------------------------------------------------------

RELOAD = "reload.json"


def mark_reload(directory: str, workers: int) -> None:
    """In the master, on HUP (gunicorn's `on_reload`): `workers` new workers are coming."""
    _write(os.path.join(directory, RELOAD), {"at": time.time(), "workers": workers})


def mark_ready(directory: str) -> None:
    """In a worker about to accept."""
    _write(os.path.join(directory, f"ready-{os.getpid()}.json"), {"at": time.time()})


def reloading(directory: str, booted_at: float) -> dict | None:
    """The reload (gunicorn's HUP) begun after a worker booted at `booted_at`, if any:
    {"at", "workers"}; None for a plain stop."""
    reload = _read(os.path.join(directory, RELOAD))
    return None if reload is None or reload["at"] < booted_at else reload


def wait_for_successors(directory: str, booted_at: float, wait: float) -> bool:
    """In a worker that got SIGTERM: when a reload began after it booted, wait until as
    many workers as the reload starts are ready (at most `wait` seconds). True when
    they are, or when no reload is under way."""
    reload = reloading(directory, booted_at)
    if reload is None:
        return True

    def ready() -> int:
        count = 0
        for name in os.listdir(directory):
            if name.startswith("ready-") and name.endswith(".json"):
                marker = _read(os.path.join(directory, name))
                pid = int(name[len("ready-") : -len(".json")])
                if marker is not None and marker["at"] >= reload["at"] and _alive(pid):
                    count += 1
        return count

    if wait_until(lambda: ready() >= reload["workers"], wait, interval=0.02):
        return True
    log.warning(
        "restart: %d of %d new workers ready after %.0f s; stopping anyway",
        ready(),
        reload["workers"],
        wait,
    )
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write(path: str, value: dict) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(value, f)
    os.replace(tmp, path)  # readers see the whole marker or none


def _read(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return None
