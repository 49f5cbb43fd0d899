"""One exception tree for everything a client can be refused or closed for.

Each class carries its WebSocket close code and the HTTP status used when the same
failure is answered over plain HTTP (`/discovery`, a GET on a document path), so the
mapping lives here and nowhere else. `reason` is the short text sent in the close
frame; it is always cut to the 123 bytes a close frame can carry.
"""

from __future__ import annotations

import math
from typing import Any

MAX_REASON_BYTES = 123


class WsServerError(Exception):
    """Base class: an error that ends a request or a connection with a known code."""

    close_code = 1011
    http_status = 500
    reason = "internal error"
    # Set by whoever already logged this refusal (wsserver/limits/refusals.py), so the
    # endpoint does not log it a second time.
    logged = False
    # What the log line adds after the reason (who was refused and why); never sent
    # to the client, never a token.
    detail = ""
    # Set once the refusal counters have counted it (wsserver/limits/refusals.py).
    counted = False

    def __init__(self, reason: str | None = None, detail: str | None = None) -> None:
        if reason is not None:
            self.reason = reason
        if detail is not None:
            self.detail = detail
        super().__init__(self.reason)

    @property
    def log_reason(self) -> str:
        """`reason`, with the detail the client was not told, for the server log."""
        return f"{self.reason} ({self.detail})" if self.detail else self.reason

    @property
    def close_reason(self) -> bytes:
        """The reason as UTF-8, never longer than a close frame allows."""
        return truncate_reason(self.reason)

    def to_json(self) -> dict:
        return {"error": self.reason, "code": self.close_code}

    def http_headers(self) -> dict[str, str]:
        """Extra headers of the JSON HTTP answer."""
        return {}


def truncate_reason(reason: str) -> bytes:
    data = reason.encode("utf-8")[:MAX_REASON_BYTES]
    # Cutting inside a multi-byte character would make the frame invalid UTF-8.
    return data.decode("utf-8", "ignore").encode("utf-8")


# --- standard WebSocket codes (RFC 6455) -------------------------------------------


class GoingAway(WsServerError):
    close_code = 1001
    http_status = 503
    reason = "going away"


class ProtocolViolation(WsServerError):
    """Malformed frame or undecodable y-websocket message."""

    close_code = 1002
    http_status = 400
    reason = "protocol error"


class UnsupportedData(WsServerError):
    """A text frame: the y-websocket protocol is binary only."""

    close_code = 1003
    http_status = 400
    reason = "binary messages only"


class InvalidPayload(WsServerError):
    """A well-framed message whose Yjs content cannot be applied."""

    close_code = 1007
    http_status = 400
    reason = "invalid update"


class MessageTooBig(WsServerError):
    close_code = 1009
    http_status = 413
    reason = "message too big"


class InternalError(WsServerError):
    close_code = 1011
    http_status = 500
    reason = "internal error"


class CrdtPanic(InternalError):
    """The CRDT library (Yrs, through pycrdt) panicked. pyo3 raises a Rust panic as
    `pyo3_runtime.PanicException`, a BaseException that no `except Exception` sees (and
    that pycrdt does not export: `documents.ydoc.is_panic` matches it by name). It is
    answered as our own fault, 500/1011: a panic is a bug of the library (or of what we
    passed it), the input that reached it passed our checks, and a client cannot fix
    it by changing its request."""

    reason = "internal error: the CRDT library failed"


class ServiceRestart(WsServerError):
    close_code = 1012
    http_status = 503
    reason = "server restarting"


class TryAgainLater(WsServerError):
    """The client does not drain its outgoing queue fast enough."""

    close_code = 1013
    http_status = 503
    reason = "client too slow"


# --- plain-HTTP answers with no WebSocket counterpart (code = HTTP status) ----------


class HttpOnlyError(WsServerError):
    """An error of a route no WebSocket shares: its JSON `code` is the HTTP status."""

    def to_json(self) -> dict[str, Any]:
        return {"error": self.reason, "code": self.http_status}


class BadRequest(HttpOnlyError):
    http_status = 400
    reason = "bad request"


class NotFound(HttpOnlyError):
    http_status = 404
    reason = "not found"


class StorageUnavailable(HttpOnlyError):
    """Storage failed or did not answer within the route's bound (the admin API): the
    reason says what was done, if anything; retry."""

    http_status = 503
    reason = "storage does not answer; retry"


class NestedTooDeep(HttpOnlyError):
    """A document whose types nest deeper than its JSON form allows (content.py)."""

    http_status = 422
    reason = "document nested too deeply for JSON"


# --- application codes, checked in the handshake -----------------------------------


