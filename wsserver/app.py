"""The application factory: config -> auth -> store -> rooms -> endpoint -> Flask app.

`create_app(test_config=None)` does no I/O at import time; it opens the store when
called. The returned Flask app is the WSGI callable for gevent-websocket (directly or
under gunicorn's GeventWebSocketWorker): upgraded requests go to the WebSocket endpoint
before Flask's routing (Werkzeug would answer 400 to an Upgrade on a plain route), and
plain HTTP goes to the Flask routes below.
"""

from flask import Flask, jsonify

from .auth import Authenticator
from .config import Config
from .discovery import install as install_discovery
from .errors import WsServerError
from .quota import build_quota
from .region_gate import RegionGate
from .registry import open_registry
from .rooms import Rooms
from .server import WebSocketEndpoint
from .store import open_store

EXTENSION = "wsserver"
QUOTA_EXTENSION = "wsserver.quota"  # the Quota: its gates, backend and refusal counts


class WebSocketDispatch:
    """WSGI middleware: requests gevent-websocket upgraded go to the endpoint."""

    def __init__(self, wsgi_app, endpoint):
        self.wsgi_app = wsgi_app
        self.endpoint = endpoint

    def __call__(self, environ, start_response):
        if environ.get("wsgi.websocket") is not None:
            self.endpoint.handle(environ)
            return []
        return self.wsgi_app(environ, start_response)


def create_app(test_config=None, config_path=None):
    """Build the app from `test_config` (a mapping) or the YAML config file."""
    if test_config is not None:
        config = test_config if isinstance(test_config, Config) else Config.from_mapping(test_config)
    else:
        config = Config.load(config_path)
    authenticator = Authenticator.from_config(config.auth)
    quota = build_quota(config, authenticator)  # plans, quotas, rate limits (README, Limits)
    store = open_store(config.storage, sync=config.storage_sync)
    rooms = Rooms(store, config)
    # 4009: pinned to or live in another region (docs/regions.md); claims the document.
    region_gate = RegionGate(config, open_registry(config, evict=rooms.evict), rooms)
    # Handshake gates (wsserver/handshake.py): every check_request runs first (the 4006
    # per-IP rate), then after the token checks each admit in this order: 4009, then
    # 4004/4005/4008.
    gates = [quota.rate_gate, region_gate, quota.quota_gate]
    endpoint = WebSocketEndpoint(config, authenticator, rooms, store, gates)

    app = Flask(__name__)
    app.config["WSSERVER"] = config
    app.extensions[EXTENSION] = endpoint
    app.extensions[QUOTA_EXTENSION] = quota
    app.wsgi_app = WebSocketDispatch(app.wsgi_app, endpoint)
    # gevent-websocket asks the WSGI application object which subprotocol to select.
    app.app_protocol = endpoint.select_subprotocol
    install_discovery(app, endpoint.handshake, region_gate)  # GET /discovery

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok", rooms=len(rooms), connections=len(endpoint.connections),
                       refused={str(code): n for code, n in quota.refusals.counts().items()})

    @app.get("/<path:name>")
    def document(name):
        response = jsonify(error="this is a WebSocket endpoint: connect with a y-websocket "
                                 "provider", code=426)
        response.status_code = 426
        response.headers["Upgrade"] = "websocket"
        return response

    @app.errorhandler(WsServerError)
    def ws_error(error):
        return jsonify(error.to_json()), error.http_status, error.http_headers()

    @app.errorhandler(404)
    def not_found(_):
        return jsonify(error="not found", code=404), 404

    @app.errorhandler(405)
    def not_allowed(_):
        return jsonify(error="method not allowed", code=405), 405

    return app


def endpoint_of(app):
    return app.extensions[EXTENSION]
