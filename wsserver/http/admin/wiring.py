"""The admin console built from a process's parts: the inspector (documents), the
cluster (processes, connections, stats, tenants; through a board in Redis when there
is one), the audit trail, and the blueprint over them. `create_app` calls `console`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint

from ...support.redis import blocking_client
from ...support.redis import client as redis_client
from .api import blueprint
from .audit import AuditTrail
from .board import RedisBoard
from .cluster import Cluster
from .inspector import Inspector


def console(
    settings: dict[str, Any] | None,
    redis_url: str | None,
    endpoint: Any,
    documents: Any,
    store: Any,
    report: Callable[[], dict[str, Any]],
    plan_of: Callable[[Any], Any],
    version: str,
    liveness: Any,
    trail: AuditTrail | None = None,
    on_trashed: Callable[[Any], None] | None = None,
) -> Blueprint:
    """`settings`: the `admin` section (None: every route answers 404); `report`: the
    /healthz body; `plan_of(app)`: an app's Limits; `liveness`: the process's id and
    heartbeat (support/liveness.py), which the board and the stats beat on; `trail`:
    the audit trail (shared with the history's admin routes; default one of its own);
    `on_trashed(key)`: told of each document a delete moved to the trash. Whatever it
    starts is stopped at the endpoint's shutdown."""
    board = None
    if settings and redis_url:  # the admin console sees every process
        board = RedisBoard(
            redis_client(redis_url), blocking_client(redis_url, "admin-board", None), liveness
        )
        endpoint.stop_at_shutdown("the admin board", board.stop)
    inspector = Inspector(
        documents, store, stopping=lambda: endpoint.stopping, board=board, on_trashed=on_trashed
    )
    if not settings:
        return blueprint(None, inspector)

    def state() -> dict[str, Any]:
        body = report()
        return {
            "host": body["host"],
            "version": version,
            "status": body["status"],
            "ready": endpoint.ready,
            "store": body["store"],
            "redis": body.get("redis", {}),
            "fanout": body["fanout"].get("state"),
        }

    apps = {
        (tenant.name, app.name): (app.settings.get("plan"), plan_of(app))
        for tenant in endpoint.handshake.authenticator.tenants.values()
        for app in tenant.apps.values()
    }
    cluster = Cluster(inspector, lambda: endpoint.connections, state, lambda: apps, liveness, board)
    endpoint.stop_at_shutdown("the admin stats", cluster.stop)
    return blueprint(settings, inspector, cluster, trail or AuditTrail(store))
