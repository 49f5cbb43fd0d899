"""The admin console: a JSON API over the live documents, and one page that uses it.

Enabled by `admin: {token: ...}`; without it every route here answers 404. Every API
route requires `Authorization: Bearer <admin token>` (401 without, 403 wrong; JSON).

    GET    /admin                                   the page (admin.html; asks for the token)
    GET    /admin/api/documents                     {"documents": [summary, ...]}: live ones
    GET    /admin/api/documents/T/A/NAME            summary + "content" (stored ones too)
    GET    /admin/api/documents/T/A/NAME/events     server-sent events: that detail again
                                                    each time it changes
    DELETE /admin/api/documents/T/A/NAME            close its connections (4404), move it
                                                    to the trash (http/versions.py)
    DELETE /admin/api/documents/T/A/NAME/purge      the same, then delete it from storage
                                                    (versions and trash entry too)

A summary is {"tenant", "app", "name", "connections", "users" (distinct `sub`s),
"awareness" ({client id: state}), "bytes" (stored size), "updated" (ISO 8601 of the
last change stored by a process, null when unknown)}. "content" is every root type as
JSON (wsserver/documents/content.py), from a live copy here, else from storage.

With `redis`, every process publishes its live documents on a board in Redis
(`RedisBoard`), so any process answers for all of them: the figures are summed over
processes, and a delete reaches every process's connections.
"""

import json
import logging
import os
import socket
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import gevent
from flask import Blueprint, Response, jsonify, request

from ..documents.content import document_json
from ..documents.key import DocKey
from ..documents.storage import StoreError, fold
from ..errors import DocumentDeleted, NestedTooDeep, NotFound, StorageUnavailable
from ..handshake.handshake import document_name
from ..logs import Throttled, fields
from .bearer import require_bearer

log = logging.getLogger(__name__)
audit = logging.getLogger("wsserver.audit")

PAGE = Path(__file__).with_name("admin.html")
EVENTS_POLL = 0.1  # seconds between change checks of an event stream
EVENTS_KEEPALIVE = 15.0  # seconds between comments on a quiet stream (proxies drop idle ones)
DELETE_WAIT = 5.0  # seconds a delete waits for the closed connections to leave
# Seconds of each BLPOP for the other processes' answers to a delete: within the Redis
# client's read timeout (support/redis.py, SOCKET_TIMEOUT).
REPLY_POLL = 0.25
# Seconds a request waits for storage (a read, a size, a delete): then 503, never a hang
# (a frozen database cannot enforce its own deadlines).
STORE_WAIT = 5.0


def _iso(timestamp):
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


def _merge(summaries):
    """One summary per document from several processes' summaries of it."""
    merged = {}
    for summary in summaries:
        key = (summary["tenant"], summary["app"], summary["name"])
        into = merged.get(key)
        if into is None:
            merged[key] = dict(
                summary, users=list(summary["users"]), awareness=dict(summary["awareness"])
            )
            continue
        into["connections"] += summary["connections"]
        into["users"] = sorted(set(into["users"]) | set(summary["users"]))
        into["awareness"].update(summary["awareness"])
        # ISO 8601 in UTC with the same precision: the later one sorts last.
        into["updated"] = max(filter(None, [into["updated"], summary["updated"]]), default=None)
    return merged


