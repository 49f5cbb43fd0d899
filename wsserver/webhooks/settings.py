"""The `webhooks` list of an app (auth.tenants.T.apps.A.webhooks): shape and validation.

    webhooks:
      - url: "https://api.acme.com/wsserver-hook"   # http:// or https://
        secret: "${ACME_HOOK_SECRET}"              # HMAC-SHA256 key of the signature
        events: [document.changed, document.created, connection.opened, connection.closed]
        debounce_seconds: 2                        # document.changed: at most one per
                                                   # document this often (0.1 to 10)
        include_content: markdown                  # document.changed carries the changed
                                                   # fields (json, prosemirror, markdown, text)

`events` defaults to the first four; the history's four (version.created,
document.restored, document.deleted, document.undeleted) are sent to the hooks that
list them. `include_content` defaults to none (webhooks/content.py). Every error names
its key and stops start-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..documents.formats.fields import CONTENT_FORMATS
from ..support.validators import (
    Problems,
    choice,
    list_of,
    long_secret,
    number,
    section,
    url,
)

if TYPE_CHECKING:
    from ..handshake.auth import Authenticator

DOCUMENT_CHANGED = "document.changed"
DOCUMENT_CREATED = "document.created"
CONNECTION_OPENED = "connection.opened"
CONNECTION_CLOSED = "connection.closed"
# The history's (wsserver/documents/history.py, README "History").
HISTORY_EVENTS = ("version.created", "document.restored", "document.deleted", "document.undeleted")
DEFAULT_EVENTS = (DOCUMENT_CHANGED, DOCUMENT_CREATED, CONNECTION_OPENED, CONNECTION_CLOSED)
EVENTS = (*DEFAULT_EVENTS, *HISTORY_EVENTS)
DEFAULT_DEBOUNCE = 2.0
# The promise: while edits go on, a receiver hears of them at least every 10 s.
MAX_DEBOUNCE = 10.0
MIN_DEBOUNCE = 0.1
# The signing key: as long as SHA-256's output, as RFC 2104 and RFC 7518 §3.2 ask.
MIN_SECRET_BYTES = 32


@dataclass(frozen=True, eq=False)  # compared by identity: each entry is its own hook
class Hook:
    url: str
    secret: bytes
    events: frozenset
    debounce_seconds: float = DEFAULT_DEBOUNCE
    include_content: str | None = None  # a format of CONTENT_FORMATS

    def __repr__(self) -> str:  # never the secret
        return f"Hook({self.url})"


_HOOK = section(
    {
        "url": url(("http", "https"), "an http:// or https:// URL"),
        "secret": long_secret(MIN_SECRET_BYTES, "as an HMAC-SHA256 key"),
        "events": list_of(
            choice(*EVENTS),
            f"a non-empty list of {', '.join(EVENTS)}",
            nonempty=True,
            indexed=False,
        ),
        "debounce_seconds": number(MIN_DEBOUNCE, high=MAX_DEBOUNCE),
        "include_content": choice(*CONTENT_FORMATS),
    },
    defaults={"events": list(DEFAULT_EVENTS), "debounce_seconds": DEFAULT_DEBOUNCE},
    required=("url", "secret"),
    nullable=False,
)
_HOOKS = list_of(_HOOK, "a list of {url, secret, events, debounce_seconds, include_content}")


def parse_hooks(path: str, value: Any) -> list[Hook]:
    """An app's `webhooks` value -> [Hook]; ConfigError naming `path[i].key`."""
    return [
        Hook(
            entry["url"],
            entry["secret"].encode("utf-8"),
            frozenset(entry["events"]),
            float(entry["debounce_seconds"]),
            entry.get("include_content"),
        )
        for entry in _HOOKS(path, value) or []
    ]


def hooks_by_app(authenticator: Authenticator) -> dict[tuple[str, str], list[Hook]]:
    """{(tenant, app): [Hook]} for every app that has webhooks."""
    hooks: dict[tuple[str, str], list[Hook]] = {}
    problems = Problems()
    for tenant in authenticator.tenants.values():
        for app in tenant.apps.values():
            path = f"auth.tenants.{tenant.name}.apps.{app.name}.webhooks"
            with problems.check():
                parsed = parse_hooks(path, app.settings.get("webhooks"))
                if parsed:
                    hooks[(tenant.name, app.name)] = parsed
    problems.raise_all()
    return hooks
