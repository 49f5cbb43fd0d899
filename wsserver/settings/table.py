"""Every setting declared once, with name, default, validator and doc (gunicorn's way):
`SETTINGS`, in the order README's configuration table lists them.

A setting's validator comes from the concern that owns it where there is one (limits'
plans and rate limit, the regions' map, pins and registry; `auth` and `webhooks` are
parsed in full by their owners at start) and from support/validators.py otherwise.
config.py loads a file or mapping against this table.
"""

from __future__ import annotations

from ..documents.storage.history import validate_history
from ..errors import ConfigError
from ..limits.plans import validate_plans, validate_rate_limit
from ..regions.map import validate_pins, validate_regions, validate_registry
from ..support.liveness import validate_process
from ..support.validators import (
    boolean,
    choice,
    integer,
    known_keys,
    long_secret,
    mapping,
    matching,
    number,
    string,
)
from .listen import HOST, PORT
from .setting import Setting

MIB = 1024 * 1024


def _storage_url(key, value):
    value = string(key, value)
    if not (
        value == "memory://" or value.startswith(("sqlite:///", "postgresql://", "postgres://"))
    ):
        raise ConfigError(key, "must be memory://, sqlite:///PATH or a postgresql:// URL")
    if value.startswith("sqlite:///") and len(value) == len("sqlite:///"):
        raise ConfigError(key, "sqlite:/// needs a path")
    return value


MIN_SECRET_LENGTH = 16


def _bearer_section(key, value):
    """`{token: SECRET}` (metrics, admin): the Bearer token that opens the routes; None
    (absent) keeps them closed (admin) or open (metrics)."""
    if value is None:
        return None
    known_keys(key, mapping(key, value), {"token"})
    return {"token": long_secret(MIN_SECRET_LENGTH)(f"{key}.token", value.get("token"))}


ADMIN_ROLES = ("viewer", "operator")


def _admin_section(key, value):
    """`admin`: `{token: SECRET}` (one operator named `admin`) and/or `{tokens: [{name,
    token, role}, ...]}` (named admins; role `viewer` reads, `operator` also acts). Names
    and tokens must be unique: the audit trail names who acted by the token used."""
    if value is None:
        return None
    known_keys(key, mapping(key, value), {"token", "tokens"})
    result = {}
    if value.get("token") is not None:
        result["token"] = long_secret(MIN_SECRET_LENGTH)(f"{key}.token", value["token"])
    tokens = value.get("tokens")
    if tokens is not None:
        if not isinstance(tokens, list) or not tokens:
            raise ConfigError(f"{key}.tokens", "must be a non-empty list of {name, token, role}")
        result["tokens"] = [_admin_token(f"{key}.tokens[{i}]", t) for i, t in enumerate(tokens)]
    if not result:
        raise ConfigError(key, "needs `token` or `tokens`")
    given = result.get("tokens", []) + (
        [{"name": "admin", "token": result["token"]}] if "token" in result else []
    )
    for field in ("name", "token"):
        values = [t[field] for t in given]
        if len(set(values)) != len(values):
            raise ConfigError(f"{key}.tokens", f"two admins have the same {field}")
    return result


def _admin_token(key, value):
    known_keys(key, mapping(key, value), {"name", "token", "role"})
    return {
        "name": string(f"{key}.name", value.get("name")),
        "token": long_secret(MIN_SECRET_LENGTH)(f"{key}.token", value.get("token")),
        "role": choice(*ADMIN_ROLES)(f"{key}.role", value.get("role", "viewer")),
    }


