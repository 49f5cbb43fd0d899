"""The HTTP document API: an app's backend reads and writes documents without a socket.

    GET  /v1/documents/NAME                 200 application/octet-stream: the whole
                                            document as one Yjs update (v1)
    GET  /v1/documents/NAME?format=json     200 {root name: JSON} (documents/content.py)
    GET  /v1/documents/NAME?format=prosemirror|text|markdown&field=FIELD
                                            200 one field: ProseMirror JSON, text/plain,
                                            text/markdown (documents/formats/)
    POST /v1/documents/NAME/update          body: a Yjs update; 200 {"stored": bool}
                                            once it is durable

Both pass the WebSocket handshake's checks (Handshake.authenticate: the per-IP rate,
the name, the token from `Authorization: Bearer` or `?token=`, tenant, app, origin, the
token's `documents` claim), and the document is (tenantId, appId, NAME) as on the
socket. A read-only token (`access: "read"`) may GET, never POST (403/4003). Errors are
`{"error", "code"}` with the close code the socket would get (401/4001, 401/4002,
403/4003, 400/4007, 429/4006 with Retry-After, 413/1009, 400/1007 (an invalid update, or
bytes after one: a body is exactly one update), 429/4005, 503/1013;
400 `{"code": 400}` for a body cut short),
404 `{"code": 404}` for a document that does not exist, and 409 `{"code": 4009, "url"}`
for a document live in (or pinned to) another region, `url` being this API's URL for
it there.

Reads never claim a document: a document live here is read from the live copy (what
clients were echoed, at least), any other from storage. A write goes where a client's
update goes: the region gate claims the document (4009 when it lives elsewhere), the
write quota counts it (4005 over `max_documents`), the document manager loads it once
and keeps it loaded while the write runs, and `Room.apply_update(update, API)` applies,
stores and, once durable, broadcasts it to every connection; the answer waits for that.
CORS: as wsserver/http/cors.py says.
"""

import logging
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, jsonify, request
from gevent.event import Event

from ..documents.content import document_json
from ..documents.formats.fields import DEFAULT_FIELD, READ_FORMATS, read_field
from ..documents.key import DocKey
from ..documents.manager import LOAD_WAIT
from ..documents.room import API, DURABLE_TIMEOUT
from ..documents.storage import StoreError, fold
from ..errors import (
    BadRequest,
    DocumentDeleted,
    InternalError,
    MessageTooBig,
    NotFound,
    ServiceRestart,
    TryAgainLater,
    WrongRegion,
    WsServerError,
)
from ..handshake.handshake import Session
from ..protocol.codec import EMPTY_UPDATE
from ..protocol.update import check_one_update
from .cors import Cors

log = logging.getLogger(__name__)

PREFIX = "/v1/documents"
FORMATS = ("binary", "json", *READ_FORMATS)
_MIMETYPES = {"text": "text/plain", "markdown": "text/markdown"}


def api_url(base: str, name: str) -> str:
    """This API's URL of document `name` on a region whose WebSocket base URL is `base`."""
    scheme, sep, rest = base.partition("://")
    return {"ws": "http", "wss": "https"}.get(scheme, scheme) + sep + rest + f"{PREFIX}/{name}"


def blueprint(api: "DocumentApi") -> Blueprint:
    """The routes of `api`: GET a document, POST an update."""
    bp = Blueprint("documents", __name__)
    api.route(bp, f"{PREFIX}/<name>", "GET", api.read)
    api.route(bp, f"{PREFIX}/<name>/update", "POST", api.write)
    return bp


