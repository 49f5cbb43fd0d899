"""Signed webhooks, per app: what happened to its documents and connections.

    settings.py   an app's `webhooks` list (url, secret, events, debounce_seconds)
    signing.py    the X-Wsserver-Timestamp / X-Wsserver-Signature rule (and `verify`)
    delivery.py   the bounded queue, the senders, retries and drops
    content.py    the changed fields a document.changed carries (`include_content`)

`Webhooks` is what the rest of the server calls; every call returns at once (it at
most queues an event), so webhooks never slow the data plane. Bodies are JSON:

    {"event", "tenant", "app", "document", "time"[, "sub"]}

`time` is when it happened (ISO 8601, UTC); `sub` (connection events, and
document.restored) is the token's user, null for a token without one; `version`
(version.created: the version; document.restored: the id restored).
`document.changed` is sent at most once per `debounce_seconds` per document and hook:
the first change after a quiet spell opens a window, the event goes out when it
closes, and every change inside it is covered by that one event. So while edits go
on, one event per window (at least one every 10 s, the longest window allowed). A hook
with `include_content` gets the changed fields' content in it too (content.py);
`read_document(key)`, the document as one update, is set where the parts are built
(app.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import gevent

from .content import ChangedFields, content_fields
from .delivery import Delivery
from .settings import (
    CONNECTION_CLOSED,
    CONNECTION_OPENED,
    DOCUMENT_CHANGED,
    DOCUMENT_CREATED,
    Hook,
    hooks_by_app,
)

if TYPE_CHECKING:
    from ..documents.key import DocKey
    from ..handshake.auth import Authenticator

log = logging.getLogger(__name__)


def build_webhooks(authenticator: Authenticator) -> Webhooks | None:
    """Webhooks for the configured apps (ConfigError naming the key of a bad entry), or
    None when no app has any: then nothing is spawned and nothing is called."""
    hooks = hooks_by_app(authenticator)
    return Webhooks(hooks, Delivery()) if hooks else None


class Webhooks:
    """The events of every app's hooks: the calls the rest of the server makes."""

    def __init__(self, hooks: dict[tuple[str, str], list[Hook]], delivery: Delivery) -> None:
        self.hooks = hooks  # (tenant, app) -> [Hook]
        self.delivery = delivery
        # (Hook, DocKey) -> the greenlet that sends the document.changed of that window.
        self._windows: dict[tuple[Hook, DocKey], gevent.Greenlet] = {}
        # DocKey -> the document as one update, for hooks with include_content.
        self.read_document: Callable[[DocKey], bytes] | None = None
        self._sent = {hook: ChangedFields() for group in hooks.values() for hook in group}

    def document_stored(self, key: DocKey, created: bool) -> None:
        """An update of the document `key` is durable (`created`: its first)."""
        hooks = self.hooks.get((key.tenant, key.app))
        if not hooks:
            return
        for hook in hooks:
            if created and DOCUMENT_CREATED in hook.events:
                self._send(hook, DOCUMENT_CREATED, key)
            if DOCUMENT_CHANGED in hook.events and (hook, key) not in self._windows:
                self._windows[(hook, key)] = gevent.spawn_later(
                    hook.debounce_seconds, self._close_window, hook, key
                )

    def history_event(self, event: str, key: DocKey, fields: dict[str, Any]) -> None:
        """A history event (wsserver/documents/history.py): version.created (with
        `version`), document.restored (`version`, `sub`), document.deleted,
        document.undeleted; sent at once to the hooks that asked for it."""
        for hook in self.hooks.get((key.tenant, key.app), ()):
            if event in hook.events:
                self._send(hook, event, key, **fields)

    def connection_opened(self, key: DocKey, user: str | None) -> None:
        self._connection(CONNECTION_OPENED, key, user)

    def connection_closed(self, key: DocKey, user: str | None) -> None:
        self._connection(CONNECTION_CLOSED, key, user)

    def counts(self) -> dict[str, int]:
        return self.delivery.counts()

    def close(self, timeout: float) -> None:
        """Shutdown: send the changes of open windows now, then give the queue up to
        `timeout` seconds."""
        # Without content: storage may be closed already, and each read could wait.
        self.read_document = None
        for (hook, key), window in list(self._windows.items()):
            window.kill(block=False)
            self._close_window(hook, key)
        self.delivery.close(timeout)

    def _connection(self, event: str, key: DocKey, user: str | None) -> None:
        for hook in self.hooks.get((key.tenant, key.app), ()):
            if event in hook.events:
                self._send(hook, event, key, sub=user)

    def _close_window(self, hook: Hook, key: DocKey) -> None:
        self._windows.pop((hook, key), None)
        extra: dict[str, Any] = {}
        read = self.read_document
        if hook.include_content and read is None:
            extra = {"content_error": "server shutting down; read the document with GET"}
        elif hook.include_content and read is not None:
            extra = content_fields(read, key, hook.include_content, self._sent[hook])
        self._send(hook, DOCUMENT_CHANGED, key, **extra)

    def _send(self, hook: Hook, event: str, key: DocKey, **extra: Any) -> None:
        body = {
            "event": event,
            "tenant": key.tenant,
            "app": key.app,
            "document": key.name,
            "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            **extra,
        }
        self.delivery.enqueue(hook, event, json.dumps(body, separators=(",", ":")).encode())