SETTINGS = [
    Setting(
        "region",
        "local",
        string,
        "This node's region; a key of `regions`. `$WSSERVER_REGION` overrides it.",
    ),
    Setting(
        "regions",
        {"local": "ws://127.0.0.1:1234"},
        validate_regions,
        "Region name -> public base URL of that region's nodes (ws:// or wss://, at most "
        "114 bytes so `REDIRECT:<url>`, the 4009 reason, fits in a close frame).",
    ),
    Setting(
        "pins",
        [],
        validate_pins,
        "Documents that must live in one region: a list of {tenant, app, documents, "
        "region}, each of the first three a glob (default `*`); the first match wins.",
    ),
    Setting(
        "registry",
        validate_registry("registry", None),
        validate_registry,
        "The global document registry: `release_after_seconds` (30: how long a region "
        "keeps a document after its last connection closes), `ttl_seconds` (15: a dead "
        "node's claims expire within it), `heartbeat_seconds` (ttl/3: claim renewal).",
    ),
    Setting(
        "storage",
        "sqlite:///data/wsserver.sqlite3",
        _storage_url,
        "Where documents are kept: `sqlite:///PATH` (relative to the working directory; "
        "`sqlite:////abs/path` for an absolute one), a Postgres URL "
        "(`postgresql://USER:PASSWORD@HOST:PORT/DB?sslmode=require`, or Heroku's "
        "`postgres://` form; usually `${DATABASE_URL}`) or `memory://` (tests only: lost "
        "on exit).",
    ),
    Setting(
        "storage_persistent",
        False,
        boolean,
        "SQLite only: true says the `storage` file is on a disk that outlives the "
        "process's machine (a persistent volume). Under gunicorn (the Procfile) a SQLite "
        "`storage` without it refuses to start: a platform's disk is ephemeral, and "
        "every document would be lost at the next restart.",
    ),
    Setting(
        "storage_pool_size",
        5,
        integer(1, 1000),
        "Postgres only: connections each server process keeps to the database at most "
        "(one per concurrent load, compaction or group commit). Mind the plan's "
        "connection limit: processes x pool size.",
    ),
    Setting(
        "storage_timeout",
        5.0,
        number(1),
        "Postgres only: seconds a database call waits for a free connection, and a new "
        "connection for the server's answer (`connect_timeout`, unless the URL sets "
        "one); the pool retries a lost database at least this often.",
    ),
    Setting(
        "storage_statement_timeout",
        30.0,
        number(0),
        "Postgres only: `statement_timeout` of every connection, in seconds (0: none): "
        "the server cancels a statement running longer.",
    ),
    Setting(
        "storage_lock_timeout",
        10.0,
        number(0),
        "Postgres only: `lock_timeout` of every connection, in seconds (0: none): the "
        "longest a statement waits for a lock (a compaction's advisory lock included).",
    ),
    Setting(
        "storage_sync",
        "normal",
        choice("normal", "full"),
        "SQLite durability. `normal`: a confirmed update survives a crash or kill -9 of the "
        "server (WAL, synchronous=NORMAL). `full`: it also survives power loss (fsync per "
        "group commit; slower).",
    ),
    Setting(
        "history",
        validate_history("history", None),
        validate_history,
        "Version history (README, History): `every` (600: seconds between automatic "
        "versions while edits go on), `quiet_period` (300: seconds without an edit after "
        "which one is made; one is also made when the last client leaves), `keep_days` "
        "(30), `keep_versions` (100: automatic versions kept per document), "
        "`max_bytes_per_document` (64 MiB of versions per document, oldest removed "
        "first, named ones included; the newest is always kept); null: no limit. "
        "`trash_days` (30): days a deleted document can be undeleted before it is purged.",
    ),
    HOST,  # listen.py: read first by `wsserver serve`
    PORT,
    Setting(
        "auth",
        None,
        mapping,
        "Token checks: `audience`, `scope` and `tenants` (see README, Authentication), and "
        "`close_on_expiry` (default false: an open connection outlives its token; true: "
        'it is closed with 4002 "token expired" once the token\'s exp plus 5 s passes).',
    ),
    Setting(
        "max_message_size",
        16 * MIB,
        integer(1024),
        "Largest WebSocket message accepted, in bytes; a larger one closes with 1009.",
    ),
    Setting(
        "max_pending_bytes",
        64 * MIB,
        integer(64 * 1024),
        "Outgoing bytes a connection may have queued; beyond it the client is too slow "
        "and is closed with 1013.",
    ),
    Setting(
        "ping_interval",
        30.0,
        number(0.05),
        "Seconds between server pings; a socket that has sent nothing since the previous "
        "ping is closed.",
    ),
    Setting(
        "unload_after",
        10.0,
        number(0),
        "Seconds a document with no connections stays loaded before it is flushed and unloaded.",
    ),
    Setting(
        "compact_after_updates",
        500,
        integer(1),
        "Stored updates of one document that trigger compaction into a snapshot.",
    ),
    Setting(
        "compact_after_bytes",
        4 * MIB,
        integer(1),
        "Stored update bytes of one document that trigger compaction.",
    ),
    Setting(
        "shutdown_timeout",
        10.0,
        number(0.1),
        "Seconds the whole shutdown after `shutdown_drain` may take (closing clients, "
        "flushing, closing the store, releasing region claims, last webhooks); what still "
        "runs then is abandoned.",
    ),
    Setting(
        "shutdown_drain",
        0.0,
        number(0),
        "Seconds between SIGTERM and the closing of clients, during which /readyz answers "
        "503 and everything else keeps serving: time for a load balancer to stop "
        "sending new clients here.",
    ),
    Setting(
        "header_timeout",
        10.0,
        number(0.1),
        "Seconds a client has to send a request's line and headers (each request of a "
        "keep-alive connection) before it gets a 408 and is dropped: sockets that send "
        "half a request and stall (slowloris) are not held for ever.",
    ),
    Setting(
        "refusal_delay",
        2.0,
        number(0),
        "Seconds before the close frame of a refused handshake (4001, 4002, 4003, 4007) "
        "is sent, so a provider that reconnects at once after every close (y-websocket "
        "1.x and 2.x) retries once per delay instead of ten times a second; the waiting "
        "socket costs only its file descriptor. 0: answer at once.",
    ),
    Setting(
        "max_delayed_refusals",
        1000,
        integer(0),
        "Refused sockets that may wait for `refusal_delay` at once; further refusals are "
        "answered at once.",
    ),
    Setting(
        "redis",
        None,
        matching(r"rediss?://", "a redis:// or rediss:// URL", nullable=True),
        "Optional `redis://` URL shared by every process and node: cluster-wide limits "
        "and the region registry use it when set.",
    ),
    Setting(
        "process",
        validate_process("process", None),
        validate_process,
        "This process's liveness, shared by every part that tells the others it is alive "
        "(the fan-out's presence, the quotas' lease, the region claims, the admin "
        "console): `heartbeat_seconds` (2: one heartbeat for all of them), `ttl_seconds` "
        "(10: a process silent this long is dead to the others: its clients' awareness "
        "states are removed). The region claims and the quotas' lease keep their own "
        "expiry (`registry`, `rate_limit`), renewed on this heartbeat.",
    ),
    Setting(
        "redis_verify_certificate",
        True,
        boolean,
        "rediss:// URLs (`redis` and `rate_limit.storage`): check the server's TLS "
        "certificate (against the system's CAs, or the URL's `ssl_ca_certs=PATH`). "
        "`false` for providers whose certificate is self-signed (Heroku Redis): the "
        "connection is still encrypted, but the server is not authenticated. The URL's "
        "own `ssl_cert_reqs=` (redis-py's parameter) wins over it.",
    ),
    Setting(
        "plans",
        {},
        validate_plans,
        "Plan name -> limits (`max_connections`, `max_documents`, `max_users_per_doc`, "
        "`max_ops_per_minute`; absent or null: unlimited). An app takes one with "
        "`plan: NAME` (README, Limits).",
    ),
    Setting(
        "rate_limit",
        validate_rate_limit("rate_limit", None),
        validate_rate_limit,
        '`handshakes_per_ip` (a `limits` rate such as "60/minute"; unset: off), '
        "`trusted_proxies` (X-Forwarded-For hops to trust, 0), `storage` (memory:// or "
        "redis://; default: `redis` when set), `lease_seconds` (30: how soon a dead "
        "process's connections stop counting). README, Limits.",
    ),
    Setting("log_level", "info", choice("debug", "info", "warning", "error"), "Logging level."),
    Setting(
        "log_format",
        "text",
        choice("text", "json"),
        "`text`: one line `time LEVEL logger: message`; `json`: one JSON object per line "
        "(ts, level, logger, message; tenant, app, doc, conn, ip, code on connection "
        "events), gunicorn's lines and tracebacks included.",
    ),
    Setting(
        "access_log",
        False,
        boolean,
        "One log line per HTTP request and per WebSocket (when it ends, status 101): "
        "method, path (token redacted), status, duration (seconds), ip; logger "
        "`wsserver.access`. Under gunicorn, `--access-logfile` turns it on too (the "
        "lines then go where gunicorn's access log goes).",
    ),
    Setting(
        "metrics",
        None,
        _bearer_section,
        "`{token: SECRET}`: GET /metrics then requires `Authorization: Bearer SECRET`. "
        "Absent: /metrics is open.",
    ),
    Setting(
        "admin",
        None,
        _admin_section,
        "`{token: SECRET}` and/or `{tokens: [{name, token: SECRET, role}]}` enable the "
        "admin console (/admin) and its API (/admin/api/...), which require "
        "`Authorization: Bearer SECRET`. Role `viewer` (the default) reads everything; "
        "`operator` also disconnects and deletes. `token` alone is an operator named "
        "`admin`. Absent: they answer 404.",
    ),
]
