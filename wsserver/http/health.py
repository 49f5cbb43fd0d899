"""The plain-HTTP basics: `/healthz`, the 426 answer on a document path, and the JSON
error handlers (every HTTP error is `{"error", "code"}`, as `/discovery` answers).

/healthz also checks what the process reaches over the network (Redis): a check is a
callable returning None when its dependency answers, else a short text saying why not
(e.g. `support.redis.redis_check`). `run_checks` runs them side by side within
HEALTH_TIMEOUT seconds in all, so a stalled Redis makes /healthz slower by that much,
never hang it.
"""

from __future__ import annotations

from collections.abc import Callable

import gevent
from flask import Blueprint, current_app, jsonify

from ..errors import WsServerError

EXTENSION = "wsserver.health"  # app.extensions: a callable returning the /healthz body
HEALTH_TIMEOUT = 1.0


def run_checks(
    checks: dict[str, Callable[[], str | None]], timeout: float = HEALTH_TIMEOUT
) -> dict[str, str]:
    """{name: "ok" or "unreachable: <why>"} for `checks`, a {name: check} mapping."""
    jobs = {name: gevent.spawn(check) for name, check in checks.items()}
    gevent.joinall(list(jobs.values()), timeout=timeout)
    report = {}
    for name, job in jobs.items():
        if not job.ready():
            job.kill(block=False)
            report[name] = f"unreachable: no answer within {timeout:g} s"
        elif job.exception is not None:
            report[name] = f"unreachable: {type(job.exception).__name__}"
        else:
            report[name] = "ok" if job.value is None else f"unreachable: {job.value}"
    return report


def blueprint() -> Blueprint:
    bp = Blueprint("health", __name__)

    @bp.get("/healthz")
    def healthz():
        return jsonify(current_app.extensions[EXTENSION]())

    @bp.get("/<path:name>")
    def document(name):
        response = jsonify(
            error="this is a WebSocket endpoint: connect with a y-websocket provider", code=426
        )
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
