"""Token checks (wsserver/handshake/: auth.py, tenants.py, claims.py): keys per tenant,
algorithm pinning, claims."""

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from wsserver.errors import ConfigError, Forbidden, InvalidToken, NoToken
from wsserver.handshake.auth import Authenticator
from wsserver.handshake.claims import Principal

AUD = "WireSocket.API"
SCOPE = "WireSocket.API"
SECRET = "acme-secret-0123456789abcdef0123456789"
GLOBEX_SECRET = "globex-secret-0123456789abcdef01234567"


def _pem_private(key):
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem_public(key):
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="module")
def keys():
    rsa1 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec1 = ec.generate_private_key(ec.SECP256R1())
    ec2 = ec.generate_private_key(ec.SECP256R1())
    return {"rsa1": rsa1, "rsa2": rsa2, "ec1": ec1, "ec2": ec2}


def _jwk(private_key, kid, alg):
    algo = jwt.algorithms.RSAAlgorithm if alg.startswith("RS") else jwt.algorithms.ECAlgorithm
    jwk = algo.to_jwk(private_key.public_key(), as_dict=True)
    jwk.update(kid=kid, alg=alg, use="sig")
    return jwk


@pytest.fixture(scope="module")
def key_dir(keys, tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    (d / "rsa1.pem").write_text(_pem_public(keys["rsa1"]))
    (d / "ec1.pem").write_text(_pem_public(keys["ec1"]))
    (d / "jwks.json").write_text(
        json.dumps(
            {"keys": [_jwk(keys["rsa2"], "j-rsa", "RS256"), _jwk(keys["ec2"], "j-ec", "ES256")]}
        )
    )
    return d


@pytest.fixture(scope="module")
def auth_config(keys, key_dir):
    return {
        "audience": AUD,
        "scope": SCOPE,
        "tenants": {
            "acme": {
                "keys": [
                    {"kid": "hs", "alg": "HS256", "secret": SECRET},
                    {"kid": "rs-inline", "alg": "RS256", "public_key": _pem_public(keys["rsa1"])},
                    {
                        "kid": "rs-file",
                        "alg": "RS256",
                        "public_key_file": str(key_dir / "rsa1.pem"),
                    },
                    {"kid": "es-inline", "alg": "ES256", "public_key": _pem_public(keys["ec1"])},
                    {"kid": "es-file", "alg": "ES256", "public_key_file": str(key_dir / "ec1.pem")},
                    {"jwks_file": str(key_dir / "jwks.json")},
                ],
                "apps": {
                    "editor": {},
                    "notes": None,
                    "locked": {"allowed_origins": ["https://editor.acme.com"]},
                },
            },
            "globex": {
                "keys": [{"kid": "g1", "alg": "HS256", "secret": GLOBEX_SECRET}],
                "apps": {"editor": {}},
            },
        },
    }


@pytest.fixture(scope="module")
def auth(auth_config):
    return Authenticator.from_config(auth_config)


def claims(**overrides):
    now = int(time.time())
    c = {
        "tenantId": "acme",
        "appId": "editor",
        "aud": AUD,
        "scope": SCOPE,
        "iat": now,
        "exp": now + 600,
        "sub": "user-1",
    }
    c.update(overrides)
    return {k: v for k, v in c.items() if v is not None}


def hs_token(secret=SECRET, kid="hs", **overrides):
    headers = {"kid": kid} if kid else {}
    return jwt.encode(claims(**overrides), secret, algorithm="HS256", headers=headers)


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header, payload, sign=None):
    """A JWT assembled by hand, so any header/signature can be produced."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = sign(signing_input.encode()) if sign else b""
    return f"{signing_input}.{b64(signature)}"


def reason_of(error_type, fn, *args):
    with pytest.raises(error_type) as info:
        fn(*args)
    return info.value.reason


def unverifiable(fn, *args):
    """The detail of a 4002 for a token whose signature cannot be verified: the client's
    reason is always "bad signature", whatever the cause (no tenant enumeration)."""
    with pytest.raises(InvalidToken) as info:
        fn(*args)
    assert info.value.reason == "bad signature"
    return info.value.detail


# --- accepted tokens -------------------------------------------------------------------


def test_hs256_ok(auth):
    principal = auth.verify(hs_token())
    assert principal == Principal("acme", "editor", "user-1", principal.claims)
    assert principal.claims["aud"] == AUD


def test_no_sub_means_no_user(auth):
    assert auth.verify(hs_token(sub=None)).user is None


@pytest.mark.parametrize(
    "kid,key_name,alg",
    [
        ("rs-inline", "rsa1", "RS256"),
        ("rs-file", "rsa1", "RS256"),
        ("es-inline", "ec1", "ES256"),
        ("es-file", "ec1", "ES256"),
        ("j-rsa", "rsa2", "RS256"),
        ("j-ec", "ec2", "ES256"),
    ],
)
def test_public_key_tokens_ok(auth, keys, kid, key_name, alg):
    token = jwt.encode(
        claims(appId="notes"), _pem_private(keys[key_name]), algorithm=alg, headers={"kid": kid}
    )
    principal = auth.verify(token)
    assert (principal.tenant, principal.app, principal.user) == ("acme", "notes", "user-1")


@pytest.mark.parametrize(
    "kid,key_name,alg",
    [
        ("rs-inline", "rsa2", "RS256"),  # the JWKS key, presented under the PEM kid
        ("j-rsa", "rsa1", "RS256"),
        ("es-file", "ec2", "ES256"),
        ("j-ec", "ec1", "ES256"),
    ],
)
def test_kid_selects_the_key(auth, keys, kid, key_name, alg):
    token = jwt.encode(claims(), _pem_private(keys[key_name]), algorithm=alg, headers={"kid": kid})
    assert reason_of(InvalidToken, auth.verify, token) == "bad signature"


def test_kid_of_another_tenant_is_unknown(auth):
    # globex's kid, signed with globex's secret, but claiming tenant acme
    token = hs_token(secret=GLOBEX_SECRET, kid="g1")
    assert unverifiable(auth.verify, token) == "unknown key"


def test_other_tenants_secret_is_a_bad_signature(auth):
    token = hs_token(secret=GLOBEX_SECRET, kid="hs")
    assert reason_of(InvalidToken, auth.verify, token) == "bad signature"


def test_missing_kid(auth):
    # acme has several keys: a token without kid cannot pick one
    assert unverifiable(auth.verify, hs_token(kid=None)) == "unknown key"
    # globex has exactly one: its key is used
    token = hs_token(secret=GLOBEX_SECRET, kid=None, tenantId="globex")
    assert auth.verify(token).tenant == "globex"
    # ... and still checked
    token = hs_token(secret=SECRET, kid=None, tenantId="globex")
    assert reason_of(InvalidToken, auth.verify, token) == "bad signature"


def test_unknown_kid(auth):
    assert unverifiable(auth.verify, hs_token(kid="nope")) == "unknown key"


# --- algorithm confusion and `none` ------------------------------------------------------


def test_hs256_signed_with_the_rsa_public_key_is_refused(auth, keys):
    public_pem = _pem_public(keys["rsa1"]).encode()
    for kid in ("rs-inline", "rs-file", "j-rsa"):
        token = raw_token(
            {"alg": "HS256", "typ": "JWT", "kid": kid},
            claims(),
            lambda m: hmac.new(public_pem, m, hashlib.sha256).digest(),
        )
        assert unverifiable(auth.verify, token) == "algorithm not allowed for this key"


def test_hs256_signed_with_public_key_under_the_hmac_kid_is_a_bad_signature(auth, keys):
    public_pem = _pem_public(keys["rsa1"]).encode()
    token = raw_token(
        {"alg": "HS256", "typ": "JWT", "kid": "hs"},
        claims(),
        lambda m: hmac.new(public_pem, m, hashlib.sha256).digest(),
    )
    assert reason_of(InvalidToken, auth.verify, token) == "bad signature"


def test_rs256_token_under_an_hmac_kid_is_refused(auth, keys):
    token = jwt.encode(
        claims(), _pem_private(keys["rsa1"]), algorithm="RS256", headers={"kid": "hs"}
    )
    assert unverifiable(auth.verify, token) == "algorithm not allowed for this key"


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_is_refused(auth, alg):
    for kid in ("hs", "rs-inline", None):
        header = {"alg": alg, "typ": "JWT"}
        if kid:
            header["kid"] = kid
        token = raw_token(header, claims())
        with pytest.raises(InvalidToken):
            auth.verify(token)
    # single-key tenant, no kid: the only key is HS256, `none` is still refused
    token = raw_token({"alg": alg}, claims(tenantId="globex"))
    with pytest.raises(InvalidToken):
        auth.verify(token)


def test_es256_token_under_an_rs256_kid_is_refused(auth, keys):
    token = jwt.encode(
        claims(), _pem_private(keys["ec1"]), algorithm="ES256", headers={"kid": "rs-inline"}
    )
    assert unverifiable(auth.verify, token) == "algorithm not allowed for this key"


# --- claims -----------------------------------------------------------------------------


def test_a_token_verified_once_is_not_verified_again_until_it_expires(auth, monkeypatch):
    # A reconnect storm (every client of a restarted process at once) presents tokens
    # the process verified already (handshake/auth.py, VERIFIED_TOKENS).
    decoded = []
    verify = auth._verify  # the parse, signature and claim checks of one token
    monkeypatch.setattr(auth, "_verify", lambda *a, **k: decoded.append(1) or verify(*a, **k))
    token = hs_token(exp=int(time.time()) + 60)
    first = auth.verify(token)
    assert auth.verify(token) is first and auth.verify(token) is first
    assert len(decoded) == 1
    # The same claims under another signature are verified (and refused) on their own.
    forged = token.rsplit(".", 1)[0] + "." + b64(b"\x00" * 32)
    unverifiable(auth.verify, forged)
    assert len(decoded) == 2
    # Once its exp is LEEWAY past, the token goes to PyJWT again (which refuses an
    # expired token: test_expired).
    later = time.time() + 60 + 6
    monkeypatch.setattr(time, "time", lambda: later)
    auth.verify(token)  # PyJWT's clock is the real one: still valid there
    assert len(decoded) == 3


def test_expired(auth):
    token = hs_token(exp=int(time.time()) - 60)
    assert reason_of(InvalidToken, auth.verify, token) == "token expired"


def test_not_yet_valid(auth):
    token = hs_token(nbf=int(time.time()) + 300)
    assert reason_of(InvalidToken, auth.verify, token) == "token not yet valid"


def test_small_clock_skew_is_tolerated(auth):
    assert auth.verify(hs_token(nbf=int(time.time()) + 2)).tenant == "acme"


@pytest.mark.parametrize("aud", ["Other.API", ["Other.API"], "WireSocket.API2"])
def test_wrong_audience(auth, aud):
    assert reason_of(InvalidToken, auth.verify, hs_token(aud=aud)) == "wrong audience"


def test_audience_list_containing_ours_is_accepted(auth):
    assert auth.verify(hs_token(aud=["Other.API", AUD])).tenant == "acme"


@pytest.mark.parametrize("claim", ["exp", "aud"])
def test_required_registered_claims(auth, claim):
    assert (
        reason_of(InvalidToken, auth.verify, hs_token(**{claim: None})) == f"token has no {claim}"
    )


@pytest.mark.parametrize(
    "scope_claims",
    [
        {"scope": None},
        {"scope": "read write"},
        {"scope": "WireSocket.APIx"},
        {"scope": "WireSocket"},
        {"scope": ["read"]},
        {"scope": None, "scp": "read"},
        {"scope": None, "scp": ["WireSocket.API.read"]},
    ],
)
def test_missing_scope(auth, scope_claims):
    assert reason_of(InvalidToken, auth.verify, hs_token(**scope_claims)) == "missing scope"


@pytest.mark.parametrize(
    "scope_claims",
    [
        {"scope": "read WireSocket.API write"},
        {"scope": None, "scp": "WireSocket.API"},
        {"scope": None, "scp": "openid WireSocket.API"},
        {"scope": None, "scp": ["openid", "WireSocket.API"]},
        {"scope": "read", "scp": ["WireSocket.API"]},
    ],
)
def test_scope_accepted(auth, scope_claims):
    assert auth.verify(hs_token(**scope_claims)).app == "editor"


@pytest.mark.parametrize("tenant", [None, ""])
def test_missing_tenant_id(auth, tenant):
    assert (
        reason_of(InvalidToken, auth.verify, hs_token(tenantId=tenant)) == "token has no tenantId"
    )


@pytest.mark.parametrize("app", [None, ""])
def test_missing_app_id(auth, app):
    assert reason_of(InvalidToken, auth.verify, hs_token(appId=app)) == "token has no appId"


@pytest.mark.parametrize("token", ["", None])
def test_no_token(auth, token):
    with pytest.raises(NoToken) as info:
        auth.verify(token)
    assert info.value.close_code == 4001


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "e30.e30.", "x" * 2000])
def test_malformed(auth, token):
    with pytest.raises(InvalidToken) as info:
        auth.verify(token)
    assert info.value.close_code == 4002


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"exp": int(time.time()) - 60},
        {"aud": "Other.API"},
        {"scope": "read"},
        {"exp": None},
    ],
)
@pytest.mark.parametrize("kid", ["hs", "g1", "nope", None])
def test_a_token_naming_an_unknown_tenant_answers_like_a_bad_signature(auth, overrides, kid):
    """Issue 8 item 5: no key can verify it, so it is 4002 with the very answer a real
    tenant gives to a token signed with the wrong secret: nobody can enumerate tenants."""
    guessed = "guessed-secret-0123456789abcdef0123456"
    fake = hs_token(secret=guessed, kid=kid, tenantId="initech", **overrides)
    real = hs_token(secret=guessed, kid=kid, tenantId="acme", **overrides)
    answers = []
    for token in (fake, real):
        with pytest.raises(InvalidToken) as info:
            auth.verify(token)
        answers.append((info.value.close_code, info.value.reason, info.value.to_json()))
    assert (
        answers[0]
        == answers[1]
        == (4002, "bad signature", {"error": "bad signature", "code": 4002})
    )
    assert unverifiable(auth.verify, fake) == "unknown tenant"


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "HS256", "kid": ["hs"]},
        {"alg": "HS256", "kid": {"a": 1}},
        {"alg": "HS256", "kid": 7},
        {"alg": "HS256", "kid": "hs", "crit": ["exp"]},
        {"alg": "HS256", "kid": "hs", "crit": "b64"},
        {"alg": ["HS256"], "kid": "hs"},
        {"alg": None},
    ],
)
@pytest.mark.parametrize("tenant", ["acme", "globex", "initech"])
def test_odd_headers_are_invalid_tokens(auth, header, tenant):
    """Issue 8 item 4: a non-string kid or a crit header was an uncaught PyJWT error."""
    token = raw_token(
        header,
        claims(tenantId=tenant),
        lambda m: hmac.new(SECRET.encode(), m, hashlib.sha256).digest(),
    )
    with pytest.raises(InvalidToken) as info:
        auth.verify(token)
    assert info.value.close_code == 4002


def test_codes(auth):
    for error, code in ((NoToken, 4001), (InvalidToken, 4002), (Forbidden, 4003)):
        assert error().close_code == code


# --- authorize -------------------------------------------------------------------------


def test_authorize(auth):
    principal = auth.verify(hs_token())
    assert auth.authorize(principal, None).name == "editor"
    assert auth.authorize(principal, "https://anything.example").name == "editor"
    assert auth.authorize(auth.verify(hs_token(appId="notes")), None).name == "notes"


def test_authorize_unknown_app(auth):
    principal = auth.verify(hs_token(appId="billing"))  # the token is fine...
    with pytest.raises(Forbidden) as info:  # ...but the app is not configured
        auth.authorize(principal, None)
    assert info.value.reason == "unknown app"


def test_authorize_app_of_another_tenant(auth):
    # globex has no app "notes": acme's apps do not leak across tenants
    principal = auth.verify(
        hs_token(secret=GLOBEX_SECRET, kid="g1", tenantId="globex", appId="notes")
    )
    with pytest.raises(Forbidden):
        auth.authorize(principal, None)


def test_authorize_origin(auth):
    principal = auth.verify(hs_token(appId="locked"))
    assert auth.authorize(principal, "https://editor.acme.com").name == "locked"
    for origin in (
        None,
        "https://evil.example",
        "https://editor.acme.com.evil.example",
        "http://editor.acme.com",
    ):
        with pytest.raises(Forbidden) as info:
            auth.authorize(principal, origin)
        assert info.value.reason == "origin not allowed"


# --- issue -------------------------------------------------------------------------------


def test_issue_round_trips(auth):
    token = auth.issue("acme", "notes", sub="dev-user", ttl=120)
    assert jwt.get_unverified_header(token)["kid"] == "hs"
    principal = auth.verify(token)
    assert (principal.tenant, principal.app, principal.user) == ("acme", "notes", "dev-user")
    assert principal.claims["exp"] - principal.claims["iat"] == 120


def test_issue_with_negative_ttl_gives_an_expired_token(auth):
    token = auth.issue("acme", "editor", ttl=-60)
    assert reason_of(InvalidToken, auth.verify, token) == "token expired"


def test_issue_errors(auth, keys):
    with pytest.raises(ConfigError) as info:
        auth.issue("initech", "editor")
    assert info.value.key == "auth.tenants.initech"
    only_rsa = Authenticator.from_config(
        {
            "tenants": {
                "t": {
                    "keys": [{"kid": "r", "alg": "RS256", "public_key": _pem_public(keys["rsa1"])}],
                    "apps": {"a": {}},
                }
            }
        }
    )
    with pytest.raises(ConfigError) as info:
        only_rsa.issue("t", "a")
    assert info.value.key == "auth.tenants.t.keys"


def test_defaults(keys):
    a = Authenticator.from_config(
        {
            "tenants": {
                "t": {"keys": [{"kid": "k", "alg": "HS256", "secret": "s" * 32}], "apps": {"a": {}}}
            }
        }
    )
    assert (a.audience, a.scope) == ("WireSocket.API", "WireSocket.API")


# --- configuration errors name the key -----------------------------------------------------


S32 = "s" * 32  # long enough (RFC 7518 §3.2): the errors below are about other keys


def _one_tenant(key_entry, apps=None):
    return {"tenants": {"acme": {"keys": [key_entry], "apps": apps or {"editor": {}}}}}


@pytest.mark.parametrize(
    "conf,key",
    [
        (_one_tenant({"kid": "k", "alg": "HS256"}), "auth.tenants.acme.keys[0].secret"),
        (
            _one_tenant({"kid": "k", "alg": "HS256", "secret": ""}),
            "auth.tenants.acme.keys[0].secret",
        ),
        (_one_tenant({"kid": "k", "alg": "HS257", "secret": S32}), "auth.tenants.acme.keys[0].alg"),
        (_one_tenant({"kid": "k", "alg": "none", "secret": S32}), "auth.tenants.acme.keys[0].alg"),
        (_one_tenant({"kid": "k", "secret": S32}), "auth.tenants.acme.keys[0].alg"),
        (_one_tenant({"alg": "HS256", "secret": S32}), "auth.tenants.acme.keys[0].kid"),
        (_one_tenant({"kid": "k", "alg": "RS256"}), "auth.tenants.acme.keys[0]"),
        (
            _one_tenant({"kid": "k", "alg": "RS256", "public_key": "not a pem"}),
            "auth.tenants.acme.keys[0]",
        ),
        (
            _one_tenant({"kid": "k", "alg": "RS256", "public_key_file": "/nonexistent/key.pem"}),
            "auth.tenants.acme.keys[0].public_key_file",
        ),
        (
            _one_tenant({"jwks_file": "/nonexistent/jwks.json"}),
            "auth.tenants.acme.keys[0].jwks_file",
        ),
        (_one_tenant("k1"), "auth.tenants.acme.keys[0]"),
        (
            _one_tenant(
                {"kid": "k", "alg": "HS256", "secret": S32}, apps={"e": {"allowed_origins": "x"}}
            ),
            "auth.tenants.acme.apps.e.allowed_origins",
        ),
        ({"tenants": {"acme": {"keys": [], "apps": {"e": {}}}}}, "auth.tenants.acme.keys"),
        (
            {"tenants": {"acme": {"keys": [{"kid": "k", "alg": "HS256", "secret": S32}]}}},
            "auth.tenants.acme.apps",
        ),
        ({"tenants": {}}, "auth.tenants"),
        (
            {
                "tenants": {
                    "acme": {
                        "keys": [
                            {"kid": "k", "alg": "HS256", "secret": S32},
                            {"kid": "k", "alg": "HS256", "secret": S32},
                        ],
                        "apps": {"e": {}},
                    }
                }
            },
            "auth.tenants.acme.keys[1]",
        ),
        ({"audience": 5, "tenants": {}}, "auth.audience"),
        ({"scopes": "x", "tenants": {}}, "auth.scopes"),
    ],
)
def test_config_errors_name_the_key(conf, key):
    with pytest.raises(ConfigError) as info:
        Authenticator.from_config(conf)
    assert info.value.key == key
    assert str(info.value).startswith(f"config: {key}: ")


def test_ec_key_declared_as_rs256_is_a_config_error(keys):
    conf = _one_tenant({"kid": "k", "alg": "RS256", "public_key": _pem_public(keys["ec1"])})
    with pytest.raises(ConfigError) as info:
        Authenticator.from_config(conf)
    assert info.value.key == "auth.tenants.acme.keys[0]"


def test_unreadable_key_file_names_the_file(tmp_path):
    path = tmp_path / "missing.pem"
    conf = _one_tenant({"kid": "k", "alg": "ES256", "public_key_file": str(path)})
    with pytest.raises(ConfigError) as info:
        Authenticator.from_config(conf)
    assert str(path) in str(info.value)


def test_bad_jwks_files(tmp_path, keys):
    cases = {
        "not-json.json": "{nope",
        "no-kid.json": json.dumps(
            {"keys": [{k: v for k, v in _jwk(keys["rsa1"], "x", "RS256").items() if k != "kid"}]}
        ),
        "hmac.json": json.dumps(
            {"keys": [{"kty": "oct", "kid": "h", "alg": "HS256", "k": b64(b"s" * 32)}]}
        ),
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ConfigError) as info:
            Authenticator.from_config(_one_tenant({"jwks_file": str(tmp_path / name)}))
        assert info.value.key == "auth.tenants.acme.keys[0].jwks_file", name


def _noncanonical(segment):
    """The same bytes under another last character (unused low bits set), or None."""
    decoded = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_":
        other = segment[:-1] + c
        if (
            c != segment[-1]
            and base64.urlsafe_b64decode(other + "=" * (-len(other) % 4)) == decoded
        ):
            return other
    return None


def _mangled_segments():
    header = b64(json.dumps({"alg": "HS256", "kid": "hs"}).encode())
    payload = b64(json.dumps(claims()).encode() + b" " * (2 - len(json.dumps(claims())) % 3))
    assert len(payload) % 4 and _noncanonical(payload)
    return (
        header,
        payload,
        {
            "junk character": (header, payload[:10] + "!" + payload[10:]),
            "three =": (header, payload + "==="),
            "= not to a multiple of 4": (header, payload + "=" * (1 + len(payload) % 4 % 2)),
            "one char too many": (header, payload + "A" * (5 - len(payload) % 4)),
            "non-canonical": (header, _noncanonical(payload)),
            "a dot more": (header, payload + "." + payload),
            "header not an object": (b64(b'["HS256"]'), payload),
            "payload not JSON": (header, b64(b"{nope")),
            "b64 false": (b64(json.dumps({"alg": "HS256", "b64": False}).encode()), ""),
        },
    )


@pytest.mark.parametrize("case", list(_mangled_segments()[2]))
def test_a_token_is_parsed_as_strictly_as_pyjwt_parses_it(auth, case):
    """The one parse of a token (auth.py `_parse`) refuses what PyJWT's decode refuses,
    even when the signature covers the odd bytes; PyJWT's own padded form is accepted."""
    header, payload, cases = _mangled_segments()

    def signed(h, p):
        signing_input = f"{h}.{p}".encode()
        return f"{h}.{p}.{b64(hmac.new(SECRET.encode(), signing_input, hashlib.sha256).digest())}"

    padded = signed(header, payload + "=" * (-len(payload) % 4))
    assert jwt.decode(padded, SECRET, algorithms=["HS256"], audience=AUD)
    assert auth.verify(padded).user == "user-1"
    token = signed(*cases[case])
    with pytest.raises(jwt.InvalidTokenError):
        jwt.decode(token, SECRET, algorithms=["HS256"], audience=AUD)
    assert reason_of(InvalidToken, auth.verify, token) == "malformed token"
