"""Signals: the one module that installs signal handlers in a wsserver process.

One rule for both ways a process runs: SIGTERM starts the graceful shutdown
(`WebSocketEndpoint.shutdown`: drain, close every client with 1012, flush every room)
in a greenlet of its own. A handler never does the work itself: it may run inside any
greenlet, between two bytecodes, and a shutdown blocks for seconds.

- `wsserver serve` (cli.py): SIGTERM and SIGINT (Ctrl-C) call `stop` once (`on_stop`),
  through gevent's signal watchers, which run the callback in the hub.
- A gunicorn worker (gunicorn_conf.py): gunicorn installs its own handlers in the worker
  with `signal.signal` (`Worker.init_signals`: SIGTERM ends the worker's loop, SIGINT
  and SIGQUIT quit at once, SIGUSR1 reopens the logs); the master keeps SIGHUP, SIGTTIN
  and the rest. `before_previous` puts our SIGTERM handler in front of gunicorn's,
  which then runs `delay` seconds later (after the drain). A gevent watcher must not be
  used there: libev's C handler would replace gunicorn's Python one for that signal.

Checked against gevent 26.9 and gunicorn 27.0.
"""

import signal
from collections.abc import Callable, Iterable
from types import FrameType

import gevent

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def on_stop(stop: Callable[[], object], signals: Iterable[int] = STOP_SIGNALS) -> None:
    """Run `stop()` in a new greenlet at the first of `signals` to arrive; later ones
    change nothing (the shutdown under way goes on)."""
    started: list[gevent.Greenlet] = []

    def handler() -> None:
        if not started:
            started.append(gevent.spawn(stop))

    for signum in signals:
        gevent.signal_handler(signum, handler)


def before_previous(
    stop: Callable[[], object],
    delay: float,
    signum: int = signal.SIGTERM,
    wait: Callable[[], object] | None = None,
) -> None:
    """At `signum`: run `stop()` in a new greenlet at once, and the handler installed
    before this call (gunicorn's) `delay` seconds later, with the signal's arguments.
    For a process whose server owns the signal: its own handler would end the accept
    loop at once, refusing new connections for the whole drain. `wait`: both come once
    `wait()` returns instead (a rolling restart's old worker serves until its
    successors are ready, wsserver/restarts.py)."""
    previous = signal.getsignal(signum)

    def handler(sig: int, frame: FrameType | None) -> None:
        def run() -> None:
            if wait is not None:
                wait()
            gevent.spawn(stop)
            if callable(previous):
                gevent.spawn_later(delay, previous, sig, frame)

        gevent.spawn(run)

    signal.signal(signum, handler)
