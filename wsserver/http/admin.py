"""The admin console: a JSON API over the live documents, and one page that uses it.

Enabled by `admin: {token: ...}`; without it every route here answers 404. Every API
route requires `Authorization: Bearer <admin token>` (401 without, 403 wrong; JSON).

    GET    /admin                                   the page (admin.html; asks for the token)
    GET    /admin/api/documents                     {"documents": [summary, ...]}: live ones
    GET    /admin/api/documents/T/A/NAME            summary + "content" (stored ones too)
    GET    /admin/api/documents/T/A/NAME/events     server-sent events: that detail again
                                                    each time it changes
    DELETE /admin/api/documents/T/A/NAME            close its connections (4404), delete it

A summary is {"tenant", "app", "name", "connections", "users" (distinct `sub`s),
"awareness" ({client id: state}), "bytes" (stored size), "updated" (ISO 8601 of the
last change stored by this process, null when unknown)}. "content" is every root type
as JSON (wsserver/documents/content.py). The live figures are this process's: with
several processes, each answers for its own connections.
"""

import json
import time
from datetime import datetime, timezone
from pathlib import Path

import gevent
from flask import Blueprint, Response, jsonify

from ..documents.content import document_json
from ..documents.key import DocKey
from ..documents.storage import fold
from ..errors import DocumentDeleted, NotFound
from ..handshake.handshake import document_name
from .bearer import require_bearer

PAGE = Path(__file__).with_name("admin.html")
EVENTS_POLL = 0.1  # seconds between change checks of an event stream
EVENTS_KEEPALIVE = 15.0  # seconds between comments on a quiet stream (proxies drop idle ones)
DELETE_WAIT = 5.0  # seconds a delete waits for the closed connections to leave


def _iso(timestamp):
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="milliseconds")


class Inspector:
    """What the admin API reads and does, on this process's documents and the store."""

    def __init__(self, documents, store, stopping):
        self.documents = documents
        self.store = store
        self.stopping = stopping  # callable: True once the process is shutting down

    def summary(self, key, room=None):
        connections = list(room.connections) if room is not None else []
        users = {c.principal.user for c in connections if c.principal is not None}
        awareness = room.awareness.states if room is not None else {}
        return {
            "tenant": key.tenant, "app": key.app, "name": key.name,
            "connections": len(connections),
            "users": sorted(u for u in users if u),
            "awareness": {str(client): state for client, state in awareness.items()
                          if state is not None},
            "bytes": self.store.size(key),
            "updated": _iso(room.updated if room is not None else None),
        }

    def live(self):
        rooms = [room for room in list(self.documents.rooms.values()) if room.ready.ready()]
        return [self.summary(room.key, room) for room in rooms]

    def detail(self, key):
        """The summary plus "content"; NotFound when the document is neither live
        here nor stored."""
        room = self.documents.get(key)
        if room is not None and room.ready.ready():
            update = room.doc.get_update()
        else:
            room = None
            updates = self.store.load(key).updates
            if not updates:
                raise NotFound("no such document")
            update = fold(updates)
        result = self.summary(key, room)
        result["content"] = document_json(update)
        return result

    def fingerprint(self, key):
        """Changes whenever what `detail` shows may have changed."""
        room = self.documents.get(key)
        if room is None:
            return None
        return (room.updated, room.pending, len(room.connections),
                json.dumps(room.awareness.states, sort_keys=True, default=str))

    def events(self, key):
        """Server-sent events: `detail(key)` now and after each change, until the
        client goes away or the process shuts down."""
        last, quiet_since = object(), time.monotonic()
        while not self.stopping():
            current = self.fingerprint(key)
            if current != last:
                last = current
                try:
                    data = self.detail(key)
                except NotFound:
                    data = {"tenant": key.tenant, "app": key.app, "name": key.name,
                            "deleted": True}
                yield f"data: {json.dumps(data)}\n\n"
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > EVENTS_KEEPALIVE:
                yield ": keepalive\n\n"
                quiet_since = time.monotonic()
            gevent.sleep(EVENTS_POLL)

    def delete(self, key):
        """Close the document's connections here (4404: providers do not come back with
        their copy), drop the room without writing anything more, delete it from
        storage. Returns the number of connections closed."""
        room = self.documents.get(key)
        closed = len(room.connections) if room is not None else 0
        self.documents.close(key, DocumentDeleted())
        deadline = time.monotonic() + DELETE_WAIT
        while room is not None and room.connections and time.monotonic() < deadline:
            gevent.sleep(0.02)
        self.documents.evict(key, compact=False)
        self.store.delete(key)
        return closed


def blueprint(settings, inspector):
    """`settings`: the `admin` config section, or None (every route answers 404)."""
    bp = Blueprint("admin", __name__)

    def authorize():
        if settings is None:
            raise NotFound()
        require_bearer(settings["token"])

    def key_of(tenant, app, name):
        return DocKey(tenant, app, document_name(name))

    @bp.get("/admin")
    def page():
        if settings is None:
            raise NotFound()
        return Response(PAGE.read_bytes(), content_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-store",
                                 "Content-Security-Policy": "default-src 'self'; "
                                 "script-src 'unsafe-inline'; style-src 'unsafe-inline'",
                                 "X-Frame-Options": "DENY"})

    @bp.get("/admin/api/documents")
    def documents():
        authorize()
        return jsonify(documents=inspector.live())

    @bp.get("/admin/api/documents/<tenant>/<app>/<name>")
    def document(tenant, app, name):
        authorize()
        return jsonify(inspector.detail(key_of(tenant, app, name)))

    @bp.delete("/admin/api/documents/<tenant>/<app>/<name>")
    def delete(tenant, app, name):
        authorize()
        key = key_of(tenant, app, name)
        inspector.detail(key)  # NotFound (404) for a document that does not exist
        return jsonify(deleted=True, connections_closed=inspector.delete(key))

    @bp.get("/admin/api/documents/<tenant>/<app>/<name>/events")
    def events(tenant, app, name):
        authorize()
        key = key_of(tenant, app, name)
        inspector.detail(key)
        return Response(inspector.events(key), content_type="text/event-stream",
                        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    return bp