class NoToken(WsServerError):
    close_code = 4001
    http_status = 401
    reason = "missing token"


class InvalidToken(WsServerError):
    close_code = 4002
    http_status = 401
    reason = "invalid token"


class Forbidden(WsServerError):
    close_code = 4003
    http_status = 403
    reason = "forbidden"


class DocumentNotAllowed(Forbidden):
    """The token's `documents` claim matches no pattern of this document's name."""

    reason = "document not allowed"


class ReadOnly(Forbidden):
    """A read-only token (`access: "read"`) tried to change a document: a connection that
    keeps sending changes, or a write over HTTP. The reason starts with `read-only` and
    says why (documents/readonly.py adds how many changes were dropped)."""

    reason = 'read-only: the token\'s access is "read"'


class InvalidDocumentName(WsServerError):
    close_code = 4007
    http_status = 400
    reason = "invalid document name"


# --- plans, quotas and abuse limits (wsserver/quota) -------------------------------


class ConnectionLimit(WsServerError):
    """The app already has its plan's number of open connections."""

    close_code = 4004
    http_status = 429
    reason = "connection limit reached"


class DocumentLimit(WsServerError):
    """The app already has its plan's number of active documents (this one is not)."""

    close_code = 4005
    http_status = 429
    reason = "document limit reached"


class RateLimited(WsServerError):
    """Too many handshakes (or /discovery requests) from one client IP, or too many
    messages on one connection. `retry_after`: whole seconds until a retry can pass,
    when known (the HTTP answer's Retry-After header)."""

    close_code = 4006
    http_status = 429
    reason = "rate limited"

    def __init__(self, reason: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        if self.retry_after is not None:
            data["retry_after"] = self.retry_after
        return data

    def http_headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        # HTTP wants whole seconds, and 0 would invite an immediate retry.
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


class UserLimit(WsServerError):
    """The document already has its plan's number of distinct users (this one is not)."""

    close_code = 4008
    http_status = 429
    reason = "user limit reached"


# --- regions (wsserver/regions.py, wsserver/registry) -----------------------------


class WrongRegion(WsServerError):
    """The document is pinned to or live in another region. The reason is
    `REDIRECT:<that region's base URL>/<document name>` (config keeps it <= 123 bytes);
    `base` and `name` are those two parts (the HTTP document API builds its URL)."""

    close_code = 4009
    http_status = 409
    reason = "wrong region"

    def __init__(
        self, reason: str | None = None, base: str | None = None, name: str | None = None
    ) -> None:
        super().__init__(reason)
        self.base = base
        self.name = name


class RegistryUnavailable(WsServerError):
    """The region registry cannot be reached, or the document is moving between
    regions: retry shortly (providers reconnect by themselves)."""

    close_code = 1013
    http_status = 503
    reason = "region registry unavailable"


# --- HTTP-only routes (metrics, admin) ------------------------------------------


class MissingBearer(HttpOnlyError):
    http_status = 401
    reason = "missing bearer token (Authorization: Bearer ...)"

    def http_headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class WrongBearer(HttpOnlyError):
    http_status = 403
    reason = "wrong token"


class ActionForbidden(HttpOnlyError):
    """An admin whose role (`viewer`) only reads asked for an action."""

    http_status = 403
    reason = "this admin's role may not do that"
    admin: Any = None  # who asked (http/admin/audit.py's Admin)


class DocumentDeleted(WsServerError):
    """The document was deleted by an operator (admin console). 4400-4499: y-websocket
    providers take it as final and do not reconnect (which would store their copy
    again)."""

    close_code = 4404
    http_status = 410
    reason = "document deleted"


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"config: {key}: {message}")

    @property
    def problems(self) -> list[ConfigError]:
        """Each problem on its own (one here; several in ConfigErrors)."""
        return [self]


class ConfigErrors(ConfigError):
    """Every problem of one config, found in one pass (one boot tells the operator
    everything to fix, not one variable per boot). `key` is the first one's."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = [p for e in errors for p in e.problems]
        first = self.errors[0]
        self.key, self.message = first.key, first.message
        Exception.__init__(self, "\n".join(str(e) for e in self.errors))

    @property
    def problems(self) -> list[ConfigError]:
        return self.errors


class CommandError(Exception):
    """A command line tool cannot do what it was asked (the message says why)."""


class StorageSchemaError(ConfigError):
    """The database was written by a later wsserver: its schema is newer than this code
    knows, and writing to it could corrupt what that version keeps there."""

    def __init__(self, found: int, known: int) -> None:
        self.found, self.known = found, known
        super().__init__(
            "storage",
            f"the database's schema is version {found}, newer than "
            f"this wsserver knows ({known}): upgrade wsserver",
        )
