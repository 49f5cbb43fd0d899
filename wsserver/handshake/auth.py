"""Tokens: per-tenant keys, JWT verification, and development tokens.

A token names its tenant (`tenantId`) and app (`appId`); the key is chosen by the
token's `kid` among that tenant's keys, and each key is pinned to one algorithm, so
neither `none` nor an HMAC-with-a-public-key confusion can pass. PyJWT does the
cryptography and the registered-claim checks.

Two optional claims say what the token may do, decided by the app's backend when it
mints the token (`access_claims`): `documents`, the document-name patterns it may open
(absent: all of its app's), and `access`, "write" (default) or "read". The Principal
carries them, and `Principal.check_document` / `check_write` are the one rule every
entry point applies (the WebSocket handshake, /discovery, the HTTP document API).
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

import jwt

from ..errors import ConfigError, DocumentNotAllowed, Forbidden, InvalidToken, NoToken, ReadOnly
from ..support.validators import Problems, known_keys, long_secret

DEFAULT_AUDIENCE = "WireSocket.API"
DEFAULT_SCOPE = "WireSocket.API"
HMAC_ALGORITHMS = {"HS256", "HS384", "HS512"}
# RFC 7518 §3.2: an HMAC key at least as long as the hash output (HS256's 32 bytes) is a
# MUST; a short one can be brute-forced from any token it signed. 32 for every HS*.
MIN_HMAC_KEY_BYTES = 32
PUBLIC_ALGORITHMS = {
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
}
# Clock skew tolerated on exp/nbf/iat, in seconds.
LEEWAY = 5
# The one reason a client gets for a token whose signature cannot be verified, whatever
# the cause (unknown tenant, unknown kid, algorithm not that key's, wrong signature):
# distinct answers would let anyone enumerate tenants and kids with unsigned tokens.
# The cause is the error's `detail`, for the server log only.
UNVERIFIABLE = "bad signature"
# The keys each level of `auth` accepts; anything else stops start-up, naming it.
AUTH_KEYS = ("audience", "scope", "tenants", "close_on_expiry")
TENANT_KEYS = ("keys", "apps")
# `plan` is checked by limits/plans.py, `webhooks` by webhooks/settings.py.
APP_KEYS = ("allowed_origins", "plan", "webhooks")
HMAC_KEY_KEYS = ("kid", "alg", "secret")
PUBLIC_KEY_KEYS = ("kid", "alg", "public_key", "public_key_file")
JWKS_KEY_KEYS = ("jwks_file",)
# The secret config/dev.yaml falls back to when $DEV_SECRET is unset. It is public (it
# is in this repository): a server reachable from another machine must never accept it.
DEVELOPMENT_SECRET = "dev-secret-change-me-0123456789abcdef"


@dataclass(frozen=True)
class Key:
    kid: str
    alg: str
    key: object  # what PyJWT verifies with: a secret (bytes) or a public key object
    material: object = None  # the secret, for signing development tokens (HMAC only)


@dataclass
class App:
    name: str
    allowed_origins: list | None = None  # None: any origin
    settings: dict = field(default_factory=dict)  # the whole mapping, for later checks

    def allows_origin(self, origin: str | None) -> bool:
        return self.allowed_origins is None or origin in self.allowed_origins


@dataclass
class Tenant:
    name: str
    keys: dict  # kid -> Key, in config order
    apps: dict  # name -> App


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


def check_claim_types(claims):
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


def access_claims(claims):
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

    def may_open(self, name):
        """True when the `documents` claim lets this token open document `name`
        (case-sensitive globs; no claim: any document of its app)."""
        return self.documents is None or any(fnmatchcase(name, p) for p in self.documents)

    def check_document(self, name):
        """DocumentNotAllowed (4003) unless this token may open `name`."""
        if not self.may_open(name):
            error = DocumentNotAllowed()
            error.detail = self.describe()  # the patterns are not secret, and say why
            raise error

    def check_write(self):
        """ReadOnly (4003) when this token may only read."""
        if self.read_only:
            error = ReadOnly()
            error.detail = self.describe()
            raise error

    def describe(self):
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


def _load_key(key_path, alg, material):
    try:
        return jwt.get_algorithm_by_name(alg).prepare_key(material)
    except Exception as e:  # PyJWT raises several types for unusable key material
        raise ConfigError(key_path, f"not a usable {alg} key: {e}") from e


def _read_file(key_path, path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(key_path, f"cannot read {path}: {e.strerror}") from e


def _parse_key_entry(key_path, entry, development):
    """One entry of `keys`: yields Key objects (a JWKS file yields several)."""
    if not isinstance(entry, dict):
        raise ConfigError(key_path, "must be a mapping")
    if "jwks_file" in entry:
        known_keys(key_path, entry, JWKS_KEY_KEYS)
        text = _read_file(f"{key_path}.jwks_file", entry["jwks_file"])
        try:
            jwks = jwt.PyJWKSet.from_json(text)
        except (jwt.PyJWKSetError, jwt.InvalidKeyError, json.JSONDecodeError) as e:
            raise ConfigError(f"{key_path}.jwks_file", f"not a usable JWKS: {e}") from e
        for jwk in jwks.keys:
            if not jwk.key_id:
                raise ConfigError(f"{key_path}.jwks_file", "every JWK needs a kid")
            if jwk.algorithm_name not in PUBLIC_ALGORITHMS:
                raise ConfigError(
                    f"{key_path}.jwks_file",
                    f"key {jwk.key_id}: algorithm {jwk.algorithm_name} not allowed",
                )
            yield Key(jwk.key_id, jwk.algorithm_name, jwk.key)
        return
    kid, alg = entry.get("kid"), entry.get("alg")
    if alg in HMAC_ALGORITHMS:
        known_keys(key_path, entry, HMAC_KEY_KEYS)
    elif alg in PUBLIC_ALGORITHMS:
        known_keys(key_path, entry, PUBLIC_KEY_KEYS)
    if not isinstance(kid, str) or not kid:
        raise ConfigError(f"{key_path}.kid", "is required")
    if alg in HMAC_ALGORITHMS:
        secret = entry.get("secret")
        if secret == DEVELOPMENT_SECRET and not development:
            # The variable that filled it, if any, is named by the config loader.
            raise ConfigError(
                f"{key_path}.secret",
                "is the public development secret: set your own secret; it is accepted "
                "only by `wsserver serve` listening on a loopback address",
            )
        long_secret(MIN_HMAC_KEY_BYTES, f"for {alg} (RFC 7518 §3.2)")(f"{key_path}.secret", secret)
        secret = secret.encode("utf-8")
        yield Key(kid, alg, _load_key(f"{key_path}.secret", alg, secret), secret)
    elif alg in PUBLIC_ALGORITHMS:
        if "public_key" in entry:
            pem = entry["public_key"]
        elif "public_key_file" in entry:
            pem = _read_file(f"{key_path}.public_key_file", entry["public_key_file"])
        else:
            raise ConfigError(key_path, f"{alg} needs public_key or public_key_file")
        yield Key(kid, alg, _load_key(key_path, alg, pem))
    else:
        raise ConfigError(
            f"{key_path}.alg",
            f"must be one of {', '.join(sorted(HMAC_ALGORITHMS | PUBLIC_ALGORITHMS))}, not {alg!r}",
        )


def _parse_app(app_path, name, conf):
    conf = {} if conf is None else conf
    if not isinstance(conf, dict):
        raise ConfigError(app_path, "must be a mapping")
    known_keys(app_path, conf, APP_KEYS)
    origins = conf.get("allowed_origins")
    if origins is not None and (
        not isinstance(origins, list) or not all(isinstance(o, str) for o in origins)
    ):
        raise ConfigError(f"{app_path}.allowed_origins", "must be a list of origins")
    return App(name, origins, conf)


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

    @classmethod
    def from_config(
        cls, auth: dict, development: bool = False, problems: Problems | None = None
    ) -> Authenticator:
        """Parse the `auth` setting. `development`: accept the public development secret
        (only a server that listens on a loopback address, or `wsserver token`).
        Every tenant, key and app is checked; with `problems` their errors are added
        there and what was valid is returned (the caller checks it further), else they
        are raised together."""
        known_keys("auth", auth, AUTH_KEYS)
        audience = auth.get("audience", DEFAULT_AUDIENCE)
        scope = auth.get("scope", DEFAULT_SCOPE)
        for key in ("audience", "scope"):
            if not isinstance(auth.get(key, ""), str):
                raise ConfigError(f"auth.{key}", "must be a string")
        close_on_expiry = auth.get("close_on_expiry", False)
        if not isinstance(close_on_expiry, bool):
            raise ConfigError("auth.close_on_expiry", "must be true or false")
        tenants_conf = auth.get("tenants")
        if not isinstance(tenants_conf, dict) or not tenants_conf:
            raise ConfigError("auth.tenants", "needs at least one tenant")
        tenants, found = {}, Problems()
        for tname, tconf in tenants_conf.items():
            # Every tenant, key and app is checked: one boot reports every problem.
            path = f"auth.tenants.{tname}"
            if not isinstance(tconf, dict):
                found.errors.append(ConfigError(path, "must be a mapping"))
                continue
            with found.check():
                known_keys(path, tconf, TENANT_KEYS)
            keys = {}
            entries = tconf.get("keys")
            if not isinstance(entries, list) or not entries:
                found.errors.append(ConfigError(f"{path}.keys", "needs at least one key"))
                entries = []
            for i, entry in enumerate(entries):
                with found.check():
                    for key in _parse_key_entry(f"{path}.keys[{i}]", entry, development):
                        if key.kid in keys:
                            raise ConfigError(f"{path}.keys[{i}]", f"duplicate kid {key.kid!r}")
                        keys[key.kid] = key
            apps_conf = tconf.get("apps")
            if not isinstance(apps_conf, dict) or not apps_conf:
                found.errors.append(ConfigError(f"{path}.apps", "needs at least one app"))
                apps_conf = {}
            apps = {}
            for a, c in apps_conf.items():
                with found.check():
                    apps[str(a)] = _parse_app(f"{path}.apps.{a}", str(a), c)
            tenants[str(tname)] = Tenant(str(tname), keys, apps)
        if problems is None:
            found.raise_all()
        else:
            problems.errors.extend(found.errors)
        return cls(audience, scope, tenants, close_on_expiry)

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
        try:
            # One unverified parse gives both the kid and the tenant to pick the key by.
            unverified = jwt.decode_complete(token, options={"verify_signature": False})
            header, unverified = unverified["header"], unverified["payload"]
        except jwt.InvalidTokenError:
            # DecodeError, and InvalidTokenError for a non-string `kid` or a `crit` header.
            raise InvalidToken(MALFORMED) from None
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
        claims = self._decode(token, key, key.alg)
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

    def _decode(self, token, key, alg):
        options = {"require": ["exp", "aud"]}
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self.audience,
                options=options,
                leeway=LEEWAY,
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("token expired") from None
        except jwt.ImmatureSignatureError:
            raise InvalidToken("token not yet valid") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("wrong audience") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken(UNVERIFIABLE) from None
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
