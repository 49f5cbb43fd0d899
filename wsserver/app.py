"""The application factory: every part built and wired here, in dependency order.

    settings -> auth -> limits -> webhooks -> storage -> fan-out -> documents -> regions
             -> handshake gates -> WebSocket endpoint -> Flask app (HTTP blueprints)

`create_app(test_config=None)` does no I/O at import time; it opens the store when
called. The returned Flask app is the WSGI callable for gevent-websocket (directly or
under gunicorn's GeventWebSocketWorker): upgraded requests go to the WebSocket endpoint
before Flask's routing (Werkzeug would answer 400 to an Upgrade on a plain route), and
plain HTTP goes to the blueprints in wsserver/http.

Hooks between parts are passed where the parts are built, named for what they do, so
this function is the one place that shows who calls whom.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response

from . import __version__
from .documents import ydoc
from .documents.history import History
from .documents.manager import DocumentManager
from .documents.storage import Store, open_store
from .documents.storage.history import retention_of
from .endpoint import WebSocketEndpoint
from .errors import CrdtPanic
from .fanout import open_fanout
from .handshake.auth import Authenticator
from .handshake.handshake import select_subprotocol
from .http import admin, discovery, health, metrics, probes, versions
from .http import content as content_api
from .http import documents as document_api
from .limits import build_quota
from .limits.clientip import trust_proxies
from .limits.plans import plan_of
from .loading import load_settings
from .logs import startup_message
from .regions.gate import RegionGate
from .regions.map import RegionMap
from .regions.registry import open_registry
from .scrub import redact_url
from .settings import Config
from .support.liveness import Liveness
from .support.redis import FailFast, blocking_client
from .support.redis import client as redis_client
from .transport import handler
from .webhooks import build_webhooks
from .webhooks.content import document_reader

EXTENSION = "wsserver"
QUOTA_EXTENSION = "wsserver.limits"  # the Quota: its gates, backend and refusal counts

log = logging.getLogger(__name__)


class WebSocketDispatch:
    """WSGI middleware: requests gevent-websocket upgraded go to the endpoint. Plain
    HTTP goes to Flask, and a pycrdt panic out of it becomes the JSON 500 of
    errors.CrdtPanic: Flask's handlers and the routes' `except Exception` never see
    one (a BaseException), and pywsgi would answer a text/plain 500."""

    def __init__(self, wsgi_app: Callable[..., Any], endpoint: WebSocketEndpoint) -> None:
        self.wsgi_app = wsgi_app
        self.endpoint = endpoint

    def __call__(self, environ: dict, start_response: Callable[..., Any]) -> Any:
        if environ.get("wsgi.websocket") is not None:
            self.endpoint.handle(environ)  # which answers a panic with 1011
            return []
        try:
            return self.wsgi_app(environ, start_response)
        except BaseException as e:
            if not ydoc.is_panic(e):
                raise
            method, path = environ.get("REQUEST_METHOD"), environ.get("PATH_INFO")
            log.error("%s %s failed: pycrdt panicked", method, path, exc_info=e)
            error = CrdtPanic()
            answer = Response(json.dumps(error.to_json()), error.http_status)
            answer.content_type = "application/json"
            return answer(environ, start_response)


def create_app(
    test_config: Mapping[str, Any] | Config | None = None,
    config_path: str | None = None,
    listen_host: str | None = None,
) -> Flask:
    """Build the app from `test_config` (a mapping or Config) or the YAML config file
    (see load_settings; `listen_host`: the address the server listens on, when known)."""
    ydoc.no_panic_backtraces()  # before any request can make pycrdt panic
    ydoc.warm_up()
    config, authenticator = load_settings(test_config, config_path, listen_host)
    parts = build_parts(config, authenticator)
    endpoint = parts.endpoint
    app = Flask(__name__)
    app.config["WSSERVER"] = config
    app.extensions[EXTENSION] = endpoint
    app.extensions[QUOTA_EXTENSION] = parts.quota
    app.extensions[health.EXTENSION] = health_report(parts)
    # WSGI middleware the way Flask documents it (mypy does not know that way).
    app.wsgi_app = WebSocketDispatch(app.wsgi_app, endpoint)  # type: ignore[method-assign]
    # Behind `rate_limit.trusted_proxies` proxies: REMOTE_ADDR is the client, for the
    # WebSocket endpoint and the HTTP routes alike (werkzeug's ProxyFix, x_for only).
    app.wsgi_app = trust_proxies(  # type: ignore[method-assign, assignment]
        app.wsgi_app, config.rate_limit["trusted_proxies"]
    )
    # What the request handler takes from the app (transport/handler.py). The access log:
    # one line per request (`access_log`; gunicorn_conf.py puts gunicorn's access logger
    # there instead when --access-logfile is given).
    app.extensions[handler.EXTENSION] = handler.HandlerSettings(
        header_timeout=config.header_timeout,
        on_header_timeout=endpoint.header_timed_out,
        access_log=logging.getLogger("wsserver.access") if config.access_log else None,
        select_subprotocol=select_subprotocol,
    )
    register_routes(app, config, parts)
    return app


@dataclass
class Parts:
    """What a process runs, built once by `build_parts` and wired to each other there."""

    quota: Any  # limits.Quota
    webhooks: Any  # webhooks.Webhooks, or None when no app has webhooks
    store: Any  # documents.storage.Store
    region_map: RegionMap
    fanout: Any  # fanout.Fanout or NoFanout
    documents: DocumentManager
    registry: Any  # regions.registry.Registry
    region_gate: RegionGate
    endpoint: WebSocketEndpoint
    history: History
    liveness: Liveness  # the process's id and heartbeat, for the parts built later


def build_parts(config: Config, authenticator: Authenticator) -> Parts:
    """Every part of a process, with the hooks between them (CONTRIBUTING: hooks are
    passed where the parts are built)."""
    # One Redis outage window for the process: after a Redis failure, every gate skips
    # Redis at once for a while instead of each handshake waiting a timeout per gate.
    redis_fail_fast = FailFast()
    # One id and one heartbeat for every part that tells the other processes this one is
    # alive (support/liveness.py): the quotas' lease, the fan-out, the region claims.
    liveness = Liveness.from_config(config.process).start()
    quota = build_quota(config, authenticator, redis_fail_fast, liveness)  # README, Limits
    webhooks = build_webhooks(authenticator)  # None when no app has webhooks
    store = open_configured_store(config)
    region_map = RegionMap.from_config(config)
    # With `redis`: every process serving a document sees the others' updates and
    # awareness (README, "Running several processes and machines").
    fanout = open_fanout(config, redis_fail_fast, liveness)
    store.retention = retention_of(config.history)
    documents = DocumentManager(store, config, fanout=fanout)
    # Versions, restore, the trash (README, History); with `redis` a trash reaches the
    # other processes' clients at once.
    history = History(
        documents,
        store,
        config.history,
        on_event=webhooks.history_event if webhooks is not None else None,
        redis_client=redis_client(config.redis) if config.redis else None,
        subscriber=blocking_client(config.redis, "history", None) if config.redis else None,
    )
    documents.on_stored = stored_hook(webhooks, history)
    if webhooks is not None:  # include_content: a document.changed reads the document
        webhooks.read_document = document_reader(documents, store)
    registry = open_region_registry(config, documents, region_map, redis_fail_fast, liveness)
    region_gate = RegionGate(region_map, registry)
    # Handshake gates (handshake/handshake.py): every check_request runs first (the 4006
    # per-IP rate), then after the token checks each admit in this order: 4009, then
    # 4004/4005/4008.
    gates = [quota.rate_gate, region_gate, quota.quota_gate]
    endpoint = WebSocketEndpoint(
        config, authenticator, documents, store, gates, quota.refusals, webhooks
    )
    endpoint.stop_at_shutdown("the history", history.start().stop)
    # After every part's goodbye (each cancels its own beat in its close).
    endpoint.stop_at_shutdown("the process heartbeat", liveness.stop)
    return Parts(
        quota,
        webhooks,
        store,
        region_map,
        fanout,
        documents,
        registry,
        region_gate,
        endpoint,
        history,
        liveness,
    )


def stored_hook(webhooks: Any, history: History) -> Callable[[Any, bool], None]:
    """The manager's on_stored: the history marks the document edited, the webhooks
    (when any) send document.changed / document.created."""
    if webhooks is None:
        return history.edited

    def stored(key: Any, created: bool) -> None:
        history.edited(key, created)
        webhooks.document_stored(key, created)

    return stored


def open_configured_store(config: Config) -> Store:
    """The documents' store (`storage`) with its pool and timeouts."""
    return open_store(
        config.storage,
        sync=config.storage_sync,
        pool_size=config.storage_pool_size,
        timeout=config.storage_timeout,
        statement_timeout=config.storage_statement_timeout,
        lock_timeout=config.storage_lock_timeout,
    )


