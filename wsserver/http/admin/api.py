"""The admin API's routes and the console page (see the package's docstring)."""

import logging

from flask import Blueprint, Response, jsonify, request

from ...documents.key import DocKey
from ...errors import NotFound, StorageUnavailable
from ...handshake.handshake import document_name
from ...logs import fields
from ..bearer import require_bearer
from . import PAGE

audit = logging.getLogger("wsserver.audit")


def _audit(action, key=None, level=logging.INFO, **extra):
    """One line per admin action: what, which document, from where (logger
    `wsserver.audit`; the fields action, tenant, app, doc, ip in JSON)."""
    ip = request.remote_addr or "-"
    what = f"{key.tenant}/{key.app}/{key.name}" if key is not None else "the live documents"
    details = "".join(f" {name}={value}" for name, value in extra.items())
    audit.log(
        level,
        "admin %s %s from %s%s",
        action,
        what,
        ip,
        details,
        extra={"action": action, **fields(key=key, ip=ip), **extra},
    )


def key_of(tenant, app, name):
    return DocKey(tenant, app, document_name(name))


def blueprint(settings, inspector):
    """`settings`: the `admin` config section, or None (every route answers 404)."""
    bp = Blueprint("admin", __name__)

    def authorize():
        if settings is None:
            raise NotFound()
        require_bearer(settings["token"])

    _page_route(bp, settings)
    _document_routes(bp, inspector, authorize)
    return bp


def _page_route(bp, settings):
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
                "script-src 'unsafe-inline'; style-src 'unsafe-inline'",
                "X-Frame-Options": "DENY",
            },
        )


def _document_routes(bp, inspector, authorize):
    @bp.get("/admin/api/documents")
    def documents():
        authorize()
        # The console polls this every 2 s: audited at debug, the views below at info.
        _audit("list", level=logging.DEBUG)
        return jsonify(documents=inspector.live())

    @bp.get("/admin/api/documents/<tenant>/<app>/<name>")
    def document(tenant, app, name):
        authorize()
        key = key_of(tenant, app, name)
        _audit("view", key)
        return jsonify(inspector.detail(key))

    @bp.delete("/admin/api/documents/<tenant>/<app>/<name>")
    def delete(tenant, app, name):
        authorize()
        key = key_of(tenant, app, name)
        try:
            closed = inspector.delete(key)
        except StorageUnavailable as e:
            _audit("delete", key, level=logging.WARNING, failed=e.reason)
            raise
        _audit("delete", key, connections_closed=closed)
        return jsonify(deleted=True, connections_closed=closed)

    @bp.get("/admin/api/documents/<tenant>/<app>/<name>/events")
    def events(tenant, app, name):
        authorize()
        key = key_of(tenant, app, name)
        inspector.detail(key)
        _audit("watch", key)
        return Response(
            inspector.events(key),
            content_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
