"""The checks a WebSocket handshake passes, in order, before a room is joined.

    4007 document name  ->  4001/4002 token  ->  4003 tenant, app, origin

Later checks (region 4009, limits 4004/4005/4008, rate 4006 first of all) slot into
`Handshake.check`; each raises a WsServerError carrying its close code.
"""

import re
from dataclasses import dataclass
from urllib.parse import parse_qs

from .auth import App, Principal
from .errors import InvalidDocumentName
from .store import DocKey

# 1 to 64 characters: ASCII letters, digits, '.', '_', '-'; not starting with '.'.
DOCUMENT_NAME = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9._\-]{0,63}")
SUBPROTOCOL = "access_token"


def document_name(path):
    """The document name of a request path `/NAME`, or InvalidDocumentName (4007)."""
    name = path[1:] if path.startswith("/") else path
    if not DOCUMENT_NAME.fullmatch(name):
        raise InvalidDocumentName()
    return name


def offered_subprotocols(environ):
    header = environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL", "")
    return [p.strip() for p in header.split(",") if p.strip()]


def extract_token(environ):
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
    authorization = environ.get("HTTP_AUTHORIZATION", "")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def scrub_token(environ):
    """Remove ?token= from what access logs print (QUERY_STRING, RAW_URI, REQUEST_URI)."""
    for key in ("QUERY_STRING", "RAW_URI", "REQUEST_URI"):
        value = environ.get(key)
        if value and "token=" in value:
            environ[key] = re.sub(r"(token=)[^&\s]*", r"\1[redacted]", value)


@dataclass(frozen=True)
class Session:
    """What an accepted handshake established."""
    key: DocKey
    principal: Principal
    app: App


class Handshake:
    def __init__(self, authenticator):
        self.authenticator = authenticator

    def check(self, environ):
        """Run every check in order; return the Session or raise its WsServerError."""
        name = document_name(environ.get("PATH_INFO", ""))
        token = extract_token(environ)
        scrub_token(environ)
        principal = self.authenticator.verify(token)
        app = self.authenticator.authorize(principal, environ.get("HTTP_ORIGIN"))
        return Session(DocKey(principal.tenant, principal.app, name), principal, app)