def open_region_registry(
    config: Config,
    documents: DocumentManager,
    region_map: RegionMap,
    fail_fast: FailFast,
    liveness: Liveness,
) -> Any:
    """The region registry (regions.registry.Registry), wired both ways to the documents:
    4009 for a document pinned to or live in another region (docs/regions.md), the
    documents this node serves claimed, a lost claim closing its room."""
    registry = open_registry(
        config,
        evict=documents.evict,
        on_claim_lost=lambda key, region: documents.close(key, region_map.moved(region, key.name)),
        on_claim_reasserted=documents.refresh,
        fail_fast=fail_fast if config.redis else None,
        liveness=liveness,
    )
    # The documents and the registry need each other: no snapshot of a document this
    # node may have lost to another region. Wired here, before any room exists.
    documents.before_compact = registry.may_compact
    return registry


def health_report(parts: Parts) -> Callable[[], dict[str, Any]]:
    """The /healthz body: this process's figures, Redis pinged (when the registry or the
    limits use it), the store's and the fan-out's own state; "degraded" while any of
    them is not well (still serving what it can)."""
    quota, endpoint, fanout, store = parts.quota, parts.endpoint, parts.fanout, parts.store
    remote = {
        name: check
        for name, check in (
            ("registry", parts.registry.health_check()),
            ("limits", quota.health_check()),
        )
        if check
    }

    def report() -> dict[str, Any]:
        body = {
            "status": "ok",
            **probes.identity(),
            "store": store.health() or "ok",
            "rooms": len(parts.documents),
            "connections": len(endpoint.connections),
            "refused": {str(code): n for code, n in quota.refusals.counts().items()},
            "read_only": dict(endpoint.read_only),
            "awareness_ignored": endpoint.awareness_ignored,
            # The other processes serving these documents: never pinged here, the
            # engine's own state (README, "Running several processes and machines").
            "fanout": fanout.health(),
        }
        if parts.webhooks is not None:
            body["webhooks"] = parts.webhooks.counts()
        if remote:
            body["redis"] = health.run_checks(remote)
            if any(state != "ok" for state in body["redis"].values()):
                body["status"] = "degraded"  # still serving what it hosts
        if body["store"] != "ok":
            body["status"] = "degraded"  # still serving what it holds; commits retried
        if fanout.enabled and body["fanout"]["state"] != "up":
            body["status"] = "degraded"  # serving, but other processes' edits arrive late
        return body

    return report


