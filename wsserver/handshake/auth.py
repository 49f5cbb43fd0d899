"""Tokens: JWT verification against the tenants' keys, and development tokens.

A token names its tenant (`tenantId`) and app (`appId`); the key is chosen by the
token's `kid` among that tenant's keys (tenants.py), and each key is pinned to one
algorithm, so neither `none` nor an HMAC-with-a-public-key confusion can pass. PyJWT
does the cryptography and the registered-claim checks; claims.py the types of the
claims and what a verified token may do (its `Principal`).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections import OrderedDict
from typing import Any

import jwt
from jwt.types import FullOptions

from ..errors import ConfigError, Forbidden, InvalidToken, NoToken
from ..support.validators import Problems, boolean, section, string, unchecked
from .claims import MALFORMED, Principal, access_claims, check_claim_types
from .tenants import HMAC_ALGORITHMS, App, Tenant, parse_tenants

DEFAULT_AUDIENCE = "WireSocket.API"
DEFAULT_SCOPE = "WireSocket.API"
# Clock skew tolerated on exp/nbf/iat, in seconds.
LEEWAY = 5
# The one reason a client gets for a token whose signature cannot be verified, whatever
# the cause (unknown tenant, unknown kid, algorithm not that key's, wrong signature):
# distinct answers would let anyone enumerate tenants and kids with unsigned tokens.
# The cause is the error's `detail`, for the server log only.
UNVERIFIABLE = "bad signature"
# Tokens verified lately, by their exact text (the signature included), with their
# Principal: a provider reconnects with the token it had, and a restart closing every
# client at once made each verify its token again. A hit only checks `exp` again (the
# keys, audience and scope do not change while the process runs; a verified token's
# nbf and iat stay past).
VERIFIED_TOKENS = 4096
# The `auth` setting; its tenants are parsed by tenants.py, every one checked.
_AUTH = section(
    {"audience": string, "scope": string, "close_on_expiry": boolean, "tenants": unchecked},
    defaults={"audience": DEFAULT_AUDIENCE, "scope": DEFAULT_SCOPE, "close_on_expiry": False},
)
# A token is parsed once (`_parse`): PyJWT's decode parses it again after the unverified
# read that picks the key, and checks each base64 character in a Python loop; the two
# parses were about two thirds of a fresh connection's JWT check. PyJWT still verifies
# the signature (the key's own Algorithm) and the registered claims (PyJWT 2.15.1 is
# pinned in requirements.txt: `_validate_claims` is its decode's own check).
_SEGMENT = re.compile(rb"[A-Za-z0-9_-]*={0,2}")
_CLAIMS = jwt.PyJWT()
_CLAIM_OPTIONS: FullOptions = _CLAIMS._merge_options({"require": ["exp", "aud"]})


def _segment(segment: bytes) -> bytes:
    """A base64url segment decoded as strictly as PyJWT 2.15's `_load` does: its
    alphabet, at most two '=' and then only to a multiple of 4, canonical encoding."""
    stripped = segment.rstrip(b"=")
    if (
        not _SEGMENT.fullmatch(segment)
        or (len(stripped) != len(segment) and len(segment) % 4)
        or len(stripped) % 4 == 1
    ):
        raise InvalidToken(MALFORMED)
    try:
        decoded = base64.urlsafe_b64decode(stripped + b"=" * (-len(stripped) % 4))
    except binascii.Error:
        raise InvalidToken(MALFORMED) from None
    if base64.urlsafe_b64encode(decoded).rstrip(b"=") != stripped:
        raise InvalidToken(MALFORMED)
    return decoded


def _json_object(segment: bytes) -> dict[str, Any]:
    try:
        value = json.loads(_segment(segment))
    except (ValueError, RecursionError):
        raise InvalidToken(MALFORMED) from None
    if not isinstance(value, dict):
        raise InvalidToken(MALFORMED)
    return value


def _parse(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    """(header, claims, signing input, signature) of a compact JWS, or InvalidToken
    (4002 "malformed token"). Headers PyJWT refuses are refused: a non-string `kid`,
    any `crit` (the one extension it knows, b64, is not accepted here)."""
    try:
        raw = token.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        raise InvalidToken(MALFORMED) from None
    signing_input, _, signature = raw.rpartition(b".")
    header_segment, dot, payload_segment = signing_input.partition(b".")
    if not dot:
        raise InvalidToken(MALFORMED)
    header = _json_object(header_segment)
    if "crit" in header or header.get("b64", True) is not True:
        raise InvalidToken(MALFORMED, detail="crit or b64 header")
    if "kid" in header and not isinstance(header["kid"], str):
        raise InvalidToken(MALFORMED, detail="kid is not a string")
    return header, _json_object(payload_segment), signing_input, _segment(signature)


class Authenticator:
    def __init__(
        self, audience: str, scope: str, tenants: dict[str, Tenant], close_on_expiry: bool = False
    ) -> None:
        self.audience = audience
        self.scope = scope
        self.tenants = tenants
        # Close an open connection with 4002 "token expired" once its token's exp (plus
        # LEEWAY) passes. Off by default: a provider reconnects with the token it was
        # built with, so this needs a client that refreshes it (README, Authentication).
        self.close_on_expiry = close_on_expiry
        self._verified: OrderedDict[str, Principal] = OrderedDict()  # VERIFIED_TOKENS

    @classmethod
    def from_config(
        cls, auth: dict, development: bool = False, problems: Problems | None = None
    ) -> Authenticator:
        """Parse the `auth` setting. `development`: accept the public development secret
        (only a server that listens on a loopback address, or `wsserver token`).
        Every tenant, key and app is checked; with `problems` their errors are added
        there and what was valid is returned (the caller checks it further), else they
        are raised together."""
        checked = _AUTH("auth", auth)
        found = Problems()
        tenants = parse_tenants(checked.get("tenants"), development, found)
        if problems is None:
            found.raise_all()
        else:
            problems.errors.extend(found.errors)
        return cls(checked["audience"], checked["scope"], tenants, checked["close_on_expiry"])

    # --- verification ---------------------------------------------------------------

    def verify(self, token: str | None) -> Principal:
        """Check a token's signature and claims; return its Principal.

        Raises NoToken (4001) or InvalidToken (4002: including a claim of the wrong type,
        `check_claim_types`, and a malformed `documents` or `access` claim). A token
        naming a tenant that is not configured cannot be verified: it is a 4002 with the
        same reason as a bad signature, so the answer says nothing about which tenants
        exist.
        """
        if not token:
            raise NoToken()
        principal = self._verified.get(token)
        if principal is not None:
            if principal.claims["exp"] + LEEWAY > time.time():  # PyJWT's expiry rule
                self._verified.move_to_end(token)
                return principal
            del self._verified[token]
        principal = self._verify(token)
        self._verified[token] = principal
        if len(self._verified) > VERIFIED_TOKENS:
            self._verified.popitem(last=False)
        return principal

    def _verify(self, token: str) -> Principal:
        header, unverified, signing_input, signature = _parse(token)
        check_claim_types(unverified)  # the same bytes as the verified claims
        tenant_id = unverified.get("tenantId")
        if not isinstance(tenant_id, str) or not tenant_id:
            raise InvalidToken("token has no tenantId")
        tenant = self.tenants.get(tenant_id)
        if tenant is None:
            raise InvalidToken(UNVERIFIABLE, detail="unknown tenant")
        kid = header.get("kid")
        if kid is None and len(tenant.keys) == 1:
            key = next(iter(tenant.keys.values()))
        else:
            key = tenant.keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise InvalidToken(UNVERIFIABLE, detail="unknown key")
        if header.get("alg") != key.alg:
            raise InvalidToken(UNVERIFIABLE, detail="algorithm not allowed for this key")
        # The key was prepared for its algorithm at start (tenants.py); the algorithm is
        # the key's, never the token's.
        if not jwt.get_algorithm_by_name(key.alg).verify(signing_input, key.key, signature):
            raise InvalidToken(UNVERIFIABLE)
        claims = self._check_claims(unverified)
        app = claims.get("appId")
        if not isinstance(app, str) or not app:
            raise InvalidToken("token has no appId")
        sub = claims.get("sub")
        documents, read_only = access_claims(claims)
        return Principal(
            tenant_id,
            app,
            sub if isinstance(sub, str) and sub else None,
            claims,
            documents,
            read_only,
        )

    def expiry_deadline(self, principal: Principal) -> float | None:
        """The time.time() at which `principal`'s connection is closed as expired, or
        None when `close_on_expiry` is off."""
        if not self.close_on_expiry:
            return None
        return principal.claims["exp"] + LEEWAY  # required, and a number (check_claim_types)

    def _check_claims(self, claims: dict[str, Any]) -> dict[str, Any]:
        """The registered claims of a token whose signature was verified, checked by
        PyJWT's decode's own rule (exp and aud required, exp/nbf/iat with LEEWAY, the
        audience), then the scope."""
        try:
            _CLAIMS._validate_claims(claims, _CLAIM_OPTIONS, audience=self.audience, leeway=LEEWAY)
        except jwt.ExpiredSignatureError:
            raise InvalidToken("token expired") from None
        except jwt.ImmatureSignatureError:
            raise InvalidToken("token not yet valid") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("wrong audience") from None
        except jwt.MissingRequiredClaimError as e:
            raise InvalidToken(f"token has no {e.claim}") from None
        except jwt.InvalidTokenError:
            raise InvalidToken(MALFORMED) from None
        if not self._has_scope(claims):
            raise InvalidToken("missing scope")
        return claims

    def _has_scope(self, claims):
        for name in ("scope", "scp"):
            value = claims.get(name)
            if isinstance(value, str):
                value = value.split()
            if isinstance(value, list) and self.scope in value:
                return True
        return False

    def authorize(self, principal: Principal, origin: str | None) -> App:
        """The App a verified principal may use from `origin`, or Forbidden (4003)."""
        tenant = self.tenants.get(principal.tenant)
        app = tenant.apps.get(principal.app) if tenant else None
        if app is None:
            raise Forbidden("unknown app")
        if not app.allows_origin(origin):
            raise Forbidden("origin not allowed")
        return app

    # --- development tokens ---------------------------------------------------------

    def issue(
        self,
        tenant: str,
        app: str,
        sub: str | None = None,
        ttl: float = 3600,
        extra: dict | None = None,
    ) -> str:
        """A token signed with the tenant's first HMAC key (for `wsserver token`)."""
        t = self.tenants.get(tenant)
        if t is None:
            raise ConfigError(f"auth.tenants.{tenant}", "no such tenant")
        key = next((k for k in t.keys.values() if k.alg in HMAC_ALGORITHMS), None)
        if key is None:
            raise ConfigError(f"auth.tenants.{tenant}.keys", "has no HMAC key to sign with")
        now = int(time.time())
        claims = {
            "tenantId": tenant,
            "appId": app,
            "aud": self.audience,
            "scope": self.scope,
            "iat": now,
            "exp": now + int(ttl),
        }
        if sub:
            claims["sub"] = sub
        claims.update(extra or {})
        return jwt.encode(claims, key.material, algorithm=key.alg, headers={"kid": key.kid})
