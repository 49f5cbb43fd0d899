"""The plain-HTTP basics: `/healthz`, the 426 answer on a document path, and the JSON
error handlers (every HTTP error is `{"error", "code"}`, as `/discovery` answers)."""

from flask import Blueprint, current_app, jsonify

from ..errors import WsServerError

EXTENSION = "wsserver.health"  # app.extensions: a callable returning the /healthz body


def blueprint():
    bp = Blueprint("health", __name__)

    @bp.get("/healthz")
    def healthz():
        return jsonify(current_app.extensions[EXTENSION]())

    @bp.get("/<path:name>")
    def document(name):
        response = jsonify(error="this is a WebSocket endpoint: connect with a y-websocket "
                                 "provider", code=426)
        response.status_code = 426
        response.headers["Upgrade"] = "websocket"
        return response

    @bp.app_errorhandler(WsServerError)
    def ws_error(error):
        return jsonify(error.to_json()), error.http_status, error.http_headers()

    @bp.app_errorhandler(404)
    def not_found(_):
        return jsonify(error="not found", code=404), 404

    @bp.app_errorhandler(405)
    def not_allowed(_):
        return jsonify(error="method not allowed", code=405), 405

    return bp
