"""The admin API's routes and the console page (see the package's docstring)."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, jsonify, request, send_from_directory

from ...documents.key import DocKey
from ...errors import BadRequest, NotFound, StorageUnavailable
from ...handshake.handshake import document_name
from . import PAGE
from .audit import AuditTrail, Guard
from .cluster import CLOSE_CODES, MAX_REASON, Cluster
from .inspector import Inspector, encode_cursor, iso

STATIC = Path(__file__).parent / "static"
PAGE_SIZE = 50


def key_of(tenant: str, app: str, name: str) -> DocKey:
    return DocKey(tenant, app, document_name(name))


def decode_cursor(cursor: str | None) -> Any:
    if not cursor:
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, binascii.Error):
        raise BadRequest("cursor: not one this API gave") from None


def blueprint(
    settings: dict[str, Any] | None,
    inspector: Inspector,
    cluster: Cluster | None = None,
    trail: AuditTrail | None = None,
) -> Blueprint:
    """`settings`: the `admin` config section, or None (every route answers 404)."""
    bp = Blueprint("admin", __name__)
    authorize = Guard(settings, trail).authorize
    _page_routes(bp, settings)
    # Without `admin` (no cluster, no trail) every route's authorize() answers 404 first.
    _document_routes(bp, inspector, authorize, trail)
    _cluster_routes(bp, cluster, authorize, trail)
    return bp


def _page_routes(bp: Blueprint, settings: dict[str, Any] | None) -> None:
    # Read once: the page is the same for every request.
    page_html = PAGE.read_bytes() if settings is not None else None

    @bp.get("/admin")
    def page():
        if settings is None:
            raise NotFound()
        return Response(
            page_html,
            content_type="text/html; charset=utf-8",
            headers={
                "Cache-Control": "no-store",
                "Content-Security-Policy": "default-src 'self'; "
                "script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'",
                "X-Frame-Options": "DENY",
            },
        )

    @bp.get("/admin/static/<path:filename>")
    def static(filename):
        """The console's files (uPlot, the icon): no token needed, nothing secret."""
        if settings is None:
            raise NotFound()
        return send_from_directory(STATIC, filename, max_age=3600)

    @bp.get("/favicon.ico")
    def favicon():
        return send_from_directory(STATIC, "favicon.svg", mimetype="image/svg+xml", max_age=86400)


def _document_routes(bp, inspector, authorize, trail):
    @bp.get("/admin/api/documents")
    def documents():
        admin = authorize()
        # The console polls this: audited at debug (not stored), the views at info.
        trail.record(admin, "list", level=logging.DEBUG)
        if request.args.get("stored", "0") not in ("1", "true"):
            return jsonify(documents=inspector.live())
        try:
            limit = int(request.args.get("limit", PAGE_SIZE))
        except ValueError:
            raise BadRequest("limit: a number from 1 to 500") from None
        if not 0 < limit <= 500:
            raise BadRequest("limit: a number from 1 to 500")
        return jsonify(inspector.stored(**_search_args(), limit=limit))

    @bp.get("/admin/api/documents/<tenant>/<app>/<name>")
    def document(tenant, app, name):
        admin = authorize()
        key = key_of(tenant, app, name)
        trail.record(admin, "view", key)
        return jsonify(inspector.detail(key))

    def remove(tenant, app, name, action):
        """A delete (to the trash) or a purge, audited either way: its clients closed."""
        key = key_of(tenant, app, name)
        admin = authorize(action, key)
        try:
            closed = inspector.delete(key, purge=action == "purge")
        except StorageUnavailable as e:
            trail.record(admin, action, key, level=logging.WARNING, failed=e.reason)
            raise
        trail.record(admin, action, key, connections_closed=closed)
        return closed

    @bp.delete("/admin/api/documents/<tenant>/<app>/<name>")
    def delete(tenant, app, name):
        closed = remove(tenant, app, name, "delete")
        return jsonify(deleted=True, connections_closed=closed)

    @bp.delete("/admin/api/documents/<tenant>/<app>/<name>/purge")
    def purge(tenant, app, name):
        """Gone for good, from the trash or not (versions too): the name is free again."""
        closed = remove(tenant, app, name, "purge")
        return jsonify(purged=True, connections_closed=closed)

    @bp.get("/admin/api/documents/<tenant>/<app>/<name>/events")
    def events(tenant, app, name):
        admin = authorize()
        key = key_of(tenant, app, name)
        inspector.detail(key)
        trail.record(admin, "watch", key)
        return Response(
            inspector.events(key),
            content_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )


