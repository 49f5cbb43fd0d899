"""Logging set-up: one line per record, text or JSON, and no token ever printed.

`log_format: text` (default) writes `time LEVEL logger: message`; `log_format: json`
writes one JSON object per line (python-json-logger) with `ts`, `level`, `logger`,
`message`, `exc_info` for a traceback, and whatever the record carries as `extra`:
connection events add `tenant`, `app`, `doc`, `conn`, `ip` and `code` (see `fields`).
In JSON mode everything the process prints about itself is a JSON line too: gunicorn's
own logs (`GunicornLogger`), errors of greenlets (gevent's hub) and uncaught exceptions.

Tokens: every formatter applies `scrub.redact` (the one scrubber, wsserver/scrub.py) to
each finished line (message, extras and traceback alike), and the handshake applies it
to the request's environ before any access log can print it (`scrub_token`).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TextIO

import gevent
from gunicorn.glogging import Logger as GunicornBaseLogger
from pythonjsonlogger.json import JsonFormatter

from .envsubst import expand_env
from .scrub import redact

if TYPE_CHECKING:  # type hints only (the floors above)
    from .documents.key import DocKey
    from .transport.connection import Connection

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JSON_FIELDS = ["levelname", "name", "message"]
JSON_RENAMES = {"levelname": "level", "name": "logger"}
FORMATS = ("text", "json")


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonLineFormatter(JsonFormatter):
    """One JSON object per record; the timestamp `ts` is ISO 8601 in UTC."""

    def __init__(self) -> None:
        super().__init__(JSON_FIELDS, rename_fields=JSON_RENAMES, timestamp="ts")

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def formatter(log_format: str = "text") -> logging.Formatter:
    return JsonLineFormatter() if log_format == "json" else TextFormatter()


def fields(
    conn: Connection | None = None,
    key: DocKey | None = None,
    code: int | None = None,
    ip: str | None = None,
) -> dict[str, Any]:
    """The `extra` of a connection event: tenant, app, doc, conn, ip, code (those known).
    `key` is a DocKey; `conn` a Connection."""
    extra: dict[str, Any] = {}
    if key is not None:
        extra.update(tenant=key.tenant, app=key.app, doc=key.name)
    if conn is not None:
        extra["conn"] = conn.id
        ip = ip or conn.peer
    if ip is not None:
        extra["ip"] = ip
    if code is not None:
        extra["code"] = code
    return extra


def startup_message(fields: Mapping[str, Any]) -> str:
    """The start-up line's text: `fields` of app.startup_fields plus `listen` (here,
    so gunicorn's master can write it without importing the app)."""
    return (
        f"wsserver {fields['version']} listening on {fields['listen']} "
        f"(storage {fields['storage']}, redis {fields['redis'] or 'none'}, "
        f"region {fields['region']}, workers {fields['workers']})"
    )


def log_access(
    logger: logging.Logger, method: str, path: str, status: int, duration: float, ip: str
) -> None:
    """One access log line: `GET /doc?token=[redacted] 101 12.345s ip=203.0.113.5`, and
    the same as fields (method, path, status, duration in seconds, ip) in JSON."""
    path = redact(path)
    duration = round(duration, 6)
    logger.info(
        "%s %s %d %.3fs ip=%s",
        method,
        path,
        status,
        duration,
        ip,
        extra={"method": method, "path": path, "status": status, "duration": duration, "ip": ip},
    )


class Throttled:
    """Logs an error at most once per `every` seconds, saying how many were skipped:
    during an outage every request would otherwise log the same line."""

    def __init__(self, logger: logging.Logger | None, every: float = 10.0) -> None:
        self.logger = logger
        self.every = every
        self._last: float | None = None
        self._skipped = 0

    def error(self, message: str, *args: Any, exc_info: bool = False) -> None:
        due = self.due(message)
        if due is not None and self.logger is not None:
            self.logger.error(due, *args, exc_info=exc_info)

    def due(self, message: str) -> str | None:
        """`message` (saying how many were skipped) when one may be logged now, else
        None (counted as skipped)."""
        now = time.monotonic()
        if self._last is not None and now - self._last < self.every:
            self._skipped += 1
            return None
        if self._skipped:
            message += f" ({self._skipped} more since the last report)"
        self._last = now
        self._skipped = 0
        return message


class ThrottleFilter(logging.Filter):
    """A logger filter letting one record through per `every` seconds (a library's
    logger that repeats itself during an outage: psycopg_pool's reconnect attempts)."""

    def __init__(self, every: float = 10.0) -> None:
        super().__init__()
        self._throttle = Throttled(None, every)

    def filter(self, record: logging.LogRecord) -> bool:
        message = self._throttle.due(record.getMessage())
        if message is None:
            return False
        record.msg, record.args = message, ()
        return True


class RefusalSummary:
    """Refusals logged per client IP and code: the first of each `window` at once, the
    rest as one summary line when the window ends. A client that is refused ten times a
    second for ever (a provider reconnecting with a bad token) costs two lines a
    minute, not 600. At most `max_keys` (IP, code) pairs are tracked per window; the
    rest are counted together under `ip=(others)`.
    """

    OTHERS = "(others)"

    def __init__(
        self, logger: logging.Logger, window: float = 60.0, max_keys: int = 10_000
    ) -> None:
        self.logger = logger
        self.window = window
        self.max_keys = max_keys
        # (ip, code) -> [refusals after the first, latest reason]
        self._counts: dict[tuple[str, int], list[Any]] = {}
        self._flusher: gevent.Greenlet | None = None

    def record(self, ip: str, code: int, reason: str) -> None:
        key = (ip, code)
        entry = self._counts.get(key)
        if entry is None and len(self._counts) >= self.max_keys:
            key = (self.OTHERS, code)
            entry = self._counts.get(key)
        if entry is not None:
            entry[0] += 1
            entry[1] = reason
            return
        self._counts[key] = [0, reason]
        self.logger.info(
            "refused %d %s: ip=%s (more of these: one summary line per %d s)",
            code,
            reason,
            key[0],
            self.window,
            extra=fields(ip=key[0], code=code),
        )
        if self._flusher is None:
            self._flusher = gevent.spawn_later(self.window, self.flush)

    def flush(self) -> None:
        """Log the window's summary lines and start a new window."""
        self._flusher = None
        counts, self._counts = self._counts, {}
        for (ip, code), (more, reason) in counts.items():
            if more:
                self.logger.info(
                    "refused %d x%d more: ip=%s in the last %d s (latest: %s)",
                    code,
                    more,
                    ip,
                    self.window,
                    reason,
                    extra=dict(fields(ip=ip, code=code), count=more),
                )


