"""Health probes for load balancers and orchestrators.

    GET /livez   200 while the process serves HTTP (restart it when this fails)
    GET /readyz  200 {"status": "ready", "pid", "host", "checks": {name: "ok"}} unless
                 something is wrong with THIS process; else 503 with each failing
                 check's reason. The checks (app.readiness_checks): "server" (503
                 "shutting down" from the moment SIGTERM arrives, so a load balancer
                 stops sending new clients first), "store" (503 only when this process's
                 own connections fail while the storage answers others: a wedged pool),
                 "hub" (503 for a few seconds after the event loop was blocked).

What every process shares (the database or Redis down) never fails /readyz: a load
balancer would take every process out at once and serve nobody, where each still
serves the documents it holds. /healthz (wsserver/http/health.py) reports those as
"degraded", with the reason.
"""

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

import gevent
from flask import Blueprint, Response, jsonify

log = logging.getLogger(__name__)

HOST = socket.gethostname()


def identity() -> dict:
    """Which process answers: {"pid", "host"} (both probes carry it)."""
    return {"pid": os.getpid(), "host": HOST}


class HubWatch:
    """Notices when the gevent hub (the event loop every connection of the process
    shares) was blocked: a greenlet that wakes every `tick` seconds records each wake-up
    more than `late` seconds overdue. `check` raises for `window` seconds after one."""

    def __init__(self, tick: float = 0.25, late: float = 1.0, window: float = 5.0) -> None:
        self.tick, self.late, self.window = tick, late, window
        # (when, seconds) of the last overdue wake-up
        self.blocked: tuple[float, float] | None = None
        self._greenlet = gevent.spawn(self._watch)

    def _watch(self) -> None:
        while True:
            before = time.monotonic()
            gevent.sleep(self.tick)
            overdue = time.monotonic() - before - self.tick
            if overdue > self.late:
                self.blocked = (time.monotonic(), overdue)
                log.warning("the event loop was blocked for %.1f s", overdue)

    def check(self) -> None:
        if self.blocked is not None and time.monotonic() - self.blocked[0] < self.window:
            raise RuntimeError(f"event loop blocked for {self.blocked[1]:.1f} s")

    def stop(self) -> None:
        self._greenlet.kill(block=False)


def blueprint(checks: Mapping[str, Callable[[], object]]) -> Blueprint:
    """`checks`: {name: callable}; a callable raises (its message is the reason) when
    what it checks is not ready. They run in order; each bounds its own wait."""
    bp = Blueprint("probes", __name__)

    @bp.get("/livez")
    def livez() -> Response:
        return jsonify(status="alive")

    @bp.get("/readyz")
    def readyz() -> Response:
        results: dict[str, str] = {}
        ready = True
        for name, check in checks.items():
            try:
                check()
                results[name] = "ok"
            except Exception as e:
                ready = False
                results[name] = str(e) or type(e).__name__
        if not ready:
            log.debug("not ready: %s", results)
        response = jsonify(status="ready" if ready else "not ready", checks=results, **identity())
        response.status_code = 200 if ready else 503
        response.headers["Cache-Control"] = "no-store"
        return response

    return bp
