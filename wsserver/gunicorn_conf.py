"""gunicorn settings and hooks: `gunicorn -c python:wsserver.gunicorn_conf ...`.

gunicorn's gevent worker answers SIGTERM by stopping the accept loop and waiting up to
`graceful_timeout` for requests to finish, but an open WebSocket never finishes by
itself: without this hook every client would see 1006 after the timeout. Here SIGTERM
also starts the app's own shutdown (close clients with 1012, flush every room).

The config comes from `$WSSERVER_CONFIG` only (never the development config); the
master checks it before any worker starts, so a bad one stops gunicorn with one line
naming the key instead of a worker traceback.
"""

import gc
import os
import signal
import sys

import gevent

bind = f"0.0.0.0:{os.environ.get('PORT', '1234')}"
worker_class = "geventwebsocket.gunicorn.workers.GeventWebSocketWorker"
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
graceful_timeout = 20
control_socket_disable = True


def on_starting(server):
    """Check the config before any worker starts: a bad one stops gunicorn with one line
    naming the key (a worker would die with a traceback, over and over). The check runs
    in a forked child, so the master imports none of the modules that the workers'
    gevent monkey-patching must precede."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            from wsserver.app import load_settings
            from wsserver.errors import ConfigError

            try:
                load_settings()
                code = 0
            except ConfigError as e:
                server.log.error("wsserver: %s", e)
                code = 2
        except BaseException:
            server.log.exception("wsserver: the config check failed")
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(2)


def post_worker_init(worker):
    from wsserver.app import endpoint_of
    from wsserver.logs import configure_logging

    endpoint = endpoint_of(worker.wsgi)
    configure_logging(endpoint.config.log_level)
    gc.freeze()  # start-up objects live for ever: keep full collections short
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(sig, frame):
        if callable(previous):
            previous(sig, frame)
        gevent.spawn(endpoint.shutdown)

    signal.signal(signal.SIGTERM, on_term)
