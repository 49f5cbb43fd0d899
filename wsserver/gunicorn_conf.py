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
master checks it before any worker starts, so a bad one stops gunicorn with one line per
problem, each naming its key, instead of a worker traceback. The rules of a platform
deploy (loading.deployment_problems) stop it the same way: more than one worker needs
`redis` (README, "Running several processes and machines"): without it each worker would
serve its own copy of a document and two people on two workers would never see each
other; and a SQLite `storage` needs `storage_persistent: true` (a platform's disk is
wiped at every restart). Once gunicorn listens, the master writes the start-up line.

Metrics. Each worker is a process: prometheus_client's multiprocess mode keeps each
one's values in files under $PROMETHEUS_MULTIPROC_DIR (set here, in the master, before
any worker imports prometheus_client; a fresh temporary directory unless the variable
is already set), emptied at start, with dead workers marked so their gauges go.

Logs. gunicorn's own lines use wsserver's formatter (`log_format` of the config, text
or JSON), through `logger_class` (logs.GunicornLogger reads the config itself); in JSON
mode what gunicorn prints raw (a worker's boot error) becomes a JSON line too.
`--access-logfile` gets wsserver's access lines (transport/handler.py), as `access_log: true` does.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import sys
import tempfile
from typing import TYPE_CHECKING

from wsserver.logs import GunicornLogger
from wsserver.platform import procfile_bind, procfile_workers

if TYPE_CHECKING:  # gunicorn's master and worker, for type hints only
    from gunicorn.arbiter import Arbiter
    from gunicorn.workers.base import Worker

bind = procfile_bind()
# gevent-websocket's worker with a deadline on request headers (transport/handler.py).
worker_class = "wsserver.transport.handler.GunicornWorker"
workers = procfile_workers()
graceful_timeout = 20
control_socket_disable = True
logger_class = GunicornLogger

_OWN_METRICS_DIR = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _OWN_METRICS_DIR:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="wsserver-metrics-")
# Where the master marks a reload (HUP) and workers mark themselves ready: a stopping
# worker's clients wait for its successors (wsserver/restarts.py).
_OWN_RESTARTS_DIR = not os.environ.get("WSSERVER_RESTARTS_DIR")
if _OWN_RESTARTS_DIR:
    os.environ["WSSERVER_RESTARTS_DIR"] = tempfile.mkdtemp(prefix="wsserver-restarts-")
# The longest an old worker waits for its successors to be ready after a HUP (they
# import the app and open storage and Redis first), serving meanwhile; less than
# graceful_timeout, after which the master kills it.
RESTART_WAIT = 10.0


def on_starting(server: Arbiter) -> None:
    """Check the config before any worker starts: a bad one stops gunicorn with one line
    per problem, each naming its key (a worker would die with a traceback, over and
    over). The check runs in a forked child, so the master imports none of the modules
    that the workers' gevent monkey-patching must precede; the child hands back what
    the start-up line says (`when_ready`). Then empty the metrics directory: values of
    a previous run would be summed with this one's."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        code = 1
        try:
            from wsserver.app import load_settings, startup_fields
            from wsserver.errors import ConfigError

            try:
                config, _ = load_settings(workers=server.cfg.workers)
                os.write(write, json.dumps(startup_fields(config, server.cfg.workers)).encode())
                code = 0
            except ConfigError as e:
                for problem in e.problems:  # all of them: one boot, every error
                    server.log.error("wsserver: %s", problem)
                code = 2
        except BaseException:
            server.log.exception("wsserver: the config check failed")
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        summary = pipe.read()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(2)
    server.wsserver_startup = json.loads(summary)
    for path in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "*.db")):
        os.remove(path)


def when_ready(server: Arbiter) -> None:
    """The start-up line, once gunicorn listens: version, storage, Redis (passwords
    masked), region, workers and the address (JSON in JSON mode, like every line)."""
    from wsserver.logs import startup_message

    listen = ", ".join(str(s).replace("http://", "ws://", 1) for s in server.LISTENERS)
    fields = dict(server.wsserver_startup, listen=listen)
    server.log.info(startup_message(fields), extra=fields)


def child_exit(server: Arbiter, worker: Worker) -> None:
    from wsserver import metrics

    metrics.mark_process_dead(worker.pid)


def on_exit(server: Arbiter) -> None:
    if _OWN_METRICS_DIR:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
    if _OWN_RESTARTS_DIR:
        shutil.rmtree(os.environ["WSSERVER_RESTARTS_DIR"], ignore_errors=True)


def on_reload(server: Arbiter) -> None:
    """HUP (a rolling restart, README "Restarts without an outage"): the old workers,
    which gunicorn stops right after forking the new ones, wait for these to be ready
    before they close their clients with 1012."""
    from wsserver import restarts

    restarts.mark_reload(os.environ["WSSERVER_RESTARTS_DIR"], server.cfg.workers)


def post_fork(server: Arbiter, worker: Worker) -> None:
    """In the new worker, before gunicorn's gevent worker patches: gevent's patching with
    its plugin entry points read once (support/runtime.py: ~35 ms of every worker's
    boot, a rolling restart's included); the worker's own `patch_all()` then finds it
    done."""
    from wsserver.support import runtime

    runtime.patch()


def post_worker_init(worker: Worker) -> None:
    import time

    from wsserver import restarts
    from wsserver.app import endpoint_of
    from wsserver.logs import configure_logging
    from wsserver.support import runtime
    from wsserver.support.signals import before_previous
    from wsserver.transport.handler import settings_of

    booted_at = time.time()
    endpoint = endpoint_of(worker.wsgi)
    if worker.cfg.accesslog:  # --access-logfile: our lines (fields, redacted) go there
        settings_of(worker.wsgi).access_log = worker.log.access_log
    worker.wsserver_endpoint = endpoint  # for worker_exit
    config = endpoint.config
    configure_logging(config.log_level, config.log_format)
    runtime.settle()  # the collector and gevent tuned for serving (support/runtime.py)
    # gunicorn's own SIGTERM handler ends the worker's loop, which closes the listening
    # socket within a second: new connections would be refused for the rest of the
    # drain. So it runs only once the drain is over (the master waits
    # `graceful_timeout` before it kills a worker); the shutdown starts at once, or,
    # after a HUP, once the new workers are ready (restarts.py). Before it closes its
    # clients the worker stops accepting, so they reconnect to another worker: its
    # servers are those gunicorn makes in `run`, after this hook.
    servers: list = []

    class Server(worker.server_class):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            servers.append(self)

    worker.server_class = Server
    restarts_dir = os.environ["WSSERVER_RESTARTS_DIR"]
    before_previous(
        lambda: endpoint.shutdown(
            drain=config.shutdown_drain,
            before_closing=lambda: restarts.stop_accepting(
                servers,
                restarts.reloading(restarts_dir, booted_at) is not None,
                endpoint.connections,
            ),
        ),
        delay=config.shutdown_drain,
        wait=lambda: restarts.wait_for_successors(restarts_dir, booted_at, RESTART_WAIT),
    )
    restarts.mark_ready(restarts_dir)


def worker_exit(server: Arbiter, worker: Worker) -> None:
    """In the worker, once its loop has returned: wait until every document is flushed
    and the region claims are released (the shutdown SIGTERM began, or one begun here
    when the worker exits for another reason). gunicorn also calls this in the master
    for a worker it lost; there is nothing to wait for then."""
    endpoint = getattr(worker, "wsserver_endpoint", None)
    if endpoint is not None:
        endpoint.shutdown()
