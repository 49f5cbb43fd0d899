"""Writes without a Yjs library: a document's fields from ProseMirror JSON, Markdown,
text or a JSON object.

    PUT   /v1/documents/NAME/content?field=FIELD&format=prosemirror|markdown|text
          body: the field's new content; only what differs is rewritten
    POST  /v1/documents/NAME/content?field=FIELD&format=...&position=end|start
          body: content added at the field's end (the default) or start
    PATCH /v1/documents/NAME/map/FIELD
          body: a JSON object; each key set to its value, a null deletes the key

`field` defaults to `default` (Tiptap's). Each answers 200 {"stored": bool} once the
change is durable (false: it changed nothing), exactly as POST /v1/documents/NAME/update
does (wsserver/http/documents.py: the same checks, write access, region gate, write
quota, and errors): the change is made on a scratch copy of the document as it is live
here, and the difference is applied to the room as one update from the API, so it is
stored, sent live to every client on every process (a forward update: clients keep
their connection, and their cursors wherever nothing changed) and counted by the
webhooks. The body is read and checked whole before anything is claimed or written: a
body that is not the format (JSON that is not a ProseMirror document, bytes that are
not UTF-8), an unknown format or position, or a field of another kind (ProseMirror
into a text field, a map patch of a fragment) is 400 {"error", "code": 400}, and the
document stays as it was. The formats: wsserver/documents/formats/.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, jsonify, request
from pycrdt import Doc

from ..documents.formats.fields import (
    DEFAULT_FIELD,
    POSITIONS,
    WRITE_FORMATS,
    parse_body,
    parse_json,
    patch_map,
    write_field,
)
from ..errors import BadRequest, ServiceRestart
from ..handshake.handshake import Session
from ..protocol.codec import EMPTY_UPDATE
from .cors import Cors
from .documents import PREFIX, DocumentApi, read_body

if TYPE_CHECKING:
    from ..documents.key import DocKey
    from ..handshake.claims import Principal
    from ..handshake.tenants import App

# A change made on the scratch copy of a document, given the copy and its update.
Change = Callable[[Doc, bytes], object]


def blueprint(api: ContentApi) -> Blueprint:
    """The routes of `api`: PUT/POST a field's content, PATCH a map."""
    bp = Blueprint("content", __name__)
    api.route(bp, f"{PREFIX}/<name>/content", "PUT", api.replace)
    api.route(bp, f"{PREFIX}/<name>/content", "POST", api.append)
    api.route(bp, f"{PREFIX}/<name>/map/<field>", "PATCH", api.patch)
    return bp


class ContentApi(DocumentApi):
    """The write routes' handlers, on the document API's checks and apply."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.cors = Cors(
            self.handshake.authenticator,
            ("PUT", "POST", "PATCH", "OPTIONS"),
            headers=("Authorization", "Content-Type"),
        )

    def replace(self, key: DocKey, principal: Principal, app: App) -> Response:
        return self._write(key, principal, app, None)

    def append(self, key: DocKey, principal: Principal, app: App) -> Response:
        position = request.args.get("position", "end")
        if position not in POSITIONS:
            raise BadRequest(f"position must be one of {', '.join(POSITIONS)}")
        return self._write(key, principal, app, position)

    def patch(self, key: DocKey, principal: Principal, app: App, field: str) -> Response:
        self._check_writer(principal)
        changes = parse_json(read_body(self.max_body))
        if not isinstance(changes, dict):
            raise BadRequest("the body must be a JSON object: {key: value or null}")
        return self._change(
            key, principal, app, lambda doc, update: patch_map(doc, update, field, changes)
        )

    def _write(self, key: DocKey, principal: Principal, app: App, position: str | None) -> Response:
        self._check_writer(principal)
        form = request.args.get("format")
        if form not in WRITE_FORMATS:
            raise BadRequest(f"format must be one of {', '.join(WRITE_FORMATS)}")
        field = request.args.get("field", DEFAULT_FIELD)
        content = parse_body(read_body(self.max_body), form)
        return self._change(
            key,
            principal,
            app,
            lambda doc, update: write_field(doc, update, field, form, content, position),
        )

    def _check_writer(self, principal: Principal) -> None:
        if self.shutting_down():
            raise ServiceRestart()
        principal.check_write()  # 403/4003 for a read-only token (`access: "read"`)

    def _change(self, key: DocKey, principal: Principal, app: App, change: Change) -> Response:
        """Claim the document as a write does, make `change(scratch doc, its update)`
        on a copy of the live document, apply the difference (its author the token's
        `sub`, as a POST .../update's); 200 once durable."""
        session = self.handshake.admit(
            Session(key, principal, app, request.environ), (self.region_gate, self.write_gate)
        )
        try:
            with self.documents.hold(key) as room:
                update = room.current_update()
                scratch: Doc = Doc()
                scratch.apply_update(update)
                before = scratch.get_state()
                change(scratch, update)  # BadRequest: nothing applied
                diff = scratch.get_update(before)
                if diff == EMPTY_UPDATE:
                    return jsonify(stored=False)
                return jsonify(stored=self.apply(key, diff, principal.user))
        finally:
            session.release()
