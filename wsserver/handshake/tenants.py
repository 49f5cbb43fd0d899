"""The `auth.tenants` setting: each tenant's keys (each pinned to one algorithm) and apps.

Parsed once at start (`parse_tenants`), every tenant, key and app checked so one boot
reports every problem; a key's material is prepared for PyJWT here, so verification
(auth.py) only looks keys up.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import jwt

from ..errors import ConfigError
from ..support.validators import (
    Problems,
    at_least_one,
    choice,
    known_keys,
    list_of,
    long_secret,
    mapping,
    matching,
    required,
    section,
    string,
    unchecked,
)

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
# The keys each level of `auth` accepts; anything else stops start-up, naming it.
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


_ALGORITHM = choice(*sorted(HMAC_ALGORITHMS | PUBLIC_ALGORITHMS))
_KID = required(string)
# An app: `allowed_origins` (absent: any origin); `plan` and `webhooks` are checked by
# their owners (limits/plans.py, webhooks/settings.py) from the whole mapping.
_APP = section(
    {
        "allowed_origins": list_of(matching("", "an origin"), "a list of origins"),
        **{name: unchecked for name in APP_KEYS if name != "allowed_origins"},
    }
)
_TENANTS = at_least_one("tenant", dict)
_KEYS = at_least_one("key")
_APPS = at_least_one("app", dict)


def _parse_key_entry(key_path, entry, development):
    """One entry of `keys`: yields Key objects (a JWKS file yields several)."""
    mapping(key_path, entry)
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
    _KID(f"{key_path}.kid", kid)
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
        _ALGORITHM(f"{key_path}.alg", alg)  # raises: not one of them


def _parse_app(app_path: str, name: str, conf: Any) -> App:
    checked = _APP(app_path, conf)
    return App(name, checked.get("allowed_origins"), conf or {})


def parse_tenants(tenants_conf: object, development: bool, found: Problems) -> dict[str, Tenant]:
    """`auth.tenants` as {name: Tenant}. Every tenant, key and app is checked; their
    errors are added to `found`, and what was valid is returned."""
    checked: dict = _TENANTS("auth.tenants", tenants_conf)
    tenants = {}
    for tname, tconf in checked.items():
        path = f"auth.tenants.{tname}"
        try:
            mapping(path, tconf)
        except ConfigError as e:
            found.errors.append(e)
            continue
        with found.check():
            known_keys(path, tconf, TENANT_KEYS)
        keys: dict[str, Key] = {}
        entries = []
        with found.check():
            entries = _KEYS(f"{path}.keys", tconf.get("keys"))
        for i, entry in enumerate(entries):
            with found.check():
                for key in _parse_key_entry(f"{path}.keys[{i}]", entry, development):
                    if key.kid in keys:
                        raise ConfigError(f"{path}.keys[{i}]", f"duplicate kid {key.kid!r}")
                    keys[key.kid] = key
        apps_conf = {}
        with found.check():
            apps_conf = _APPS(f"{path}.apps", tconf.get("apps"))
        apps = {}
        for a, c in apps_conf.items():
            with found.check():
                apps[str(a)] = _parse_app(f"{path}.apps.{a}", str(a), c)
        tenants[str(tname)] = Tenant(str(tname), keys, apps)
    return tenants
