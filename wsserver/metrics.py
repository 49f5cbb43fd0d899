"""Prometheus metrics: every metric object of the server, and the exposition.

A low module: any layer may import it and count where the event happens
(`metrics.UPDATES.inc(n)`); it imports nothing of wsserver. Names are in base units
(seconds, bytes), counters end in `_total`, and labels are bounded sets only (a close
code, a message type, an operation): never a document, a tenant or a user, whose number
has no bound.

Under `gunicorn -w N` each worker is a process of its own: prometheus_client's
multiprocess mode keeps each process's values in files under
`$PROMETHEUS_MULTIPROC_DIR`, which wsserver/gunicorn_conf.py creates and empties at
start and in which it marks dead workers; `render()` then sums every live process. The
variable must be set before this module is first imported (gunicorn's config does it in
the master, before any worker starts). Without it (`wsserver serve`) the values are
this process's.
"""

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# `*_created` samples (a timestamp per counter and histogram) only add series here.
disable_created_metrics()

# --- connections and handshakes ----------------------------------------------------

CONNECTIONS = Gauge(
    "wsserver_connections",
    "Open WebSocket connections that passed the handshake.",
    multiprocess_mode="livesum",
)
CONNECTIONS_ACCEPTED = Counter(
    "wsserver_connections_accepted_total", "WebSocket connections that passed the handshake."
)
HANDSHAKES_REFUSED = Counter(
    "wsserver_handshakes_refused_total",
    "WebSocket handshakes refused, by close code (4001-4009, 1012, 1013).",
    ["code"],
)
CLOSES = Counter(
    "wsserver_closes_total",
    "Accepted connections ended, by the close code sent (1006: the socket was lost).",
    ["code"],
)
INITIAL_SYNC_SECONDS = Histogram(
    "wsserver_initial_sync_seconds",
    "From the upgrade to the server's answer to the client's first sync step 1 (the "
    "client then has the document), document load included.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

# --- messages ------------------------------------------------------------------------

MESSAGES_RECEIVED = Counter(
    "wsserver_messages_received_total", "y-websocket messages received, by type.", ["type"]
)
RECEIVED_BYTES = Counter(
    "wsserver_received_bytes_total", "Payload bytes of the messages received, by type.", ["type"]
)
MESSAGES_SENT = Counter(
    "wsserver_messages_sent_total",
    "y-websocket messages sent, by type (a broadcast counts once per connection).",
    ["type"],
)
SENT_BYTES = Counter(
    "wsserver_sent_bytes_total", "Payload bytes of the messages sent, by type.", ["type"]
)

# --- documents and storage ---------------------------------------------------------

DOCUMENTS_LOADED = Gauge(
    "wsserver_documents_loaded", "Documents loaded in memory.", multiprocess_mode="livesum"
)
UPDATES = Counter("wsserver_updates_total", "Updates stored (committed to storage).")
COMMIT_SECONDS = Histogram(
    "wsserver_store_commit_seconds",
    "Duration of one successful group commit to storage.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
STORAGE_ERRORS = Counter(
    "wsserver_storage_errors_total",
    "Failed storage operations (each retry counts), by operation.",
    ["operation"],
)

# --- regions, Redis, scale-out -----------------------------------------------------

REGISTRY_ERRORS = Counter(
    "wsserver_registry_errors_total",
    "Region registry calls that failed (the handshake then answers 1013).",
)
REDIS_ERRORS = Counter(
    "wsserver_redis_errors_total", "Redis calls that failed, by component.", ["component"]
)
# Observed by the scale-out relay (Redis Streams) when a message published by another
# process is delivered here.
FANOUT_LAG = Histogram(
    "wsserver_fanout_lag_seconds",
    "From an update's publication by one process to its delivery by another.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


# --- webhooks --------------------------------------------------------------------------

WEBHOOK_EVENTS = Counter(
    "wsserver_webhook_events_total",
    "Webhook deliveries by outcome: delivered, retried (an attempt failed and is repeated), "
    "dropped (queue full, refused by the receiver, or out of attempts).",
    ["outcome"],
)


class _Tally:
    """Per-message counts of one labelled counter, kept as plain ints and added to the
    counter by `flush()`.

    A prometheus_client increment takes a lock (a gevent lock once threading is
    patched: a Python call) and, in multiprocess mode, writes a mmap'ed file; counted
    for every message and recipient, that was a tenth of the server's CPU. The counts
    reach Prometheus at most FLUSH_INTERVAL seconds late (WebSocketEndpoint flushes),
    and in time for every scrape this process answers (`render`).
    """

    __slots__ = ("counter", "counts")

    def __init__(self, counter):
        self.counter = counter
        self.counts = {}

    def add(self, label, n):
        counts = self.counts
        counts[label] = counts.get(label, 0) + n

    def flush(self):
        counts, self.counts = self.counts, {}
        for label, n in counts.items():
            self.counter.labels(label).inc(n)


FLUSH_INTERVAL = 1.0  # seconds
_received, _received_bytes = _Tally(MESSAGES_RECEIVED), _Tally(RECEIVED_BYTES)
_sent, _sent_bytes = _Tally(MESSAGES_SENT), _Tally(SENT_BYTES)
_TALLIES = (_received, _received_bytes, _sent, _sent_bytes)


def received(kind: str, size: int) -> None:
    """One message of `kind` (codec.KIND_*) with `size` payload bytes came in."""
    _received.add(kind, 1)
    _received_bytes.add(kind, size)


def sent(kind: str, size: int, connections: int = 1) -> None:
    """One message of `kind` and `size` bytes went to `connections` connections."""
    if connections:
        _sent.add(kind, connections)
        _sent_bytes.add(kind, size * connections)


def flush() -> None:
    """Add the per-message counts gathered since the last flush to their counters."""
    for tally in _TALLIES:
        tally.flush()


# Close codes the server sends or expects (4404: the admin deleted the document);
# anything else a client sends is "other", so a client cannot make up label values.
_KNOWN_CLOSE_CODES = frozenset(
    {1000, 1001, 1002, 1003, 1005, 1006, 1007, 1009, 1011, 1012, 1013, *range(4001, 4010), 4404}
)


def close_code_label(code: int) -> str:
    return str(code) if code in _KNOWN_CLOSE_CODES else "other"


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def render() -> tuple[bytes, str]:
    """(body, content type) of the Prometheus text exposition: every live process's
    values in multiprocess mode, else this process's."""
    flush()
    if multiprocess_dir():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return generate_latest(registry), CONTENT_TYPE_LATEST


def mark_process_dead(pid: int) -> None:
    """gunicorn's child_exit: drop a dead worker's live gauges (its counters stay)."""
    if multiprocess_dir():
        multiprocess.mark_process_dead(pid)