def configure_logging(level: str = "info", log_format: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # gevent-websocket logs every plain HTTP request line (query included) at INFO:
    # noise except at `debug`, where it shows (redacted like everything else).
    logging.getLogger("geventwebsocket.handler").setLevel(
        logging.DEBUG if level == "debug" else logging.WARNING
    )
    # psycopg_pool logs every connection taken and given back at INFO, and each failed
    # reconnect attempt (seconds apart) while Postgres is down at WARNING.
    pool = logging.getLogger("psycopg.pool")
    pool.setLevel(logging.WARNING)
    if not any(isinstance(f, ThrottleFilter) for f in pool.filters):
        pool.addFilter(ThrottleFilter())
    logging.captureWarnings(True)
    if log_format == "json":
        _route_uncaught_errors()


def _route_uncaught_errors():
    """Send what would otherwise be printed raw to stderr through logging: exceptions
    that end a greenlet (gevent's hub prints them itself) and uncaught exceptions."""
    import gevent.hub

    errors = logging.getLogger("wsserver.uncaught")

    def print_exception(hub, context, t, v, tb):
        errors.error("unhandled error in %s", context, exc_info=(t, v, tb))

    gevent.hub.Hub.print_exception = print_exception
    sys.excepthook = lambda t, v, tb: errors.critical("uncaught exception", exc_info=(t, v, tb))


def log_format_of(path: str | None, env: Mapping[str, str] = os.environ) -> str:
    """`log_format` of the config file `path` (${VAR} expanded), read without
    validating the rest: what the lines of a boot that fails on the config are written
    in, and what gunicorn's master uses (it must not import the app: gevent patches a
    worker only once it starts, and modules imported before it, PyJWT's `import ssl`,
    would keep the unpatched ones). "text" when it cannot be read or is not valid."""
    import yaml

    try:
        with open(path or "", encoding="utf-8") as f:
            value = (yaml.safe_load(f) or {}).get("log_format", "text")
    except (OSError, yaml.YAMLError, AttributeError):
        return "text"
    # ${VAR} as the config expands it; an unset one leaves "" (not a format: "text").
    value = expand_env(value, env, "log_format", errors=[])
    return value if value in FORMATS else "text"


class JsonStderr:
    """sys.stderr for JSON mode: a line written raw (gunicorn's `print` of a worker's
    boot error, a library's print) becomes a JSON record of logger `wsserver.stderr`;
    JSON lines (the log handlers') pass through as they are."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._partial = ""

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            if line.startswith("{"):
                self.stream.write(line + "\n")
            elif line.strip():
                self._emit(line)
        return len(text)

    def _emit(self, line):
        record = logging.LogRecord("wsserver.stderr", logging.ERROR, "", 0, line, (), None)
        self.stream.write(JsonLineFormatter().format(record) + "\n")

    def flush(self) -> None:
        if self._partial:
            line, self._partial = self._partial, ""
            if line.startswith("{"):
                self.stream.write(line)
            else:
                self._emit(line)
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding...
        return getattr(self.stream, name)


class GunicornLogger(GunicornBaseLogger):
    """gunicorn's logger with our formatters: its own lines (start-up, workers,
    tracebacks, the access log when enabled) come out as text or JSON like ours, and
    redacted. The format is `log_format` of the wsserver config ($WSSERVER_CONFIG, from
    the environment or gunicorn's `--env`), read again at each `setup` (gunicorn calls
    it at start and on every reload, SIGHUP). In JSON mode sys.stderr becomes a
    JsonStderr: what gunicorn prints raw (a worker's boot error, arbiter.spawn_worker)
    is a JSON line too."""

    log_format = "text"  # until `setup` has read the config

    def setup(self, cfg: Any) -> None:
        self.log_format = self.format_of(cfg)
        _stderr_for(self.log_format)
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.setFormatter(formatter(self.log_format))
        # Until a worker configures logging (post_worker_init), what else is logged
        # (warnings too, e.g. gevent's when patching) goes out in the same format.
        root = logging.getLogger()
        if not root.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(formatter(self.log_format))
            root.addHandler(handler)
        logging.captureWarnings(True)

    @staticmethod
    def format_of(cfg: Any) -> str:
        """`log_format` of the config gunicorn's workers will load: $WSSERVER_CONFIG of
        gunicorn's `--env` settings (`cfg.env`, put into the environment after the
        logger is made) over the process's."""
        env = {**os.environ, **cfg.env}
        return log_format_of(env.get("WSSERVER_CONFIG"), env)


def _stderr_for(log_format: str) -> None:
    """sys.stderr a JsonStderr in JSON mode, the real stream in text mode."""
    stream = sys.stderr
    if isinstance(stream, JsonStderr):
        if log_format != "json":
            sys.stderr = stream.stream
    elif log_format == "json":
        sys.stderr = JsonStderr(stream)
