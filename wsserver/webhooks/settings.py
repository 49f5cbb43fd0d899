"""The `webhooks` list of an app (auth.tenants.T.apps.A.webhooks): shape and validation.

    webhooks:
      - url: "https://api.acme.com/wsserver-hook"   # http:// or https://
        secret: "${ACME_HOOK_SECRET}"              # HMAC-SHA256 key of the signature
        events: [document.changed, document.created, connection.opened, connection.closed]
        debounce_seconds: 2                        # document.changed: at most one per
                                                   # document this often (0.1 to 10)

`events` defaults to the first four; the history's four (version.created,
document.restored, document.deleted, document.undeleted) are sent to the hooks that
list them. Every error names its key and stops start-up.
"""

from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import ConfigError
from ..support.validators import Problems, known_keys, long_secret

DOCUMENT_CHANGED = "document.changed"
DOCUMENT_CREATED = "document.created"
CONNECTION_OPENED = "connection.opened"
CONNECTION_CLOSED = "connection.closed"
# The history's (wsserver/documents/history.py, README "History").
HISTORY_EVENTS = ("version.created", "document.restored", "document.deleted", "document.undeleted")
DEFAULT_EVENTS = (DOCUMENT_CHANGED, DOCUMENT_CREATED, CONNECTION_OPENED, CONNECTION_CLOSED)
EVENTS = (*DEFAULT_EVENTS, *HISTORY_EVENTS)
KEYS = ("url", "secret", "events", "debounce_seconds")
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

    def __repr__(self):  # never the secret
        return f"Hook({self.url})"


def parse_hooks(path, value):
    """An app's `webhooks` value -> [Hook]; ConfigError naming `path[i].key`."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(path, "must be a list of {url, secret, events, debounce_seconds}")
    return [_parse_hook(f"{path}[{i}]", entry) for i, entry in enumerate(value)]


def _parse_hook(path, entry):
    if not isinstance(entry, dict):
        raise ConfigError(path, "must be a mapping")
    known_keys(path, entry, KEYS)
    url = entry.get("url")
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{path}.url", "must be an http:// or https:// URL")
    secret = long_secret(MIN_SECRET_BYTES, "as an HMAC-SHA256 key")(
        f"{path}.secret", entry.get("secret")
    )
    events = entry.get("events", list(DEFAULT_EVENTS))
    if not isinstance(events, list) or not events:
        raise ConfigError(f"{path}.events", f"must be a non-empty list of {', '.join(EVENTS)}")
    for event in events:
        if event not in EVENTS:
            raise ConfigError(
                f"{path}.events", f"unknown event {str(event)[:40]!r} (known: {', '.join(EVENTS)})"
            )
    debounce = entry.get("debounce_seconds", DEFAULT_DEBOUNCE)
    if (
        isinstance(debounce, bool)
        or not isinstance(debounce, (int, float))
        or not MIN_DEBOUNCE <= debounce <= MAX_DEBOUNCE
    ):
        raise ConfigError(
            f"{path}.debounce_seconds", f"must be a number from {MIN_DEBOUNCE} to {MAX_DEBOUNCE:g}"
        )
    return Hook(url, secret.encode("utf-8"), frozenset(events), float(debounce))


def hooks_by_app(authenticator):
    """{(tenant, app): [Hook]} for every app that has webhooks."""
    hooks, problems = {}, Problems()
    for tenant in authenticator.tenants.values():
        for app in tenant.apps.values():
            path = f"auth.tenants.{tenant.name}.apps.{app.name}.webhooks"
            with problems.check():
                parsed = parse_hooks(path, app.settings.get("webhooks"))
                if parsed:
                    hooks[(tenant.name, app.name)] = parsed
    problems.raise_all()
    return hooks
