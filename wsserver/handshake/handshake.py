"""The checks a WebSocket handshake passes, in order, before a room is joined.

    gates' check_request (4006 rate limit: before any token is parsed)
    4007 document name  ->  4001/4002 token  ->  4003 tenant, app, origin
    ->  4003 document not allowed (the token's `documents` claim)
    gates' admit, in order (4009 region, then 4004/4005/4008 quotas)

Each check raises a WsServerError carrying its close code. A gate's `admit` may return
a release callable (a quota share, a claim); the Session runs them when the connection
ends, and a refusal by a later gate releases what earlier gates took, so a refused
handshake leaves no trace. Every refusal is counted by its code (`refusals.count`, what
/healthz shows as `refused`), whichever check made it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol
from urllib.parse import parse_qs

from ..documents.key import DocKey
from ..errors import InvalidDocumentName, WsServerError
from ..scrub import redact
from .auth import Authenticator
from .claims import Principal
from .tenants import App

if TYPE_CHECKING:
    from ..limits.refusals import Refusals

log = logging.getLogger(__name__)

# The document name rule, here and nowhere else: 1 to MAX_NAME_LENGTH characters, ASCII
# letters, digits, '.', '_', '-', not starting with '.' (the hosted product this server
# follows documents up to 255 characters; two UUIDs joined are about 80).
MAX_NAME_LENGTH = 255
DOCUMENT_NAME = re.compile(rf"[A-Za-z0-9_\-][A-Za-z0-9._\-]{{0,{MAX_NAME_LENGTH - 1}}}")
SUBPROTOCOL = "access_token"
# Where the rate gate leaves the client IP it resolved (behind trusted proxies, the
# forwarded one): every later log line and limit uses it.
CLIENT_IP = "wsserver.client_ip"


def peer(environ: dict) -> str:
    """The client's IP as the limits see it, else the socket peer."""
    return environ.get(CLIENT_IP) or environ.get("REMOTE_ADDR", "-")


def document_name(path: str) -> str:
    """The document name of a request path `/NAME`, or InvalidDocumentName (4007)."""
    name = path[1:] if path.startswith("/") else path
    if not DOCUMENT_NAME.fullmatch(name):
        raise InvalidDocumentName()
    return name


def offered_subprotocols(environ: dict) -> list[str]:
    header = environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL", "")
    return [p.strip() for p in header.split(",") if p.strip()]


def select_subprotocol(environ: dict) -> str | None:
    """The subprotocol the 101 answers (transport/handler.py): `access_token` when the
    client offered exactly that value (gevent-websocket's own hook matched it as a
    substring of the raw header: `not_access_token_v2` "offered" it)."""
    return SUBPROTOCOL if SUBPROTOCOL in offered_subprotocols(environ) else None


def extract_token(environ: dict) -> str | None:
    """The token from, in order: subprotocols ['access_token', JWT], ?token=, or
    `Authorization: Bearer`. None when there is none."""
    offered = offered_subprotocols(environ)
    if SUBPROTOCOL in offered:
        i = offered.index(SUBPROTOCOL)
        if i + 1 < len(offered):
            return offered[i + 1]
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if query.get("token"):
        return query["token"][0]
    return bearer_token(environ.get("HTTP_AUTHORIZATION", ""))


def bearer_token(authorization: str) -> str | None:
    """The token of an `Authorization: Bearer X` header value, or None."""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def scrub_token(environ: dict) -> None:
    """Redact tokens in what access logs print (QUERY_STRING, RAW_URI, REQUEST_URI),
    with the one scrubber every log line goes through (wsserver/scrub.py)."""
    for key in ("QUERY_STRING", "RAW_URI", "REQUEST_URI"):
        value = environ.get(key)
        if value:
            environ[key] = redact(value)


def forget_headers(environ: dict) -> None:
    """Drop the request headers (HTTP_*) from the environ of an admitted connection,
    which lives as long as it does: nothing reads them after the handshake, and they
    are ~1 KB of an idle connection's memory, its token among them."""
    for key in [key for key in environ if key.startswith("HTTP_")]:
        del environ[key]


class MessageBudget(Protocol):
    """A connection's message rate limit (limits/ops.py): `spend()` once per received
    message, raising to close it."""

    def spend(self) -> None: ...


@dataclass
class Session:
    """What an accepted handshake established, and what to give back when it ends."""

    key: DocKey
    principal: Principal
    app: App
    environ: dict = field(repr=False, default_factory=dict)
    releases: list = field(repr=False, default_factory=list)
    # True when a later gate refused the handshake: the releases then undo an admission
    # that never served anyone (a region claim is let go at once, not after a grace).
    refused: bool = False
    # Set by a gate when the connection has a message rate limit: an object whose
    # `spend()` the endpoint calls once per received message (raises to close).
    message_budget: MessageBudget | None = field(repr=False, default=None)

    def release(self) -> None:
        """Run every release callable once, newest first; each failure is logged."""
        while self.releases:
            release = self.releases.pop()
            try:
                release()
            except Exception:
                log.exception("release of %s failed", "/".join(self.key))


class Gate:
    """One admission check of the handshake; subclasses override what they need."""

    def check_request(self, environ: dict) -> None:
        """Runs first, before the token is parsed: must be cheap."""

    def admit(self, session: Session) -> Callable[[], object] | None:
        """Runs after the token checks; may return a callable that undoes the admission."""
        return None

    def shutdown(self, flushed: bool) -> None:
        """Runs once at shutdown, after the rooms were flushed (`flushed`: completely,
        every update durable), e.g. to let claims go."""


class _NoCounts:
    def count(self, error):
        pass


class Handshake:
    def __init__(
        self,
        authenticator: Authenticator,
        gates: Iterable[Gate] = (),
        refusals: Refusals | None = None,
    ) -> None:
        self.authenticator = authenticator
        self.gates = list(gates)
        # Counts refusals by close code (wsserver/limits/refusals.py).
        self.refusals = refusals or _NoCounts()

    def authenticate(self, environ: dict, path: str) -> tuple[DocKey, Principal, App]:
        """The checks before the gates' admit: gates' check_request, name (4007), token
        (4001/4002), tenant/app/origin (4003), the token's `documents` claim (4003).
        Returns (DocKey, Principal, App).

        `path` is `/NAME`. /discovery runs exactly these, so it answers (and counts)
        what the WebSocket handshake would.
        """
        try:
            for gate in self.gates:
                gate.check_request(environ)
            name = document_name(path)
            token = extract_token(environ)
            scrub_token(environ)
            principal = self.authenticator.verify(token)
            app = self.authenticator.authorize(principal, environ.get("HTTP_ORIGIN"))
            principal.check_document(name)
        except WsServerError as error:
            self.refusals.count(error)
            raise
        return DocKey(principal.tenant, principal.app, name), principal, app

    def check(self, environ: dict) -> Session:
        """Run every check in order; return the Session or raise its WsServerError."""
        key, principal, app = self.authenticate(environ, environ.get("PATH_INFO", ""))
        return self.admit(Session(key, principal, app, environ), self.gates)

    def admit(self, session: Session, gates: Iterable[Gate]) -> Session:
        """Run `gates`' admit in order on `session` and return it; a refusal releases
        what the earlier gates took, and is counted (the HTTP document API passes its
        own gates)."""
        try:
            for gate in gates:
                release = gate.admit(session)
                if release is not None:
                    session.releases.append(release)
        except BaseException as error:
            session.refused = True
            session.release()
            if isinstance(error, WsServerError):
                self.refusals.count(error)
            raise
        return session
