"""`Authorization: Bearer` checks for the operator routes (/metrics, /admin)."""

import hmac

from flask import request

from ..errors import MissingBearer, WrongBearer
from ..handshake.handshake import bearer_token


def require_bearer(expected: str) -> None:
    """Raise MissingBearer (401) or WrongBearer (403) unless this request carries the
    token `expected`; compared in constant time."""
    given = bearer_token(request.headers.get("Authorization", ""))
    if given is None:
        raise MissingBearer()
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise WrongBearer()
