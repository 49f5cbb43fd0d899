"""gunicorn settings and hooks: `gunicorn -c python:wsserver.gunicorn_conf ...`.

gunicorn's gevent worker answers SIGTERM by stopping the accept loop and waiting up to
`graceful_timeout` for requests to finish, but an open WebSocket never finishes by
itself: without this hook every client would see 1006 after the timeout. Here SIGTERM
also starts the app's own shutdown (close clients with 1012, flush every room).
"""

import gc
import os
import signal

import gevent

bind = f"0.0.0.0:{os.environ.get('PORT', '1234')}"
worker_class = "geventwebsocket.gunicorn.workers.GeventWebSocketWorker"
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
graceful_timeout = 20
control_socket_disable = True


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
