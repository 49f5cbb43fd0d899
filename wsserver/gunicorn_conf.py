"""gunicorn settings and hooks: `gunicorn -c python:wsserver.gunicorn_conf ...`.

Shutdown. gunicorn's gevent worker answers SIGTERM by stopping the accept loop (closing
its listening socket) and waiting up to `graceful_timeout` for requests to finish; the
hook below lets it do so only after `shutdown_drain`, so that during the drain the
worker keeps accepting and serving everything but /readyz. An open WebSocket never
finishes by itself: without the hook below every client would see 1006 after the
timeout. So SIGTERM also starts the app's own shutdown (close clients with 1012, flush
every room, release the region claims). The worker's loop returns as soon as its
connections are gone, which is before the flush ends: `worker_exit` (run in the worker
process before it exits) waits for the whole shutdown, bounded by `shutdown_timeout`.

The config comes from `$WSSERVER_CONFIG` only (never the development config); the
master checks it before any worker starts, so a bad one stops gunicorn with one line
naming the key instead of a worker traceback. More than one worker needs `redis`
(README, "Running several processes and machines"): without it each worker would serve
its own copy of a document and two people on two workers would never see each other, so
that stops gunicorn the same way.

Metrics. Each worker is a process: prometheus_client's multiprocess mode keeps each
one's values in files under $PROMETHEUS_MULTIPROC_DIR (set here, in the master, before
any worker imports prometheus_client; a fresh temporary directory unless the variable
is already set), emptied at start, with dead workers marked so their gauges go.

Logs. gunicorn's own lines use wsserver's formatter (`log_format` of the config, text
or JSON), through `logger_class`.
"""

import gc
import glob
import os
import re
import shutil
import signal
import sys
import tempfile

import gevent
import yaml

from wsserver.logs import FORMATS, GunicornLogger

bind = f"0.0.0.0:{os.environ.get('PORT', '1234')}"
# gevent-websocket's worker with a deadline on request headers (transport/handler.py).
worker_class = "wsserver.transport.handler.GunicornWorker"
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
graceful_timeout = 20
control_socket_disable = True
logger_class = GunicornLogger

_OWN_METRICS_DIR = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _OWN_METRICS_DIR:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="wsserver-metrics-")


def _log_format():
    """`log_format` of $WSSERVER_CONFIG, read without importing the app: gevent patches
    a worker only once it starts, and modules imported here before it (PyJWT's import
    ssl) would keep the unpatched ones. A config the workers cannot use is reported by
    `on_starting`, naming the key."""
    try:
        with open(os.environ.get("WSSERVER_CONFIG", ""), encoding="utf-8") as f:
            value = (yaml.safe_load(f) or {}).get("log_format", "text")
    except (OSError, yaml.YAMLError, AttributeError):
        return "text"
    if isinstance(value, str):  # ${VAR} / ${VAR:-default}, as the config allows
        value = re.sub(
            r"\$\{(\w+)(?::-([^}]*))?\}", lambda m: os.environ.get(m[1], m[2] or ""), value
        )
    return value if value in FORMATS else "text"


GunicornLogger.log_format = _log_format()


def on_starting(server):
    """Check the config before any worker starts: a bad one stops gunicorn with one line
    naming the key (a worker would die with a traceback, over and over). The check runs
    in a forked child, so the master imports none of the modules that the workers'
    gevent monkey-patching must precede. Then empty the metrics directory: values of a
    previous run would be summed with this one's."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            from wsserver.app import load_settings
            from wsserver.errors import ConfigError

            try:
                config, _ = load_settings()
                if server.cfg.workers > 1 and not config.redis:
                    raise ConfigError(
                        "redis",
                        f"must be set to run {server.cfg.workers} workers "
                        "(WEB_CONCURRENCY): without it each worker would keep its own copy "
                        'of every document. Set it (redis: "${REDIS_URL}") or run one',
                    )
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
    for path in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "*.db")):
        os.remove(path)


def child_exit(server, worker):
    from wsserver import metrics

    metrics.mark_process_dead(worker.pid)


def on_exit(server):
    if _OWN_METRICS_DIR:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def post_worker_init(worker):
    from wsserver.app import endpoint_of
    from wsserver.logs import configure_logging

    endpoint = endpoint_of(worker.wsgi)
    worker.wsserver_endpoint = endpoint  # for worker_exit
    config = endpoint.config
    configure_logging(config.log_level, config.log_format)
    gc.freeze()  # start-up objects live for ever: keep full collections short
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(sig, frame):
        # gunicorn's own handler ends the worker's loop, which closes the listening
        # socket within a second: new connections would be refused for the rest of the
        # drain. So it runs only once the drain is over (the master waits
        # `graceful_timeout` before it kills a worker).
        gevent.spawn(endpoint.shutdown, drain=config.shutdown_drain)
        if callable(previous):
            gevent.spawn_later(config.shutdown_drain, previous, sig, frame)

    signal.signal(signal.SIGTERM, on_term)


def worker_exit(server, worker):
    """In the worker, once its loop has returned: wait until every document is flushed
    and the region claims are released (the shutdown SIGTERM began, or one begun here
    when the worker exits for another reason). gunicorn also calls this in the master
    for a worker it lost; there is nothing to wait for then."""
    endpoint = getattr(worker, "wsserver_endpoint", None)
    if endpoint is not None:
        endpoint.shutdown()
