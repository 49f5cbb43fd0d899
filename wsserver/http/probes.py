"""Health probes for load balancers and orchestrators.

    GET /livez   200 while the process serves HTTP (restart it when this fails)
    GET /readyz  200 {"status": "ready", "checks": {name: "ok"}} when this process
                 accepts connections and what it depends on answers; else 503 with
                 each failing check's reason, e.g. {"store": "commits failing: ..."}.
                 From the moment SIGTERM arrives it answers 503 ("server": "shutting
                 down"), so a load balancer stops sending new clients first.

`/healthz` (wsserver/http/health.py) stays as it was.
"""

import logging

from flask import Blueprint, jsonify

log = logging.getLogger(__name__)


def blueprint(checks):
    """`checks`: {name: callable}; a callable raises (its message is the reason) when
    what it checks is not ready. They run in order, each bounded by its own timeout."""
    bp = Blueprint("probes", __name__)

    @bp.get("/livez")
    def livez():
        return jsonify(status="alive")

    @bp.get("/readyz")
    def readyz():
        results, ready = {}, True
        for name, check in checks.items():
            try:
                check()
                results[name] = "ok"
            except Exception as e:
                ready = False
                results[name] = str(e) or type(e).__name__
        if not ready:
            log.debug("not ready: %s", results)
        response = jsonify(status="ready" if ready else "not ready", checks=results)
        response.status_code = 200 if ready else 503
        response.headers["Cache-Control"] = "no-store"
        return response

    return bp
