"""Every token claim the server reads is type-checked (issue 22 item 2).

A correctly signed token whose `exp` was a numeric string passed PyJWT (it calls
`int()` on it) and then broke `auth.close_on_expiry` (`exp + 5`): a 1011 and two
tracebacks. The property test drives the handshake check in-process (the token checks
and the quota gate that reads `limits`, then the expiry deadline) over claims of every
JSON type; one real server shows the numeric-string `exp` refused with 4002.
"""

import math
import time
import uuid

import jwt
from conftest import SECRET, base_config, make_token
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_auth import claims
from test_bad_input import Client

from wsserver.errors import WsServerError
from wsserver.handshake.auth import Authenticator
from wsserver.handshake.handshake import Handshake
from wsserver.limits import MemoryQuota, QuotaGate
from wsserver.limits.refusals import Refusals
from wsserver.settings import Config

# The claims whose type the server checks, and what each must be when present (not null).
NUMERIC_DATES = ("exp", "nbf", "iat")
STRINGS = ("sub", "tenantId", "appId")
CLAIMS = (*NUMERIC_DATES, *STRINGS, "scope", "documents", "access", "limits")

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats()  # NaN and infinities too: PyJWT's JSON parser reads them
    | st.text(max_size=20)
    | st.sampled_from(["1796000000", "read", "write", "acme", "editor", "WireSocket.API"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)


def wrong_type(name, value):
    """Whether `value` (not None) is of a type `name` must not have: the rule the issue
    states, written independently of wsserver/handshake/claims.py."""
    if name in NUMERIC_DATES:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return True
        try:
            return not math.isfinite(value)
        except OverflowError:
            return True
    if name in STRINGS:
        return not isinstance(value, str)
    if name == "scope":
        return not (
            isinstance(value, str)
            or (isinstance(value, list) and all(isinstance(v, str) for v in value))
        )
    if name == "documents":
        return not isinstance(value, list)
    if name == "access":
        return value not in ("read", "write")
    if name == "limits":
        return not isinstance(value, dict) or any(
            isinstance(v, bool) or not isinstance(v, int) for v in value.values()
        )
    raise AssertionError(name)


def handshake(tmp_path_factory):
    config = base_config(tmp_path_factory.mktemp("claims"))
    config["auth"]["close_on_expiry"] = True
    authenticator = Authenticator.from_config(Config.from_mapping(config).auth)
    return Handshake(authenticator, [QuotaGate({}, MemoryQuota(), Refusals())])


def signed(changed):
    """A correctly signed token whose claims are the valid ones with `changed` applied
    (test_auth.claims: a claim changed to None is left out, null is as absent)."""
    return jwt.encode(claims(**changed), SECRET, algorithm="HS256", headers={"kid": "k1"})


def check(hs, token):
    """The in-process handshake check and, when admitted, the expiry timer's deadline
    as the endpoint computes it. Returns the close code, or "admitted"."""
    environ = {
        "PATH_INFO": "/doc",
        "QUERY_STRING": f"token={token}",
        "REMOTE_ADDR": "127.0.0.1",
    }
    try:
        session = hs.check(environ)
    except WsServerError as error:
        return error.close_code
    try:
        deadline = hs.authenticator.expiry_deadline(session.principal)
        max(0.0, deadline - time.time())  # what the endpoint's timer is started with
    finally:
        session.release()
    return "admitted"


@settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(changed=st.dictionaries(st.sampled_from(CLAIMS), json_values, min_size=1, max_size=4))
@example(changed={"exp": str(int(time.time()) + 600)})
@example(changed={"exp": 10**400})
@example(changed={"nbf": math.nan})
@example(changed={"iat": [1]})
@example(changed={"sub": 5})
@example(changed={"tenantId": 7})
@example(changed={"appId": ["editor"]})
@example(changed={"scope": 42})
@example(changed={"limits": "many"})
@example(changed={"limits": {"max_connections": True}})
def test_every_claim_is_type_checked(tmp_path_factory, changed):
    hs = test_every_claim_is_type_checked.handshake
    if hs is None:
        hs = test_every_claim_is_type_checked.handshake = handshake(tmp_path_factory)
    token = signed(changed)
    outcome = check(hs, token)
    # Never 1011, never an exception that is not a refusal with its code.
    assert outcome in ("admitted", 4002, 4003), outcome
    if any(v is not None and wrong_type(k, v) for k, v in changed.items()):
        assert outcome == 4002, (changed, outcome)


test_every_claim_is_type_checked.handshake = None


def test_a_numeric_string_exp_is_4002_without_a_traceback(start_server, tmp_path):
    config = base_config(tmp_path)
    config["auth"]["close_on_expiry"] = True
    server = start_server(config)
    exp = str(int(time.time()) + 600)
    client = Client(server, f"claims-{uuid.uuid4().hex[:8]}", make_token(exp=exp))
    assert client.wait_close() == (4002, "malformed token")
    client.close()
    fine = Client(server, f"claims-{uuid.uuid4().hex[:8]}", make_token())
    fine.recv()  # step 1: admitted
    fine.close()
    log = server.log()
    assert "Traceback" not in log and " 1011" not in log, log
    assert "malformed token (exp is not a number)" in log
    assert SECRET not in log