def _search_args() -> dict[str, Any]:
    """`q` (a name prefix, or tenant/app/name-prefix), `tenant`, `app`, `cursor`."""
    q = request.args.get("q", "").strip()
    tenant, app = request.args.get("tenant") or None, request.args.get("app") or None
    parts = q.split("/", 2) if "/" in q else [q]
    if len(parts) == 3:
        tenant, app, q = parts
    elif len(parts) == 2:
        tenant, q = parts  # tenant/prefix: that tenant's documents, any app
    cursor = decode_cursor(request.args.get("cursor"))
    if cursor is not None and not (
        isinstance(cursor, list) and len(cursor) == 3 and all(isinstance(c, str) for c in cursor)
    ):
        raise BadRequest("cursor: not one this API gave")
    return {"tenant": tenant or None, "app": app or None, "prefix": q, "after": cursor}


def _cluster_routes(bp, cluster, authorize, trail):
    @bp.get("/admin/api/me")
    def me():
        """Who this token is: the console shows an operator's buttons only."""
        admin = authorize()
        return jsonify(name=admin.name, role=admin.role)

    @bp.get("/admin/api/connections")
    def connections():
        authorize()
        filters = {k: request.args.get(k) for k in ("tenant", "app", "doc", "user", "ip")}
        return jsonify(connections=cluster.connections(**filters))

    @bp.delete("/admin/api/connections/<conn_id>")
    def disconnect(conn_id):
        admin = authorize("disconnect", target=conn_id)
        code, reason = _close_args()
        closed = cluster.close(conn_id, code, reason)
        trail.record(admin, "disconnect", target=conn_id, code=code, reason=reason, closed=closed)
        if not closed:
            raise NotFound("no such connection (it may have closed already)")
        return jsonify(closed=True)

    @bp.get("/admin/api/processes")
    def processes():
        authorize()
        return jsonify(processes=cluster.processes())

    @bp.get("/admin/api/stats")
    def stats():
        authorize()
        try:
            minutes = float(request.args.get("minutes", "60"))
        except ValueError:
            raise BadRequest("minutes: a number from 1 to 60") from None
        if not 0 < minutes <= 60:
            raise BadRequest("minutes: a number from 1 to 60")
        return jsonify(step=10, points=cluster.stats(minutes))

    @bp.get("/admin/api/tenants")
    def tenants():
        authorize()
        stored = cluster.inspector.stored_totals()
        return jsonify(tenants=cluster.tenants(stored))

    @bp.get("/admin/api/audit")
    def audit():
        authorize()
        before = decode_cursor(request.args.get("cursor"))
        if before is not None and not isinstance(before, int):
            raise BadRequest("cursor: not one this API gave")
        entries = cluster.inspector.stored_call("audit", trail.entries, before, PAGE_SIZE)
        for entry in entries:
            entry["at"] = iso(entry["at"])
        more = len(entries) == PAGE_SIZE
        return jsonify(entries=entries, cursor=encode_cursor(entries[-1]["id"]) if more else None)


def _close_args() -> tuple[int, str]:
    try:
        code = int(request.args.get("code", "4003"))
    except ValueError:
        code = 0
    if code not in CLOSE_CODES:
        raise BadRequest(f"code: one of {', '.join(map(str, CLOSE_CODES))}")
    reason = request.args.get("reason", "closed by an admin")
    if len(reason.encode()) > MAX_REASON:
        raise BadRequest(f"reason: at most {MAX_REASON} bytes")
    return code, reason