class Inspector:
    """What the admin API reads and does: the live documents (this process's, plus the
    other processes' from `board` when there is one) and the store."""

    def __init__(self, documents, store, stopping, board=None, on_trashed=None):
        self.documents = documents
        self.store = store
        # Told of each document `delete` moved to the trash (documents/history.py: the
        # webhook, the other processes).
        self.on_trashed = on_trashed
        self.stopping = stopping  # callable: True once the process is shutting down
        self.board = board
        self._errors = Throttled(log)
        if board is not None:
            board.start(self.local, self.drop)

    def local_summary(self, key, room=None):
        """This process's figures of one document (no stored size)."""
        connections = list(room.connections) if room is not None else []
        users = {c.principal.user for c in connections if c.principal is not None}
        awareness = room.awareness.parsed() if room is not None else {}
        return {
            "tenant": key.tenant,
            "app": key.app,
            "name": key.name,
            "connections": len(connections),
            "users": sorted(u for u in users if u),
            "awareness": {
                str(client): state for client, state in awareness.items() if state is not None
            },
            "updated": _iso(room.updated if room is not None else None),
        }

    def local(self):
        rooms = [room for room in list(self.documents.rooms.values()) if room.ready.ready()]
        return [self.local_summary(room.key, room) for room in rooms]

    def _elsewhere(self):
        return self.board.others() if self.board is not None else []

    def live(self):
        """Every live document's summary; "bytes" null for those whose size storage
        did not give within STORE_WAIT seconds in all."""
        merged = _merge(self.local() + self._elsewhere())
        deadline = time.monotonic() + STORE_WAIT
        summaries = []
        for key, summary in sorted(merged.items()):
            size = None
            if time.monotonic() < deadline:
                try:
                    size = self._stored("size", self.store.size, DocKey(*key), deadline=deadline)
                except StorageUnavailable:
                    deadline = 0.0  # the next ones would wait in vain too
            summaries.append(dict(summary, bytes=size))
        return summaries

    def _stored(self, what, call, *args, deadline=None):
        """`call(*args, timeout=...)` of the store, within STORE_WAIT seconds (or until
        `deadline`); StorageUnavailable (503) when storage fails or does not answer."""
        left = STORE_WAIT if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            return call(*args, timeout=left)
        except Exception as e:  # a StoreError, or the driver's own (database down)
            self._errors.error("admin: storage %s failed: %s: %s", what, type(e).__name__, e)
            raise StorageUnavailable() from None

    def summary(self, key, room=None):
        mine = self.local_summary(key, room)
        others = [s for s in self._elsewhere() if (s["tenant"], s["app"], s["name"]) == tuple(key)]
        result = _merge([mine] + others)[tuple(key)]
        result["bytes"] = self._stored("size", self.store.size, key)
        return result

    def detail(self, key, trashed_too=False):
        """The summary plus "content"; NotFound when the document is neither live
        here nor stored, or is in the trash (unless `trashed_too`: a purge)."""
        room = self.documents.get(key)
        if room is None or not room.ready.ready():
            room = None
        result = self.summary(key, room)
        if room is not None:
            update = room.doc.get_update()
        else:
            stored = self._stored("load", self.store.load, key)
            if stored.deleted_at is not None and not trashed_too:
                raise NotFound("no such document (it is in the trash)")
            updates = stored.updates
            if not updates and not result["connections"]:  # not live elsewhere either
                raise NotFound("no such document")
            update = fold(updates) if updates else None
        try:
            result["content"] = document_json(update) if update else {}
        except NestedTooDeep as e:  # the summary is still worth showing
            result["content"], result["content_error"] = {}, e.reason
        return result

    def fingerprint(self, key):
        """Changes whenever what `detail` shows may have changed."""
        room = self.documents.get(key)
        mine = (
            None
            if room is None
            else (
                room.updated,
                room.pending,
                len(room.connections),
                json.dumps(room.awareness.parsed(), sort_keys=True, default=str),
            )
        )
        if self.board is None:
            return mine
        return mine, json.dumps(
            [
                s
                for s in self.board.others(cached=True)
                if (s["tenant"], s["app"], s["name"]) == tuple(key)
            ],
            sort_keys=True,
        )

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
                    data = {"tenant": key.tenant, "app": key.app, "name": key.name, "deleted": True}
                except StorageUnavailable as e:  # shown; tried again at the next poll
                    data, last = {"error": e.reason}, object()
                yield f"data: {json.dumps(data)}\n\n"
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > EVENTS_KEEPALIVE:
                yield ": keepalive\n\n"
                quiet_since = time.monotonic()
            gevent.sleep(EVENTS_POLL)

    def drop(self, key):
        """Close this process's connections to `key` (4404: providers do not come back
        with their copy) and drop its room without writing anything more. Returns the
        number of connections closed."""
        deleting = self.documents.deleting
        mine = key not in deleting  # `delete` may be holding it already
        deleting.add(key)  # no join meanwhile: it would keep the room, or reload it
        try:
            room = self.documents.get(key)
            closed = len(room.connections) if room is not None else 0
            deadline = time.monotonic() + DELETE_WAIT
            # Until the room is gone: a join or an API write already under way when
            # the delete began may still enter it, and is closed in turn.
            while True:
                self.documents.close(key, DocumentDeleted())
                if self.documents.evict(key, compact=False) or time.monotonic() >= deadline:
                    break
                gevent.sleep(0.02)
        finally:
            if mine:
                deleting.discard(key)
        return closed

    def delete(self, key, purge=False):
        """Drop the document in every process, then move it to the trash (`purge`:
        delete it from storage, versions and trash entry too). Returns the number of
        connections closed; NotFound when there is no such document (or, unless
        `purge`, it is in the trash already). Here, nobody opens it until it is deleted.

        Bounded: StorageUnavailable (503) when its updates cannot be made durable, or
        storage does not delete it, within STORE_WAIT seconds each; nothing queued is
        lost (it is committed when storage is back; a retry deletes it). A delete still
        running in storage then keeps the document closed here until it ends, so that
        nothing written meanwhile is deleted with it."""
        if self.store.failing is not None:  # before anyone is told it was deleted
            raise StorageUnavailable("storage is not committing: nothing was deleted; retry")
        self.detail(key, trashed_too=purge)  # NotFound (404): no such document
        deleting = self.documents.deleting
        deleting.add(key)
        pending = None
        try:
            try:
                closed = self.drop(key)
            except StoreError as e:  # its last updates are not durable: commits failing
                self._errors.error("admin: delete of %s: %s", "/".join(key), e)
                raise StorageUnavailable(
                    "storage is not committing: the document was not deleted; retry"
                ) from None  # its connections were closed (4404) before the commits failed
            if self.board is not None:
                closed += self.board.drop_everywhere(key)
            try:
                # To the trash, which every load refuses (4404) until an undelete or
                # a purge (wsserver/http/versions.py): no provider can push it back.
                (self.store.delete if purge else self.store.trash)(key, timeout=STORE_WAIT)
            except StoreError as e:
                pending = e.pending
                self._errors.error("admin: delete of %s: %s", "/".join(key), e)
                raise StorageUnavailable(
                    "storage did not answer in time: the document was not deleted; retry"
                    if pending is None
                    else "storage did not answer in time: the delete ends when it does; retry"
                ) from None
        finally:
            if pending is None:
                deleting.discard(key)
            else:
                pending.rawlink(lambda _: deleting.discard(key))
        if self.on_trashed is not None and not purge:
            self.on_trashed(key)
        return closed


