"""Settings: declared once, with name, default, validator and doc (gunicorn's way).

A config is one YAML file (`--config`, else `$WSSERVER_CONFIG`; only the development
commands `wsserver serve` and `wsserver token` fall back to `config/dev.yaml`, never
the production entry point `create_app()` under gunicorn) or, in tests, a dict given to
`create_app`. Strings may hold `${VAR}` or
`${VAR:-default}`, replaced from the environment so secrets stay out of the file.
Every error names the key it is about (and the variables its value came from) and
stops start-up; every error of a file is reported at once (`ConfigErrors`), so one boot
tells the operator everything to fix. Unknown keys are errors too, so a typo is not
silently ignored.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import yaml

from ..errors import ConfigError
from ..limits.plans import validate_plans, validate_rate_limit
from ..regions.map import check_region_map, validate_pins, validate_regions, validate_registry
from ..support.redis import without_certificate_check
from .validators import (
    Problems,
    Validator,
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

# The development config: the fallback of `wsserver serve` and `wsserver token` only.
DEFAULT_CONFIG_PATH = "config/dev.yaml"
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


# Keys whose values are secrets wherever they appear, and URLs' passwords: what
# `wsserver check-config` masks.
SECRET_KEYS = frozenset({"secret", "token", "password", "private_key"})
_URL_PASSWORD = re.compile(r"^([a-z][a-z0-9+.-]*://[^:/@]*:)([^@]+)(@)", re.I)
MASK = "********"


def mask_secrets(value, key=None):
    """A copy of a config tree with every secret replaced by MASK."""
    if isinstance(value, dict):
        return {k: mask_secrets(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v, key) for v in value]
    if key in SECRET_KEYS and value is not None:
        return MASK
    if isinstance(value, str):
        return _URL_PASSWORD.sub(r"\1" + MASK + r"\3", value)
    return value


class Setting:
    __slots__ = ("name", "default", "validate", "doc")

    def __init__(self, name: str, default: Any, validate: Validator, doc: str) -> None:
        self.name, self.default, self.validate, self.doc = name, default, validate, doc


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
    Setting("host", "127.0.0.1", string, "Address `wsserver serve` listens on."),
    Setting(
        "port",
        1234,
        integer(0, 65535),
        "Port `wsserver serve` listens on; `$PORT` overrides it, `--port` overrides both.",
    ),
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
        "Seconds SIGTERM waits for rooms to flush and clients to close.",
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
        _bearer_section,
        "`{token: SECRET}` enables the admin console (/admin) and its API "
        "(/admin/api/...), which require `Authorization: Bearer SECRET`. Absent: they "
        "answer 404.",
    ),
]
_BY_NAME = {s.name: s for s in SETTINGS}

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(
    value: Any,
    env: Mapping[str, str],
    key: str = "config",
    sources: dict[str, list[tuple[str, bool]]] | None = None,
    problems: Problems | None = None,
) -> Any:
    """Replace ${VAR} / ${VAR:-default} in every string of a parsed YAML tree.

    `sources` (when given) gets, for each key whose string held a ${VAR}, the variables
    and whether each was set, so an error about the key can name them. With `problems`
    every unset variable without a default is recorded there (and replaced by "");
    without it the first one raises."""
    if isinstance(value, dict):
        return {
            k: expand_env(v, env, f"{key}.{k}" if key != "config" else str(k), sources, problems)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [expand_env(v, env, f"{key}[{i}]", sources, problems) for i, v in enumerate(value)]
    if isinstance(value, str):

        def replace(match):
            name, default = match.group(1), match.group(2)
            if sources is not None:
                sources.setdefault(key, []).append((name, name in env))
            if name in env:
                return env[name]
            if default is not None:
                return default
            error = ConfigError(key, f"environment variable {name} is not set")
            if problems is None:
                raise error
            problems.errors.append(error)
            return ""

        return _VAR.sub(replace, value)
    return value


def name_sources(
    errors: list[ConfigError], sources: Mapping[str, list[tuple[str, bool]]]
) -> list[ConfigError]:
    """`errors` with each key's first problem only (an unset variable leaves its key
    empty: "is not set" says it all), each naming the environment variables its value
    came from: `(from $WSSERVER_SECRET)`, `($DEV_SECRET is unset: its default was used)`."""
    seen, named = set(), []
    for error in errors:
        if error.key in seen:
            continue
        seen.add(error.key)
        notes = [
            f"from ${name}" if is_set else f"${name} is unset: its default was used"
            for name, is_set in sources.get(error.key, ())
            if name not in error.message
        ]
        named.append(
            ConfigError(error.key, f"{error.message} ({'; '.join(notes)})") if notes else error
        )
    return named


class Config:
    """Validated settings as attributes (`config.storage`); `raw` keeps the mapping,
    `sources` the environment variables each key's value came from (expand_env)."""

    def __init__(
        self, values: dict[str, Any], sources: dict[str, list[tuple[str, bool]]] | None = None
    ) -> None:
        self.raw = values
        self.sources = sources or {}
        for name, value in values.items():
            setattr(self, name, value)

    @classmethod
    def from_mapping(
        cls,
        mapping: Mapping[str, Any],
        env: Mapping[str, str] | None = None,
        checks: Iterable[Callable[[dict[str, Any]], None]] = (),
    ) -> Config:
        """Validate `mapping` (a parsed YAML tree); every problem at once as
        ConfigErrors, each naming its key and the variables that filled it.

        `checks` run after the settings, each given the settings that are valid (the
        callers' cross-checks: tokens, plans, webhooks, the process's own rules); their
        ConfigErrors are reported with the rest."""
        env = os.environ if env is None else env
        if not isinstance(mapping, dict):
            raise ConfigError("config", "must be a mapping at the top level")
        problems, sources = Problems(), {}
        mapping = expand_env(mapping, env, sources=sources, problems=problems)
        with problems.check():
            known_keys("", mapping, _BY_NAME)
        values, failed = {}, set()
        for setting in SETTINGS:
            if setting.name not in mapping:
                values[setting.name] = setting.default
                continue
            before = len(problems.errors)
            with problems.check():
                values[setting.name] = setting.validate(setting.name, mapping[setting.name])
            if len(problems.errors) > before:
                failed.add(setting.name)
                values[setting.name] = setting.default  # for the cross-checks below
        if "auth" not in failed and values.get("auth") is None:
            problems.errors.append(
                ConfigError("auth", "is required (at least one tenant with a key)")
            )
            failed.add("auth")
        if not failed & {"region", "regions", "pins"}:
            with problems.check():
                check_region_map(values, env)
        if values["redis_verify_certificate"] is False:
            # Applied to the URLs themselves, so every Redis client reads it from them.
            if values["redis"]:
                values["redis"] = without_certificate_check(values["redis"])
            if isinstance(values["rate_limit"], dict) and values["rate_limit"].get("storage"):
                values["rate_limit"]["storage"] = without_certificate_check(
                    values["rate_limit"]["storage"]
                )
        if env.get("PORT"):
            with problems.check():
                values["port"] = integer(0, 65535)("PORT", _env_int(env["PORT"]))
        valid = {name: value for name, value in values.items() if name not in failed}
        for check in checks:
            with problems.check():
                check(valid)
        problems.errors = name_sources(problems.errors, sources)
        problems.raise_all()
        return cls(values, sources)

    @classmethod
    def load(
        cls,
        path: str | None = None,
        env: Mapping[str, str] | None = None,
        fallback: str | None = None,
        checks: Iterable[Callable[[dict[str, Any]], None]] = (),
    ) -> Config:
        """The config file `path`, else `$WSSERVER_CONFIG`, else `fallback`. Without
        a fallback (the production entry point) a missing `$WSSERVER_CONFIG` is a
        ConfigError: production never silently serves the development config."""
        env = os.environ if env is None else env
        path = path or env.get("WSSERVER_CONFIG") or fallback
        if not path:
            raise ConfigError(
                "WSSERVER_CONFIG",
                "is not set: name the config file the "
                "server runs with (config/dev.yaml is for `wsserver serve` "
                "on this machine only)",
            )
        try:
            with open(path, encoding="utf-8") as f:
                mapping = yaml.safe_load(f) or {}
        except OSError as e:
            raise ConfigError("config", f"cannot read {path}: {e.strerror}") from e
        except yaml.YAMLError as e:
            raise ConfigError("config", f"{path} is not valid YAML: {e}") from e
        return cls.from_mapping(mapping, env, checks)


def _env_int(text):
    try:
        return int(text)
    except ValueError:
        raise ConfigError("PORT", f"must be an integer, not {text!r}") from None
