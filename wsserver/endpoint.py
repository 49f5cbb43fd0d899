"""The WebSocket endpoint: from an upgraded socket to a room member, and back out.

Per connection: handshake checks, join the room (sharing its load), then read
messages and hand them to the room (a read-only connection's document changes are
dropped before: documents/readonly.py) until the client leaves or breaks a rule. Every
exit path goes through one `finally`: leave the room (its awareness states removed
and the removal broadcast), close with the right code, release the socket.

Process-wide: one greenlet pings every socket each `ping_interval` and closes those
that did not answer the previous ping; `shutdown` closes every client with 1012 and
flushes every room.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import gevent
from gevent.event import AsyncResult

from . import metrics
from .documents import rebuild, ydoc
from .documents.readonly import ReadOnlyGuard
from .errors import CrdtPanic, GoingAway, InternalError, InvalidToken, ServiceRestart, WsServerError
from .handshake.claims import ACCESS_READ
from .handshake.handshake import (
    Gate,
    Handshake,
    forget_headers,
    peer,
)
from .logs import RefusalSummary, fields
from .protocol import codec
from .support.wait import wait_until
from .transport.connection import Connection
from .transport.delayed_close import DelayedCloses

if TYPE_CHECKING:
    from .documents.manager import DocumentManager
    from .documents.room import Room
    from .documents.storage import Store
    from .handshake.auth import Authenticator
    from .handshake.claims import Principal
    from .handshake.handshake import Session
    from .limits.refusals import Refusals
    from .settings import Config
    from .webhooks import Webhooks

log = logging.getLogger(__name__)

# Handshake refusals that providers retry for ever (README, "When the server refuses"):
# no token, a bad token, a forbidden tenant/app/origin, a bad document name.
RETRIED_REFUSALS = frozenset({4001, 4002, 4003, 4007})


class WebSocketEndpoint:
    def __init__(
        self,
        config: Config,
        authenticator: Authenticator,
        documents: DocumentManager,
        store: Store,
        gates: Iterable[Gate] = (),
        refusals: Refusals | None = None,
        webhooks: Webhooks | None = None,
    ) -> None:
        self.config = config
        self.handshake = Handshake(authenticator, gates, refusals)
        self.documents = documents
        self.store = store
        # connection_opened/closed(key, user) once a connection joined / left its room,
        # close(timeout) at shutdown (wsserver/webhooks); None: no app has webhooks.
        self.webhooks = webhooks
        self.connections: set[Connection] = set()
        # Read-only connections' document changes dropped, and connections closed for
        # them (documents/readonly.py), since start: shown by /healthz.
        self.read_only = Counter(dropped=0, closed=0)
        # Awareness entries dropped because another connection owns their client id
        # (documents/room.py), over every connection that has ended: /healthz shows it.
        self.awareness_ignored = 0
        self.stopping = False  # SIGTERM arrived: not ready any more (/readyz answers 503)
        self.shutting_down = False  # clients are being closed, documents flushed
        self._shutdown_result: AsyncResult | None = None  # once shutdown has begun
        self.refusal_log = RefusalSummary(log)
        self.delayed_closes = DelayedCloses(config.refusal_delay, config.max_delayed_refusals)
        self._pinger = gevent.spawn(self._ping_loop)
        self._metrics_flusher = gevent.spawn(self._flush_metrics_loop)
        # What else runs beside the endpoint and stops at the end of its shutdown
        # (`stop_at_shutdown`): (what, stop) pairs.
        self._stops: list[tuple[str, Callable[[], object]]] = []

    # --- one connection -------------------------------------------------------------

    def handle(self, environ: dict) -> None:
        ws = environ["wsgi.websocket"]
        conn = Connection(
            ws, self.config.max_message_size, self.config.max_pending_bytes, peer(environ)
        )
        self.connections.add(conn)
        room = session = expiry = None
        opened = time.monotonic()
        handed_over = False
        try:
            if self.shutting_down:
                raise ServiceRestart()
            session = self._check(environ)
            self._opened(conn, session, environ)
            # early: a cold document's first step 2 comes from storage (documents/cold.py)
            room = self.documents.join(session.key, conn, early=True)
            if self.webhooks is not None:
                self.webhooks.connection_opened(session.key, session.principal.user)
            expiry = self._close_on_expiry(conn, session.principal)
            self._serve(conn, room, session, opened)
        except WsServerError as e:
            if session is None:
                metrics.HANDSHAKES_REFUSED.labels(str(e.close_code)).inc()
            handed_over = self._close_with(conn, e, environ, session)
        except BaseException as e:  # a pycrdt panic too: no Exception (errors.CrdtPanic)
            panicked = ydoc.is_panic(e)
            if not (panicked or isinstance(e, Exception)):
                raise  # GreenletExit and the like: not a failure
            key = session.key if session else None
            log.error("connection %s failed", conn.peer, exc_info=e, extra=fields(conn, key, 1011))
            conn.close(CrdtPanic() if panicked else InternalError())
            if panicked and room is not None:  # it may have come between an update's
                rebuild.rebuild(room)  # integration and its storage (documents/rebuild.py)
        finally:
            if expiry is not None:
                expiry.kill(block=False)
            self._closed(conn, room, session)
            if not handed_over:
                conn.finish()

    def _opened(self, conn: Connection, session: Session, environ: dict) -> None:
        """A handshake passed: the connection becomes a member (logged, counted)."""
        forget_headers(environ)
        conn.peer = peer(environ)  # the rate gate has resolved the client IP
        conn.principal = session.principal
        log.debug(
            "open %s (%s): %s",
            conn.peer,
            environ.get("PATH_INFO"),
            session.principal.describe(),
            extra=fields(conn, session.key),
        )
        metrics.CONNECTIONS.inc()
        metrics.CONNECTIONS_ACCEPTED.inc()

    def _serve(self, conn: Connection, room: Room, session: Session, opened: float) -> None:
        """The member's messages into its room, until either side closes."""
        principal = session.principal
        budget = session.message_budget  # max_ops_per_minute (wsserver/limits/ops.py)
        # `access: "read"`: its document changes never reach the room
        # (documents/readonly.py), and the app learns it before its provider syncs:
        # this comes before the answer to the client's step 1 (README).
        guard = None
        if principal.read_only:
            guard = ReadOnlyGuard(principal, conn.peer, session.key.name, self.read_only)
            conn.send_message(codec.access(ACCESS_READ))
        while not conn.closed:
            data = conn.receive()
            if data is None or conn.closed:  # nothing is taken after our close
                break
            if budget is not None:
                budget.spend()
            message = codec.decode(data)
            metrics.received(message.kind, len(data))
            conn.messages_in += 1
            conn.bytes_in += len(data)
            if guard is None or guard.admits(room, message):
                room.receive(conn, message)
            if not conn.synced and message.kind == codec.KIND_STEP1:
                conn.synced = True  # the client now has the document
                metrics.INITIAL_SYNC_SECONDS.observe(time.monotonic() - opened)

    def _closed(self, conn: Connection, room: Room | None, session: Session | None) -> None:
        """The connection is over (a member or not): out of its room, counted, logged."""
        if room is not None and session is not None:  # a member has a session
            self.documents.leave(room, conn)
            if self.webhooks is not None:
                self.webhooks.connection_closed(session.key, session.principal.user)
        if session is not None:
            session.release()
            metrics.CONNECTIONS.dec()
            code = conn.close_code or 1006
            metrics.CLOSES.labels(metrics.close_code_label(code)).inc()
            log.debug("connection closed", extra=fields(conn, session.key, code))
        self.connections.discard(conn)
        self.awareness_ignored += conn.awareness_ignored

    def _check(self, environ: dict) -> Session:
        """`handshake.check(environ)`, run in a greenlet of its own.

        The check goes deeper than anything else a connection does (the JWT, the limits,
        the region registry). CPython keeps a greenlet's Python frames in memory pages
        of its own, and the pages a call once reached stay resident for as long as the
        greenlet lives: for a connection's greenlet, as long as the WebSocket stays open
        (~2.2 KB per idle connection, ybench `idle`). A greenlet that ends gives them
        back. If this greenlet is interrupted meanwhile (killed at shutdown), so is the
        check, and a session it got is released.
        """

        def check():  # returns (session, None) or (None, error)
            try:
                return self.handshake.check(environ), None
            except BaseException as error:  # raised in the connection's greenlet, not here
                return None, error

        checking = gevent.spawn(check)
        try:
            checking.join()
        except BaseException:
            checking.kill()
            # It may have ended in the meantime (its wake-up came before ours).
            session, _ = checking.value or (None, None)
            if session is not None:
                session.release()
            raise
        session, error = checking.value
        if error is not None:
            raise error  # with its own traceback, the check's frames in it
        return session

    def _close_with(
        self, conn: Connection, error: WsServerError, environ: dict, session: Session | None
    ) -> bool:
        """Log and close `conn` with `error` (`session`: None when the handshake refused
        it). Returns True when the close was handed to `delayed_closes` (the socket is no
        longer ours)."""
        if session is None and error.close_code in RETRIED_REFUSALS:
            # A provider retries these for ever: one log line per IP and code and
            # minute, and the answer comes late, from a socket that costs nothing.
            self.refusal_log.record(peer(environ), error.close_code, error.log_reason)
            if self.delayed_closes.take(conn.sock, error):
                conn.hand_over()
                return True
        elif not error.logged:  # refusals by the limits are logged where they are made
            key = session.key if session is not None else None
            log.info(
                "closing %s (%s): %d %s",
                peer(environ),
                environ.get("PATH_INFO"),
                error.close_code,
                error.log_reason,
                extra=fields(conn, key, error.close_code),
            )
        conn.close(error)
        return False

    def header_timed_out(self, ip: str, timeout: float) -> None:
        """transport/handler.py dropped a request whose headers took too long (408)."""
        self.refusal_log.record(ip, 408, f"request headers not complete within {timeout:g} s")

    def _close_on_expiry(self, conn: Connection, principal: Principal) -> gevent.Greenlet | None:
        """With `auth.close_on_expiry`: a timer closing `conn` with 4002 "token expired"
        when the token's exp (plus the skew) passes. Returns it, or None."""
        deadline = self.handshake.authenticator.expiry_deadline(principal)
        if deadline is None:
            return None

        def expire() -> None:
            if not conn.closed:
                log.info("closing %s: 4002 token expired", conn.peer)
                conn.close(InvalidToken("token expired"))

        return gevent.spawn_later(max(0.0, deadline - time.time()), expire)

    # --- process-wide ---------------------------------------------------------------

    def _ping_loop(self):
        while True:
            gevent.sleep(self.config.ping_interval)
            for conn in list(self.connections):
                if conn.closed:
                    continue
                if not conn.answered_last_ping:
                    log.info("closing %s: no answer to ping", conn.peer)
                    conn.close(GoingAway("ping timeout"))
                else:
                    conn.ping()

    def _flush_metrics_loop(self):
        """Per-message counts reach their Prometheus counters once a second (metrics.py:
        other processes' scrapes read them from there)."""
        while True:
            gevent.sleep(metrics.FLUSH_INTERVAL)
            metrics.flush()

    @property
    def ready(self) -> bool:
        """False from the moment SIGTERM arrived (see `shutdown`)."""
        return not self.stopping

    def shutdown(
        self,
        timeout: float | None = None,
        drain: float = 0.0,
        before_closing: Callable[[], object] | None = None,
    ) -> bool:
        """Stop being ready; after `drain` seconds (while everything else still serves,
        so a load balancer sees /readyz fail and stops sending clients), call
        `before_closing` (e.g. stop accepting), close every client with 1012, flush
        every room, close the store, let the gates go (region claims are released once
        every room was flushed).

        Returns True when everything was flushed within `timeout` seconds (the drain
        not counted). A second call waits for the first one's end and returns its
        result: gunicorn's worker must not exit before it (wsserver/gunicorn_conf.py).
        """
        if self._shutdown_result is not None:
            return self._shutdown_result.get()
        self._shutdown_result = AsyncResult()
        self.stopping = True
        try:
            if drain:
                gevent.sleep(drain)
            if before_closing is not None:
                before_closing()
            result = self._shutdown(timeout)
        except BaseException as e:
            self._shutdown_result.set_exception(e)
            raise
        self._shutdown_result.set(result)
        return result

    def stop_at_shutdown(self, what: str, stop: Callable[[], object]) -> None:
        """Call `stop` at the end of the shutdown (its last step), within the deadline:
        for a part built beside the endpoint that runs greenlets of its own."""
        self._stops.append((what, stop))

    def _shutdown(self, timeout):
        timeout = self.config.shutdown_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        self.shutting_down = True
        self._pinger.kill(block=False)
        self._metrics_flusher.kill(block=False)
        for conn in list(self.connections):
            conn.close(ServiceRestart())
        self.delayed_closes.close_all()
        self.refusal_log.flush()
        wait_until(lambda: not self.connections, deadline - time.monotonic())
        left = max(0.1, deadline - time.monotonic())
        flushed = self.documents.shutdown(left)
        # Every step after the flush shares the one deadline: each gets what is left and
        # is waited for no longer (see `_until`), whatever its own waits are (a registry
        # eviction waiting on storage, a call queued behind a stuck SQLite write).
        stored = bool(_until(deadline, "closing the store", self.store.close, left_of(deadline)))
        # Last: the final durable updates and the awareness removals of the clients just
        # closed reach the other processes, then a goodbye drops our clients' states there.
        _until(
            deadline,
            "the fan-out's goodbye",
            self.documents.fanout.close,
            min(2.0, left_of(deadline)),
        )
        for gate in self.handshake.gates:  # e.g. the region gate lets its claims go
            _until(
                deadline,
                f"the shutdown of {type(gate).__name__}",
                gate.shutdown,
                flushed and stored,
            )
        if self.webhooks is not None:  # what is queued gets what time is left
            _until(deadline, "the webhooks' delivery", self.webhooks.close, left_of(deadline))
        for what, stop in self._stops:
            _until(deadline, what, stop)
        metrics.flush()  # the last counts, before the process ends
        log.info("shutdown complete (flushed=%s, stored=%s)", flushed, stored)
        return flushed and stored


def left_of(deadline: float) -> float:
    """Seconds until `deadline` (monotonic), at least 0.1: a step that has no time left
    still gets to try once."""
    return max(0.1, deadline - time.monotonic())


def _until(deadline: float, what: str, step: Callable[..., Any], *args: Any) -> Any:
    """`step(*args)`'s value when it ends by `deadline` (a little after, at most 0.1 s),
    else None: it is then left running, never interrupted (psycopg must not be, see
    support/blocking.py), and ends with the process. A step that raises is logged."""

    def run():
        try:
            return step(*args)
        except Exception:
            log.exception("shutdown: %s failed", what)
            return None

    running = gevent.spawn(run)
    running.join(left_of(deadline))
    if not running.ready():
        log.error("shutdown: %s did not end within shutdown_timeout; not waiting for it", what)
        return None
    return running.value
