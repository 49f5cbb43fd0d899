"""What a verified token says, and the one rule every entry point applies to it.

Two optional claims say what the token may do, decided by the app's backend when it
mints the token (`access_claims`): `documents`, the document-name patterns it may open
(absent: all of its app's), and `access`, "write" (default) or "read". The `Principal`
carries them, and `Principal.check_document` / `check_write` are the one rule every
entry point applies (the WebSocket handshake, /discovery, the HTTP document API).
Every claim the server reads is type-checked first (`check_claim_types`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from ..errors import DocumentNotAllowed, InvalidToken, ReadOnly

# A `documents` pattern: the characters of a document name plus the globs `*` (any run,
# empty included) and `?` (one character). Anything else (`[`, `/`, a space) can never
# match a name: a pattern holding it is the issuer's bug, refused rather than matching
# nothing in silence. Long enough for a name plus a few globs.
DOCUMENT_PATTERN = re.compile(r"[A-Za-z0-9._\-*?]{1,128}")
ACCESS_WRITE = "write"
ACCESS_READ = "read"
LOGGED_PATTERNS = 10


# The claims the server reads, and the JSON type each must have when present (null
# counts as absent). A claim of another type is the issuer's bug: 4002 "malformed
# token", the claim named in the log only (`limits`, `documents`, `access`: reasons
# naming the claim, as for their values). Checked before PyJWT sees them: it accepted
# a numeric string as `exp` (so `exp + LEEWAY` raised later, a 1011) and raised a
# TypeError of its own for some types.
NUMERIC_DATES = ("exp", "nbf", "iat")  # RFC 7519 NumericDate: a JSON number
STRING_CLAIMS = ("sub", "tenantId", "appId")
SCOPE_CLAIMS = ("scope", "scp")  # a space-separated string or a list of strings
MALFORMED = "malformed token"


def _is_numeric_date(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)  # float(10**400) would overflow later
    except OverflowError:
        return False


def check_claim_types(claims: dict[str, Any]) -> None:
    """InvalidToken (4002, "malformed token") unless every claim the server reads has
    its type: `exp`, `nbf`, `iat` numbers, `sub`, `tenantId`, `appId` strings, `scope` and
    `scp` a string or a list of strings; `limits` an object of integers (4002 "invalid
    limits claim", as for its values, which the plans check: wsserver/limits/plans.py).
    `documents` and `access` are checked by `access_claims`, with reasons of their own."""

    def malformed(detail):
        return InvalidToken(MALFORMED, detail=detail)

    for name in NUMERIC_DATES:
        if claims.get(name) is not None and not _is_numeric_date(claims[name]):
            raise malformed(f"{name} is not a number")
    for name in STRING_CLAIMS:
        if claims.get(name) is not None and not isinstance(claims[name], str):
            raise malformed(f"{name} is not a string")
    for name in SCOPE_CLAIMS:
        value = claims.get(name)
        if value is not None and not (
            isinstance(value, str)
            or (isinstance(value, list) and all(isinstance(v, str) for v in value))
        ):
            raise malformed(f"{name} is not a string or a list of strings")
    limits = claims.get("limits")
    if limits is not None and not (
        isinstance(limits, dict)
        and all(isinstance(v, int) and not isinstance(v, bool) for v in limits.values())
    ):
        # The reason the quota gate gives for a bad value (wsserver/limits/gates.py).
        raise InvalidToken("invalid limits claim: must be an object of integers")


def access_claims(claims: dict[str, Any]) -> tuple[tuple[str, ...] | None, bool]:
    """The `documents` and `access` claims of verified `claims`: (patterns, read_only).

    patterns is None when the claim is absent (every document of the app), else a tuple
    (an empty list opens nothing). Raises InvalidToken (4002) for a malformed claim, as
    for `limits`: ignoring it would hand out more than the issuer meant.
    """
    documents = claims.get("documents")
    if documents is not None:
        if not isinstance(documents, list):
            raise InvalidToken("invalid documents claim: must be a list of patterns")
        for pattern in documents:
            if not isinstance(pattern, str) or not DOCUMENT_PATTERN.fullmatch(pattern):
                raise InvalidToken(f"invalid documents claim: bad pattern {str(pattern)[:40]!r}")
        documents = tuple(documents)
    access = claims.get("access")
    if access is not None and access not in (ACCESS_WRITE, ACCESS_READ):
        raise InvalidToken('invalid access claim: must be "write" or "read"')
    return documents, access == ACCESS_READ


@dataclass(frozen=True)
class Principal:
    """Who a verified token speaks for, and what it may do."""

    tenant: str
    app: str
    user: str | None
    claims: dict
    documents: tuple | None = None  # the `documents` patterns; None: every document
    read_only: bool = False  # `access: "read"`

    def may_open(self, name: str) -> bool:
        """True when the `documents` claim lets this token open document `name`
        (case-sensitive globs; no claim: any document of its app)."""
        return self.documents is None or any(fnmatchcase(name, p) for p in self.documents)

    def check_document(self, name: str) -> None:
        """DocumentNotAllowed (4003) unless this token may open `name`."""
        if not self.may_open(name):
            error = DocumentNotAllowed()
            error.detail = self.describe()  # the patterns are not secret, and say why
            raise error

    def check_write(self) -> None:
        """ReadOnly (4003) when this token may only read."""
        if self.read_only:
            error = ReadOnly()
            error.detail = self.describe()
            raise error

    def describe(self) -> str:
        """For log lines: app, user and access, never the token (at most
        LOGGED_PATTERNS patterns, so a long list does not flood the log)."""
        if self.documents is None:
            documents = "*"
        else:
            documents = ",".join(self.documents[:LOGGED_PATTERNS]) or "(none)"
            if len(self.documents) > LOGGED_PATTERNS:
                documents += f",... ({len(self.documents)} patterns)"
        return (
            f"app={self.tenant}/{self.app} user={self.user or '-'} "
            f"access={ACCESS_READ if self.read_only else ACCESS_WRITE} documents={documents}"
        )
