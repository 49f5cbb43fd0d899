"""The content a `document.changed` carries for a hook with `include_content: FORMAT`.

The event names the fields that changed since the last `document.changed` this process
sent for the document to that hook, each with its content in FORMAT
(documents/formats/fields.py `field_contents`): `"content": {field: content}`; a field
emptied or deleted is there as null. What was sent is remembered as a digest per field
for the REMEMBERED documents a hook heard of last (least recently sent forgotten first),
so the first event after a start, or for a document forgotten, carries every field. A
document that cannot be read then (storage down, nested too deeply) or is too large
(MAX_DOCUMENT) gets `"content_error"` instead, and the event still goes out; so do the
events a shutdown sends at once (webhooks/__init__.py `close`: no reads then).
"""

import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ..documents.formats.fields import field_contents
from ..documents.key import DocKey
from ..documents.manager import LOAD_WAIT, DocumentManager
from ..documents.storage import Store, fold
from ..errors import WsServerError
from ..protocol.codec import EMPTY_UPDATE

log = logging.getLogger(__name__)

REMEMBERED = 10_000
# About 2,500 paragraphs as a Yjs update: 0.5 s as Markdown on a loaded 2-core machine.
MAX_DOCUMENT = 512 * 1024


class ChangedFields:
    """The digests of what one hook was last sent, per document (bounded)."""

    def __init__(self, limit: int = REMEMBERED) -> None:
        self.limit = limit
        self.sent: OrderedDict[DocKey, dict[str, str]] = OrderedDict()

    def changed(self, key: DocKey, contents: dict[str, Any]) -> dict[str, Any]:
        """The fields of `contents` that differ from what was last sent for `key`
        (fields gone since then as None), remembered as sent."""
        digests = {name: _digest(value) for name, value in contents.items() if value is not None}
        before = self.sent.pop(key, {})
        changed = {name: contents[name] for name, d in digests.items() if before.get(name) != d}
        changed.update({name: None for name in before.keys() - digests.keys()})
        self.sent[key] = digests
        while len(self.sent) > self.limit:
            self.sent.popitem(last=False)
        return changed


def _digest(value: Any) -> str:
    data = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def document_reader(documents: DocumentManager, store: Store) -> Callable[[DocKey], bytes]:
    """The document `key` as one update: its live copy here (the process that stored
    the change usually still has it), else what storage holds (StoreError when it
    does not answer within LOAD_WAIT)."""

    def read(key: DocKey) -> bytes:
        room = documents.get(key)
        if room is not None and room.ready.successful():
            return room.current_update()
        updates = store.load(key, timeout=LOAD_WAIT).updates
        return fold(updates) if updates else EMPTY_UPDATE

    return read


def content_fields(
    read_document: Callable[[DocKey], bytes], key: DocKey, form: str, fields: ChangedFields
) -> dict[str, Any]:
    """{"content": {changed field: content}}, or {"content_error": reason}: also for a
    document past MAX_DOCUMENT bytes, whose conversion, on the event loop once per
    debounce window while it is edited, would hold every client of the process."""
    try:
        update = read_document(key)
        if len(update) > MAX_DOCUMENT:
            return {"content_error": f"document over {MAX_DOCUMENT:,} bytes; read it with GET"}
        contents = field_contents(update, form)
    except WsServerError as e:
        return {"content_error": e.reason}
    except Exception as e:  # storage failing (StoreError) or down: the event still goes
        log.warning("document.changed of %s: content not read: %s", "/".join(key), e)
        return {"content_error": "document not readable; read it with GET"}
    return {"content": fields.changed(key, contents)}
