"""Version history over HTTP: the document API's history routes (an app's token, as
wsserver/http/documents.py checks it) and the admin console's (the admin token).

    GET    /v1/documents/NAME/versions                 {"versions": [version, ...]}
                                                       newest first
    GET    /v1/documents/NAME/versions/ID              the version as the document GET
                                                       answers it (binary; ?format=json|
                                                       prosemirror|text|markdown&field=F)
    POST   /v1/documents/NAME/versions                 {"label": "..."} (optional; write
                                                       access): 201 {version}
    POST   /v1/documents/NAME/versions/ID/restore      (write access) 200 {"restored",
                                                       "version_before", "changed"}
    DELETE /v1/documents/NAME                          (write access) to the trash:
                                                       {"deleted", "deleted_at",
                                                       "connections_closed"}
    POST   /v1/documents/NAME/undelete                 (write access) {"undeleted": true}

A version is {"id", "created_at" (ISO 8601 UTC), "label", "authors" (token `sub`s
whose updates went in since the previous version), "size" (bytes)}. A document in the
trash answers 410 {"code": 4404} to everything but undelete; 404 for no such document
or version. Writes (create, restore, delete, undelete) pass the region gate and the
write quota as a document write does.

The admin console's, with `Authorization: Bearer <admin token>` (404 without `admin`;
a `viewer` reads, an `operator` also acts: a viewer gets 403 on create, restore and
undelete; every action is in the audit trail, http/admin/audit.py):

    GET    /admin/api/documents/T/A/NAME/versions          {"versions": [...]}
    GET    /admin/api/documents/T/A/NAME/versions/ID       {"version", "content"}: a
                                                           preview (documents/content.py)
    POST   /admin/api/documents/T/A/NAME/versions          {"label"}: 201 {version}
    POST   /admin/api/documents/T/A/NAME/versions/ID/restore   as above
    GET    /admin/api/trash                                {"trash": [{"tenant", "app",
                                                           "name", "deleted_at",
                                                           "purge_at"}]}
    POST   /admin/api/documents/T/A/NAME/undelete          {"undeleted": true}

and `DELETE /admin/api/documents/T/A/NAME/purge` (http/admin/api.py: gone for good,
versions too; the name can be used again).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, jsonify, request

from ..documents.content import document_json
from ..documents.history import History, iso, public
from ..documents.key import DocKey
from ..documents.storage.history import DAY
from ..errors import BadRequest, DocumentDeleted, NotFound, ServiceRestart
from ..handshake.handshake import Session, document_name
from .admin import AuditTrail, Guard
from .documents import PREFIX, DocumentApi, formatted, requested_format

log = logging.getLogger(__name__)

MAX_LABEL = 200


def blueprint(api: DocumentApi, history: History, guard: Guard, trail: AuditTrail) -> Blueprint:
    """`api`: the document API's checks and writes; `guard`: the admin routes' check
    (built on the `admin` setting: without it they answer 404); `trail`: the audit
    trail the console's actions go to."""
    routes = VersionApi(api, history)
    bp = Blueprint("versions", __name__)
    api.route(bp, f"{PREFIX}/<name>/versions", "GET", routes.list_versions)
    api.route(bp, f"{PREFIX}/<name>/versions", "POST", routes.create)
    api.route(bp, f"{PREFIX}/<name>/versions/<int:version_id>", "GET", routes.get)
    api.route(bp, f"{PREFIX}/<name>/versions/<int:version_id>/restore", "POST", routes.restore)
    api.route(bp, f"{PREFIX}/<name>", "DELETE", routes.delete)
    api.route(bp, f"{PREFIX}/<name>/undelete", "POST", routes.undelete)
    admin_routes(bp, routes, guard.authorize, trail)
    admin_trash_route(bp, history, guard.authorize)
    return bp


def _label() -> str | None:
    if not request.content_length:
        return None
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest('the body must be a JSON object ({"label": "..."})')
    label = body.get("label")
    if label is not None and (not isinstance(label, str) or len(label) > MAX_LABEL):
        raise BadRequest(f"label must be a string of at most {MAX_LABEL} characters")
    return label or None


