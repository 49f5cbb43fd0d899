"""Logging set-up: one line per record, and no token ever printed."""

import logging
import re
import sys
import time

_TOKEN = re.compile(r"((?:[?&]token=)|(?:access_token,\s*)|(?:Bearer\s+))[^&\s\"']+", re.I)


class RedactTokens(logging.Filter):
    """Replaces anything that looks like a token in a query, subprotocol or header."""

    def filter(self, record):
        message = record.getMessage()
        if "token" in message.lower() or "bearer" in message.lower():
            record.msg = _TOKEN.sub(r"\1[redacted]", message)
            record.args = ()
        return True


class Throttled:
    """Logs an error at most once per `every` seconds, saying how many were skipped:
    during an outage every request would otherwise log the same line."""

    def __init__(self, logger, every=10.0):
        self.logger = logger
        self.every = every
        self._last = None
        self._skipped = 0

    def error(self, message, *args):
        now = time.monotonic()
        if self._last is not None and now - self._last < self.every:
            self._skipped += 1
            return
        if self._skipped:
            message += f" ({self._skipped} more since the last report)"
        self.logger.error(message, *args)
        self._last = now
        self._skipped = 0


def configure_logging(level="info"):
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactTokens())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # gevent-websocket logs every non-upgrade request line at INFO (query included);
    # the filter above redacts it, and it is noise at the default level.
    logging.getLogger("geventwebsocket.handler").setLevel(logging.WARNING)