class RedisBoard:
    """The live documents of every process, on a board in Redis.

    Each process writes its summaries every PUBLISH_EVERY seconds under its own key,
    which expires when it stops (a killed process disappears within EXPIRE seconds),
    and listens on a channel for deletes. Redis errors are logged (throttled) and the
    API then shows this process's documents only.
    """

    PREFIX = "wsserver:admin:live:"
    CHANNEL = "wsserver:admin:drop"
    PUBLISH_EVERY = 1.0
    EXPIRE = 5

    def __init__(self, client, subscriber):
        self.client = client
        self.subscriber = subscriber  # a client without a read timeout: pub/sub
        self.node = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._errors = Throttled(log)
        self._cache = (0.0, [])
        self._greenlets = []  # its loops, once started

    def start(self, local, drop):
        self._local, self._drop = local, drop
        self._greenlets = [gevent.spawn(self._publish_loop), gevent.spawn(self._listen_loop)]

    def stop(self):
        """End the publishing and listening (the end of a shutdown); this process's
        entry expires from the board within EXPIRE seconds."""
        for greenlet in self._greenlets:
            greenlet.kill(block=False)
        self.subscriber.close()

    def _publish_loop(self):
        while True:
            self._publish()
            gevent.sleep(self.PUBLISH_EVERY)

    def _publish(self):
        try:
            self.client.set(self.PREFIX + self.node, json.dumps(self._local()), ex=self.EXPIRE)
        except Exception as e:  # redis-py raises RedisError and OSError subclasses
            self._errors.error("admin board: publish failed: %s: %s", type(e).__name__, e)

    def _listen_loop(self):
        while True:
            try:
                pubsub = self.subscriber.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.CHANNEL)
                for message in pubsub.listen():
                    request = json.loads(message["data"])
                    closed = self._drop(DocKey(*request["key"]))
                    self._publish()  # the board must not show it live here any more
                    self.client.rpush(request["reply"], closed)
                    self.client.expire(request["reply"], 30)
            except Exception as e:
                self._errors.error("admin board: listening failed: %s: %s", type(e).__name__, e)
                gevent.sleep(1)

    def others(self, cached=False):
        """Every other live process's summaries; `cached`: at most PUBLISH_EVERY old."""
        now = time.monotonic()
        if cached and now - self._cache[0] < self.PUBLISH_EVERY:
            return self._cache[1]
        own = self.PREFIX + self.node
        try:
            keys = [
                k
                for k in self.client.scan_iter(match=self.PREFIX + "*", count=100)
                if k.decode() != own
            ]
            values = self.client.mget(keys) if keys else []
        except Exception as e:
            self._errors.error("admin board: read failed: %s: %s", type(e).__name__, e)
            return []
        summaries = [s for v in values if v is not None for s in json.loads(v)]
        self._cache = (now, summaries)
        return summaries

    def drop_everywhere(self, key):
        """Ask every other process to drop `key`; wait for their answers (at most
        DELETE_WAIT seconds in all); return how many connections they closed."""
        reply = f"wsserver:admin:reply:{uuid.uuid4().hex}"
        try:
            listeners = self.client.publish(
                self.CHANNEL, json.dumps({"key": list(key), "reply": reply})
            )
            closed = 0
            deadline = time.monotonic() + DELETE_WAIT
            # Our own listener answers too (its drop finds nothing left to close).
            for _ in range(listeners):
                answer = None
                # Short BLPOPs on the client with a read timeout: a Redis frozen
                # mid-wait cannot end a long one, and a client without a read
                # timeout would wait for ever.
                while answer is None and (left := deadline - time.monotonic()) > 0:
                    answer = self.client.blpop([reply], timeout=min(REPLY_POLL, left))
                if answer is None:
                    break
                closed += int(answer[1])
            return closed
        except Exception as e:
            self._errors.error("admin board: delete request failed: %s: %s", type(e).__name__, e)
            return 0


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


def blueprint(settings, inspector):
    """`settings`: the `admin` config section, or None (every route answers 404)."""
    bp = Blueprint("admin", __name__)
    # Read once: the page is the same for every request.
    page_html = PAGE.read_bytes() if settings is not None else None

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

    @bp.delete("/admin/api/documents/<tenant>/<app>/<name>/purge")
    def purge(tenant, app, name):
        """Gone for good, from the trash or not (versions too): the name is free again."""
        authorize()
        key = key_of(tenant, app, name)
        try:
            closed = inspector.delete(key, purge=True)
        except StorageUnavailable as e:
            _audit("purge", key, level=logging.WARNING, failed=e.reason)
            raise
        _audit("purge", key, connections_closed=closed)
        return jsonify(purged=True, connections_closed=closed)

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

    return bp