def register_routes(app: Flask, config: Config, parts: Parts) -> None:
    """Every blueprint, in the order Flask matches them (health's catch-all last)."""
    endpoint = parts.endpoint
    app.register_blueprint(discovery.blueprint(endpoint.handshake, parts.region_gate))
    app.register_blueprint(probes.blueprint(readiness_checks(endpoint, parts.store)))
    app.register_blueprint(metrics.blueprint(config.metrics))  # /metrics
    trail = admin.AuditTrail(parts.store)  # the console's and the history's admin actions
    admin_console = admin.console(  # /admin, /admin/api (http/admin/wiring.py)
        config.admin,
        config.redis,
        endpoint,
        parts.documents,
        parts.store,
        app.extensions[health.EXTENSION],
        lambda plan_app: plan_of(plan_app, config.plans),
        __version__,
        parts.liveness,
        trail,
        on_trashed=parts.history.trashed,  # an admin delete: the webhook, every process
    )
    app.register_blueprint(admin_console)
    document_parts = (
        endpoint.handshake,
        parts.region_gate,
        parts.quota.write_gate,
        parts.documents,
        parts.store,
        config.max_message_size,
        lambda: endpoint.shutting_down,
    )
    # /v1/documents/NAME/versions..., DELETE, undelete; the console's history routes
    app.register_blueprint(
        versions.blueprint(
            document_api.DocumentApi(*document_parts),
            parts.history,
            admin.Guard(config.admin, trail),
            trail,
        )
    )
    app.register_blueprint(document_api.blueprint(document_api.DocumentApi(*document_parts)))
    # .../content, .../map/FIELD: writes without Yjs
    app.register_blueprint(content_api.blueprint(content_api.ContentApi(*document_parts)))
    app.register_blueprint(health.blueprint())  # /healthz, 426 on document paths, errors


def readiness_checks(endpoint: WebSocketEndpoint, store: Store) -> dict[str, Callable[[], object]]:
    """/readyz's checks, in order: accepting connections, this process's way to the
    store, its event loop. Nothing every process shares (Redis, the database itself):
    see http/probes.py."""

    def server():
        if not endpoint.ready:
            raise RuntimeError("shutting down")

    hub = probes.HubWatch()
    endpoint.stop_at_shutdown("the hub watch", hub.stop)
    return {"server": server, "store": store.check, "hub": hub.check}


def startup_fields(config: Config, workers: int) -> dict[str, Any]:
    """What the start-up line says the process runs with (passwords masked); the
    listening address is added by whoever bound it (`wsserver serve`, gunicorn)."""
    return {
        "version": __version__,
        "storage": redact_url(config.storage),
        "redis": redact_url(config.redis) if config.redis else None,
        "region": config.region,
        "workers": workers,
    }


def announce(config: Config, address: tuple) -> None:
    """`wsserver serve`'s start-up line, once it listens at `address` (gunicorn's is
    gunicorn_conf.when_ready)."""
    host, port = address[:2]
    fields = dict(startup_fields(config, workers=1), listen=f"ws://{host}:{port}")
    if config.log_format == "json":
        # Platforms merge stdout into the log stream: in JSON mode it is a log record too.
        log.info(startup_message(fields), extra=fields)
    else:
        print(startup_message(fields), flush=True)


def endpoint_of(app: Flask) -> WebSocketEndpoint:
    return app.extensions[EXTENSION]