class DocumentApi:
    """The API's handlers: each takes (key, principal, app) once the handshake's checks
    passed (`route`), and returns a response or raises a WsServerError. `write_gate` is
    the quota of writes (limits.WriteQuotaGate), `max_body` the largest update accepted
    (`max_message_size`), `stopping()` True once SIGTERM came (writes then answer
    503/1012)."""

    def __init__(
        self,
        handshake: Any,
        region_gate: Any,
        write_gate: Any,
        documents: Any,
        store: Any,
        max_body: int,
        stopping: Callable[[], bool],
    ) -> None:
        self.handshake = handshake
        self.region_gate = region_gate
        self.write_gate = write_gate
        self.documents = documents
        self.store = store
        self.max_body = max_body
        self.shutting_down = stopping
        self.cors = Cors(
            handshake.authenticator,
            ("GET", "POST", "DELETE", "OPTIONS"),
            headers=("Authorization", "Content-Type"),
        )

    def route(self, bp: Blueprint, rule: str, method: str, handler: Callable[..., Any]) -> None:
        """Register `handler` at `rule` for `method` and its preflight: the checks run
        first, every error answers JSON with CORS."""

        def view(name, **params):  # params: the rule's other parts (a field's name)
            origin = request.headers.get("Origin")
            if request.method == "OPTIONS":
                return self.cors.preflight(origin)
            try:
                key, principal, app = self.handshake.authenticate(request.environ, "/" + name)
                return self.cors.answer(handler(key, principal, app, **params), origin, app)
            except WsServerError as error:
                return self.refused(error, origin)
            except Exception:  # e.g. storage failing: a JSON 500, never a traceback
                log.exception("%s %s failed", request.method, request.path)
                return self.refused(InternalError(), origin)

        bp.add_url_rule(
            rule,
            handler.__name__,
            view,
            methods=[method, "OPTIONS"],
            provide_automatic_options=False,
        )

    def refused(self, error: WsServerError, origin: str | None) -> Response:
        body = None
        if isinstance(error, WrongRegion) and error.base is not None:
            body = dict(error.to_json(), url=api_url(error.base, error.name or ""))
        return self.cors.error(error, origin, body)

    # --- GET ------------------------------------------------------------------------

    def read(self, key: DocKey, principal: Any, app: Any) -> Response:
        form = requested_format()
        return formatted(self.current_update(key), form)

    def current_update(self, key: DocKey) -> bytes:
        """The document as one update, from the live copy or storage; NotFound when
        there is nothing."""
        region = self.region_gate.discover(key)["region"]
        if region != self.region_gate.region:
            raise self.region_gate.map.redirect(region, key.name)
        room = self.documents.get(key)
        if room is not None:
            room.ready.wait(LOAD_WAIT)  # a load under way: its result
        if room is not None and room.ready.successful():
            update = room.current_update()
        else:  # not loaded here, or its load failed: storage has every durable update
            try:
                stored = self.store.load(key, timeout=LOAD_WAIT)
            except StoreError as e:  # storage down or hung: 503, retry
                log.warning("GET %s: %s", request.path, e)
                raise TryAgainLater("storage does not answer; retry") from None
            if stored.deleted_at is not None:
                raise DocumentDeleted()  # in the trash (wsserver/http/versions.py)
            updates = stored.updates
            update = fold(updates) if updates else EMPTY_UPDATE
        if update == EMPTY_UPDATE:
            raise NotFound("no such document")
        return update

    # --- POST -----------------------------------------------------------------------

    def write(self, key: DocKey, principal: Any, app: Any) -> Response:
        if self.shutting_down():
            raise ServiceRestart()
        principal.check_write()  # 403/4003 for a read-only token (`access: "read"`)
        update = read_body(self.max_body)
        check_one_update(update)  # 400/1007 for junk after it, before anything is claimed
        session = self.handshake.admit(
            Session(key, principal, app, request.environ), (self.region_gate, self.write_gate)
        )
        try:
            return jsonify(stored=self.apply(key, update, principal.user))
        finally:
            session.release()

    def apply(self, key: DocKey, update: bytes, author: str | None = None) -> bool:
        """Apply `update` as the API's and wait until it is durable: True, or False when
        it changed nothing. `author`: the token's `sub`, stored with it."""
        with self.documents.hold(key) as room:
            durable = Event()
            # InvalidPayload (400/1007) leaves the document as it was.
            if not room.apply_update(update, API, on_durable=durable.set, author=author):
                return False
            # Storage failing: 503/1013 after the room's bounded wait. The update stays
            # queued and will be stored; a retry is harmless (Yjs updates are idempotent).
            if not durable.wait(DURABLE_TIMEOUT):
                raise TryAgainLater("update not yet durable; retry")
            return True


def requested_format() -> str:
    """The request's `?format=` (binary by default); BadRequest (400) for one not in
    FORMATS. Checked before anything is read."""
    form = request.args.get("format", "binary")
    if form not in FORMATS:
        raise BadRequest(f"format must be one of {', '.join(FORMATS)}")
    return form


def formatted(update: bytes, form: str) -> Response:
    """The document `update` holds as a GET answers it in format `form` (FORMATS;
    `?field=` names the field of the READ_FORMATS): the document's GET and a
    version's (wsserver/http/versions.py)."""
    if form == "json":
        return jsonify(document_json(update))
    if form in READ_FORMATS:
        value = read_field(update, request.args.get("field", DEFAULT_FIELD), form)
        if form == "prosemirror":
            return jsonify(value)
        return Response(value, mimetype=_MIMETYPES[form])
    return Response(update, mimetype="application/octet-stream")


def read_body(limit: int) -> bytes:
    """The request body, or MessageTooBig (413/1009) past `limit` bytes, known from
    Content-Length before anything is read, else after reading at most limit + 1;
    BadRequest (400) for a body cut short (fewer bytes than announced, broken chunks)."""
    length = request.content_length
    if length is not None and length > limit:
        raise MessageTooBig()
    try:
        body = request.stream.read(limit + 1)
    except OSError:  # the client sent less than it announced, or bad chunks: its fault
        raise BadRequest("incomplete request body") from None
    if len(body) > limit:
        raise MessageTooBig()
    return body