class VersionApi:
    def __init__(self, api: DocumentApi, history: History) -> None:
        self.api = api
        self.history = history
        self.store = history.store

    def _not_trashed(self, key: DocKey) -> None:
        if self.history.bounded(self.store.trashed, [key]):
            raise DocumentDeleted()

    def _admitted(self, key: DocKey, principal: Any, app: Any) -> Session:
        """The checks of a document write (handshake/handshake.py): read-only tokens
        403/4003, the region gate, the write quota."""
        if self.api.shutting_down():
            raise ServiceRestart()
        principal.check_write()
        return self.api.handshake.admit(
            Session(key, principal, app, request.environ),
            (self.api.region_gate, self.api.write_gate),
        )

    # --- the document API's routes --------------------------------------------------

    def list_versions(
        self, key: DocKey, principal: Any = None, app: Any = None, **_: Any
    ) -> Response:
        self._not_trashed(key)
        versions = self.history.bounded(self.store.versions, key)
        return jsonify(versions=[public(v) for v in versions])

    def get(
        self, key: DocKey, principal: Any = None, app: Any = None, version_id: int = 0
    ) -> Response:
        form = requested_format()
        self._not_trashed(key)
        found = self.history.bounded(self.store.version, key, version_id)
        if found is None:
            raise NotFound("no such version")
        return formatted(bytes(found[1]), form)

    def create(self, key: DocKey, principal: Any, app: Any, **_: Any) -> Response:
        label = _label()
        session = self._admitted(key, principal, app)
        try:
            self._not_trashed(key)
            response = jsonify(public(self.history.create(key, label)))
            response.status_code = 201  # the answer goes through CORS as a Response
            return response
        finally:
            session.release()

    def restore(self, key: DocKey, principal: Any, app: Any, version_id: int = 0) -> Response:
        session = self._admitted(key, principal, app)
        try:
            return jsonify(self.restore_as(key, version_id, principal.user))
        finally:
            session.release()

    def restore_as(self, key: DocKey, version_id: int, author: str | None) -> dict[str, Any]:
        """Restore through the room (loaded and held meanwhile); DocumentDeleted
        (4404) for a document in the trash, from its load."""
        with self.api.documents.hold(key) as room:
            # Applied as a document write (DocumentApi.apply): stored, broadcast, durable.
            return self.history.restore(
                room, version_id, author, lambda update: self.api.apply(key, update, author)
            )

    def delete(self, key: DocKey, principal: Any, app: Any, **_: Any) -> Response:
        session = self._admitted(key, principal, app)
        try:
            result = self.history.delete(key)
        finally:
            session.release()
        return jsonify(dict(result, deleted_at=iso(result["deleted_at"])))

    def undelete(self, key: DocKey, principal: Any, app: Any, **_: Any) -> Response:
        session = self._admitted(key, principal, app)
        try:
            self.history.undelete(key)
        finally:
            session.release()
        return jsonify(undeleted=True)


def admin_routes(
    bp: Blueprint, routes: VersionApi, authorize: Callable[..., Any], trail: AuditTrail
) -> None:
    """The console's history routes (module docstring): `authorize(act, key)` is
    admin.Guard's (the admin asking; an operator for an action, else 403, refused in the
    trail)."""
    history, store = routes.history, routes.store
    base = "/admin/api/documents/<tenant>/<app>/<name>"

    def key_of(tenant: str, app: str, name: str) -> DocKey:
        return DocKey(tenant, app, document_name(name))

    @bp.get(f"{base}/versions")
    def admin_versions(tenant: str, app: str, name: str) -> Response:
        authorize()
        versions = history.bounded(store.versions, key_of(tenant, app, name))
        return jsonify(versions=[public(v) for v in versions])

    @bp.get(f"{base}/versions/<int:version_id>")
    def admin_version(tenant: str, app: str, name: str, version_id: int) -> Response:
        admin = authorize()
        key = key_of(tenant, app, name)
        found = history.bounded(store.version, key, version_id)
        if found is None:
            raise NotFound("no such version")
        trail.record(admin, "preview", key, version=version_id)
        return jsonify(version=public(found[0]), content=document_json(bytes(found[1])))

    @bp.post(f"{base}/versions")
    def admin_create(tenant: str, app: str, name: str) -> tuple[Response, int]:
        key = key_of(tenant, app, name)
        admin = authorize("version", key)
        made = history.create(key, _label())
        trail.record(admin, "version", key, version=made["id"])
        return jsonify(public(made)), 201

    @bp.post(f"{base}/versions/<int:version_id>/restore")
    def admin_restore(tenant: str, app: str, name: str, version_id: int) -> Response:
        key = key_of(tenant, app, name)
        admin = authorize("restore", key)
        result = routes.restore_as(key, version_id, None)
        trail.record(admin, "restore", key, version=version_id)
        return jsonify(result)

    @bp.post(f"{base}/undelete")
    def admin_undelete(tenant: str, app: str, name: str) -> Response:
        key = key_of(tenant, app, name)
        admin = authorize("undelete", key)
        history.undelete(key)
        trail.record(admin, "undelete", key)
        return jsonify(undeleted=True)


def admin_trash_route(bp: Blueprint, history: History, authorize: Callable[..., Any]) -> None:
    """GET /admin/api/trash: every trashed document, when it goes for good."""
    store = history.store

    @bp.get("/admin/api/trash")
    def admin_trash() -> Response:
        authorize()
        trash_days = store.retention.trash_days if store.retention is not None else None
        entries = history.bounded(store.trash_list)
        return jsonify(
            trash=[
                {
                    "tenant": key.tenant,
                    "app": key.app,
                    "name": key.name,
                    "deleted_at": iso(at),
                    "purge_at": iso(at + trash_days * DAY) if trash_days is not None else None,
                }
                for key, at in entries
            ]
        )
