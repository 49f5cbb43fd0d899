"""Plans, quotas and abuse limits (issue 3): close codes 4004, 4005, 4006 and 4008.

End to end: real server processes and real y-websocket providers in Node
(tests/node/limits.mjs runs a scenario step by step; tests/node/limits-flood.mjs floods
raw handshakes). Across processes: two servers sharing a real Redis (the `redis_url`
fixture), driven by raw WebSocket clients so a connection can outlive a Node process
while its server is killed. Unit tests for the backends (memory and Redis), the
message budget, the client IP and the settings.

Waits are bounded waits for behaviour (a count reaching a value, a lease expiring);
nothing asserts how fast something is.
"""

import json
import logging
import struct
import time
import urllib.error
import urllib.request

import pytest
import redis as redis_lib
import websocket
from conftest import OTHER_SECRET, ROOT, base_config, free_port, make_token, run_node

from wsserver.errors import ConfigError, ConnectionLimit, DocumentLimit, RateLimited, UserLimit
from wsserver.limits import build_quota, storages
from wsserver.limits.backends import Lease, MemoryQuota
from wsserver.limits.clientip import client_ip, rate_key, trust_proxies
from wsserver.limits.gates import RateLimitGate
from wsserver.limits.ops import MessageBudget
from wsserver.limits.plans import Limits, validate_plans, validate_rate_limit
from wsserver.limits.redis_backend import PREFIX, RedisQuota
from wsserver.limits.refusals import Refusals
from wsserver.settings import Config

REDIS_DB = 7  # the limits tests' own database on the session's redis-server


# --- helpers ------------------------------------------------------------------------


def plan_config(tmp_path, plans, apps=(("acme", "editor", "p"),), rate_limit=None, **overrides):
    """base_config with `plans`, each (tenant, app, plan) assigned, and `rate_limit`."""
    config = base_config(tmp_path, **overrides)
    config["plans"] = plans
    for tenant, app, plan in apps:
        config["auth"]["tenants"][tenant]["apps"][app] = {"plan": plan}
    if rate_limit is not None:
        config["rate_limit"] = rate_limit
    return config


def scenario(*steps, timeout=60):
    out = run_node(
        "limits.mjs",
        json.dumps({"steps": list(steps), "timeout": timeout * 1000}),
        timeout=timeout + 30,
    )
    return out["results"]


def opens(results):
    """[(id, 'synced' or the close code)] of the scenario's open steps, in order."""
    return [
        (r["id"], "synced" if r["status"] == "synced" else r["code"])
        for r in results
        if r["op"] == "open"
    ]


def op_open(server, id, doc, token, xff=None):
    step = {"op": "open", "id": id, "url": server.url, "doc": doc, "token": token}
    if xff:
        step["xff"] = xff
    return step


def op_close(id):
    return {"op": "close", "id": id}


def op_settle(server, count):
    """Wait until the server has finished (and released) all but `count` connections."""
    return {"op": "waitConnections", "http": server.http, "count": count}


def healthz(server):
    with urllib.request.urlopen(server.http + "/healthz", timeout=10) as response:
        return json.load(response)


def wait_for(predicate, timeout, label, every=0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {label}")
        time.sleep(every)


def connect(server, doc, token, xff=None):
    """A raw WebSocket client: (ws, None) once the server has sent sync step 1 (admitted),
    or (None, close code) when the handshake was refused."""
    header = [f"X-Forwarded-For: {xff}"] if xff else []
    ws = websocket.create_connection(
        f"{server.url}/{doc}", subprotocols=["access_token", token], header=header, timeout=10
    )
    opcode, data = ws.recv_data(control_frame=True)
    if opcode == websocket.ABNF.OPCODE_CLOSE:
        ws.close()
        return None, struct.unpack("!H", data[:2])[0]
    assert data[:2] == b"\x00\x00", "the first message of an admitted connection is sync step 1"
    return ws, None


def close_code_of(server, doc, token, xff=None):
    ws, code = connect(server, doc, token, xff)
    if ws is not None:
        ws.close()
        return "open"
    return code


@pytest.fixture
def redis_db(redis_url):
    """The session's Redis, database REDIS_DB, emptied for this test."""
    url = redis_url.rsplit("/", 1)[0] + f"/{REDIS_DB}"
    client = redis_lib.Redis.from_url(url)
    client.flushdb()
    yield url
    client.close()


# --- 4004, 4005, 4008 with the real provider -----------------------------------------


def test_connection_limit_4004(tmp_path, start_server):
    server = start_server(config=plan_config(tmp_path, {"p": {"max_connections": 2}}))
    alice = make_token(sub="alice")
    results = scenario(
        op_open(server, "a", "d1", alice),
        op_open(server, "b", "d2", make_token(sub="bob")),
        op_open(server, "c", "d3", make_token(sub="carol")),  # the 3rd: refused
        # Other apps have their own counts: acme/notes (no plan), globex/editor.
        op_open(server, "notes", "d1", make_token(app="notes", sub="alice")),
        op_open(
            server,
            "globex",
            "d1",
            make_token(tenant="globex", kid="g1", secret=OTHER_SECRET, sub="alice"),
        ),
        op_close("a"),
        op_settle(server, 3),
        op_open(server, "d", "d3", make_token(sub="carol")),  # a's share is back
        op_open(server, "e", "d4", alice),  # full again
    )
    assert opens(results) == [
        ("a", "synced"),
        ("b", "synced"),
        ("c", 4004),
        ("notes", "synced"),
        ("globex", "synced"),
        ("d", "synced"),
        ("e", 4004),
    ]
    assert [r["reason"] for r in results if r.get("code") == 4004] == [
        "connection limit reached"
    ] * 2
    assert healthz(server)["refused"] == {"4004": 2}
    log = server.log()
    assert log.count("refused 4004") == 2
    assert "refused 4004 connection limit reached: app=acme/editor ip=127.0.0.1" in log
    assert "closing" not in log.split("refused 4004")[1].split("\n")[0]  # logged once
    assert alice not in log


def test_document_limit_4005(tmp_path, start_server):
    server = start_server(config=plan_config(tmp_path, {"p": {"max_documents": 2}}))
    token = make_token(sub="alice")
    results = scenario(
        op_open(server, "a", "d1", token),
        op_open(server, "b", "d2", token),
        op_open(server, "c", "d3", token),  # a 3rd document: refused
        op_open(server, "d", "d1", token),  # an active document: never refused by 4005
        op_close("a"),
        op_settle(server, 2),
        op_open(server, "e", "d3", token),  # d1 is still active through d
        op_close("d"),
        op_settle(server, 1),
        op_open(server, "f", "d3", token),  # d1 is no longer active
    )
    assert opens(results) == [
        ("a", "synced"),
        ("b", "synced"),
        ("c", 4005),
        ("d", "synced"),
        ("e", 4005),
        ("f", "synced"),
    ]
    assert healthz(server)["refused"] == {"4005": 2}
    server.wait_log("refused 4005 document limit reached: app=acme/editor ip=127.0.0.1")


def test_user_limit_4008(tmp_path, start_server):
    server = start_server(config=plan_config(tmp_path, {"p": {"max_users_per_doc": 2}}))
    alice, bob, carol, dave = (make_token(sub=u) for u in ("alice", "bob", "carol", "dave"))
    anonymous = make_token()  # no sub: a user of its own, per connection
    results = scenario(
        op_open(server, "a", "doc", alice),
        op_open(server, "b", "doc", bob),
        op_open(server, "c", "doc", carol),  # a 3rd user: refused
        op_open(server, "a2", "doc", alice),  # alice's second tab: the same user
        op_open(server, "anon", "doc", anonymous),  # no sub: a new user, refused
        op_open(server, "c2", "other", carol),  # the limit is per document
        op_close("b"),
        op_settle(server, 3),
        op_open(server, "c3", "doc", carol),  # bob's place is free
        op_close("a"),
        op_settle(server, 3),
        op_open(server, "d", "doc", dave),  # alice is still there through a2
        op_open(server, "n1", "anon-doc", anonymous),
        op_open(server, "n2", "anon-doc", anonymous),
        op_open(server, "n3", "anon-doc", anonymous),  # three connections, three users
    )
    assert opens(results) == [
        ("a", "synced"),
        ("b", "synced"),
        ("c", 4008),
        ("a2", "synced"),
        ("anon", 4008),
        ("c2", "synced"),
        ("c3", "synced"),
        ("d", 4008),
        ("n1", "synced"),
        ("n2", "synced"),
        ("n3", 4008),
    ]
    assert healthz(server)["refused"] == {"4008": 4}


# --- 4006: handshakes per IP ---------------------------------------------------------


def test_handshake_rate_4006(tmp_path, start_server):
    server = start_server(
        config=plan_config(tmp_path, {}, apps=(), rate_limit={"handshakes_per_ip": "3/3seconds"})
    )
    token = make_token(sub="alice")
    results = scenario(
        op_open(server, "a", "d1", token),
        op_open(server, "b", "d2", token),
        op_open(server, "c", "d3", token),
        op_open(server, "d", "d4", token),  # the 4th within the window: refused
        # Checked before the token is even read: a bad token is refused by the rate too.
        op_open(server, "bad", "d5", "not-a-token"),
        op_close("a"),  # closing frees nothing: the window has to move
        op_settle(server, 2),
        {
            "op": "openRetry",
            "id": "e",
            "url": server.url,
            "doc": "d1",
            "token": token,
            "every": 300,
            "max": 20000,
        },
    )
    assert opens(results) == [
        ("a", "synced"),
        ("b", "synced"),
        ("c", "synced"),
        ("d", 4006),
        ("bad", 4006),
    ]
    assert [r["reason"] for r in results if r.get("code") == 4006] == ["too many handshakes"] * 2
    retry = results[-1]["attempts"]
    assert retry[-1] == "synced", retry  # accepted again once the window moved on
    assert set(retry[:-1]) <= {4006}, retry
    refused = healthz(server)["refused"]
    assert refused == {"4006": 2 + len(retry) - 1}
    server.wait_log("refused 4006 too many handshakes: app=- ip=127.0.0.1 (over 3 per 3 second)")


def test_forwarded_for_is_ignored_unless_trusted(tmp_path, start_server):
    token = make_token(sub="alice")
    # trusted_proxies 0: the header is the client's own text; everyone is 127.0.0.1.
    untrusted = start_server(
        config=plan_config(tmp_path, {}, apps=(), rate_limit={"handshakes_per_ip": "2/minute"})
    )
    results = scenario(
        op_open(untrusted, "a", "d1", token, xff="198.51.100.1"),
        op_open(untrusted, "b", "d2", token, xff="198.51.100.2"),
        op_open(untrusted, "c", "d3", token, xff="198.51.100.3"),
    )
    assert opens(results) == [("a", "synced"), ("b", "synced"), ("c", 4006)]
    untrusted.wait_log("ip=127.0.0.1")
    assert "198.51.100" not in untrusted.log()

    # trusted_proxies 1: the last hop (what our proxy saw) is the client; hops to its left
    # were written by the client and change nothing.
    trusted = start_server(
        config=plan_config(
            tmp_path,
            {},
            apps=(),
            rate_limit={"handshakes_per_ip": "2/minute", "trusted_proxies": 1},
        )
    )
    results = scenario(
        op_open(trusted, "a", "d1", token, xff="203.0.113.5"),
        op_open(trusted, "b", "d2", token, xff="198.51.100.77, 203.0.113.5"),
        op_open(trusted, "c", "d3", token, xff="192.0.2.1, 203.0.113.5"),  # forged: refused
        op_open(trusted, "d", "d4", token, xff="203.0.113.6"),  # another client
        op_open(trusted, "e", "d5", token),  # no header: the socket peer
    )
    assert opens(results) == [
        ("a", "synced"),
        ("b", "synced"),
        ("c", 4006),
        ("d", "synced"),
        ("e", "synced"),
    ]
    trusted.wait_log("refused 4006 too many handshakes: app=- ip=203.0.113.5")


# --- every refusal is counted ---------------------------------------------------------


def refused_code(server, path, token=None):
    """The close code of a raw handshake to `path` (token by subprotocol when given)."""
    protocols = ["access_token", token] if token else None
    ws = websocket.create_connection(server.url + path, subprotocols=protocols, timeout=10)
    opcode, data = ws.recv_data(control_frame=True)
    ws.close()
    assert opcode == websocket.ABNF.OPCODE_CLOSE, "expected a refusal"
    return struct.unpack("!H", data[:2])[0]


def test_every_handshake_refusal_is_counted_in_healthz(tmp_path, start_server):
    server = start_server(config=plan_config(tmp_path, {"p": {"max_connections": 1}}))
    good = make_token(sub="alice")
    held, _ = connect(server, "d1", good)
    codes = [
        refused_code(server, "/d1"),  # no token
        refused_code(server, "/d1", make_token(ttl=-60)),  # expired
        refused_code(server, "/d1", make_token(secret=OTHER_SECRET)),  # bad signature
        refused_code(server, "/d1", make_token(app="nope")),  # unknown app
        refused_code(server, "/.hidden", good),  # bad name
        refused_code(server, "/d2", make_token(sub="bob")),
    ]  # over max_connections
    assert codes == [4001, 4002, 4002, 4003, 4007, 4004]
    # /discovery answers what the handshake would, and counts it the same way.
    request = urllib.request.Request(
        server.http + "/discovery?documentName=.x", headers={"Authorization": f"Bearer {good}"}
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 400
    held.close()
    assert healthz(server)["refused"] == {"4001": 1, "4002": 2, "4003": 1, "4004": 1, "4007": 2}


# --- the token's `limits` claim ------------------------------------------------------


def test_limits_claim_lowers_and_never_raises(tmp_path, start_server):
    server = start_server(
        config=plan_config(tmp_path, {"p": {"max_users_per_doc": 3, "max_connections": 10}})
    )
    results = scenario(
        op_open(server, "a", "doc", make_token(sub="alice")),
        # Lowered to 1 user for this connection: alice is there already.
        op_open(server, "b", "doc", make_token(sub="bob", limits={"max_users_per_doc": 1})),
        op_open(server, "b2", "doc", make_token(sub="bob")),  # the plan's 3 without a claim
        op_open(server, "c", "doc", make_token(sub="carol", limits={"max_users_per_doc": 10})),
        # 3 users: a claim of 10 cannot raise the plan's 3.
        op_open(server, "d", "doc", make_token(sub="dave", limits={"max_users_per_doc": 10})),
        # Lowered connections: 3 open, a claim of 3 refuses the 4th.
        op_open(server, "e", "doc2", make_token(sub="erin", limits={"max_connections": 3})),
        # An app without a plan is unlimited, and a claim still lowers it.
        op_open(server, "f", "doc", make_token(app="notes", limits={"max_connections": 0})),
        # A malformed claim is a bad token, not a way to the plan's higher limits.
        op_open(server, "g", "doc", make_token(sub="gus", limits={"max_users_per_doc": "many"})),
        op_open(server, "h", "doc", make_token(sub="hal", limits={"max_user_per_doc": 1})),
    )
    assert opens(results) == [
        ("a", "synced"),
        ("b", 4008),
        ("b2", "synced"),
        ("c", "synced"),
        ("d", 4008),
        ("e", 4004),
        ("f", 4004),
        ("g", 4002),
        ("h", 4002),
    ]
    reasons = {r["id"]: r["reason"] for r in results if r["op"] == "open" and "reason" in r}
    assert reasons["g"].startswith("invalid limits claim")
    assert reasons["h"] == "invalid limits claim: unknown limit 'max_user_per_doc'"


# --- 4006: messages per connection ---------------------------------------------------


def test_message_rate_close_4006(tmp_path, start_server):
    server = start_server(
        config=plan_config(
            tmp_path,
            {"p": {"max_ops_per_minute": 60}, "big": {"max_ops_per_minute": 6000}},
            apps=(("acme", "editor", "p"), ("acme", "notes", "big")),
        )
    )
    results = scenario(
        op_open(server, "flooder", "doc", make_token(sub="flooder")),
        op_open(server, "typist", "doc", make_token(sub="typist")),
        # 200 updates at once: past the 60-message budget.
        {"op": "edits", "id": "flooder", "count": 200, "settle": 5000},
        # 20 edits, 50 ms apart, on the same plan: well inside it.
        {"op": "edits", "id": "typist", "count": 20, "every": 50, "settle": 1000},
        # A claim lowers the budget of one connection.
        op_open(server, "low", "doc", make_token(app="notes", limits={"max_ops_per_minute": 30})),
        op_open(server, "high", "doc", make_token(app="notes")),
        {"op": "edits", "id": "low", "count": 100, "settle": 5000},
        {"op": "edits", "id": "high", "count": 100, "settle": 1000},
    )
    edits = {r["id"]: r for r in results if r["op"] == "edits"}
    assert edits["flooder"]["status"] == "closed"
    assert (edits["flooder"]["code"], edits["flooder"]["reason"]) == (4006, "too many messages")
    assert edits["typist"]["status"] == "open"
    assert (edits["low"]["status"], edits["low"]["code"]) == ("closed", 4006)
    assert edits["high"]["status"] == "open"
    assert healthz(server)["refused"] == {"4006": 2}
    log = server.log()
    assert (
        "refused 4006 too many messages: app=acme/editor ip=127.0.0.1 "
        "(over 60 messages/minute)" in log
    )
    assert (
        "refused 4006 too many messages: app=acme/notes ip=127.0.0.1 "
        "(over 30 messages/minute)" in log
    )


# --- every close path releases -------------------------------------------------------


def test_every_close_path_releases(tmp_path, start_server):
    server = start_server(config=plan_config(tmp_path, {"p": {"max_connections": 1}}))
    token = make_token(sub="alice")

    def settled():
        return wait_for(lambda: healthz(server)["connections"] == 0, 10, "connections to end")

    # A protocol error (1002): the server closes it.
    ws, _ = connect(server, "doc", token)
    assert close_code_of(server, "doc", token) == 4004
    ws.send_binary(b"\x07\x07\x07")
    opcode, data = ws.recv_data(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE and struct.unpack("!H", data[:2])[0] == 1002
    ws.close()
    settled()
    # A client that vanishes without a close frame.
    ws, _ = connect(server, "doc", token)
    assert ws is not None
    assert close_code_of(server, "doc", token) == 4004
    ws.sock.close()
    settled()
    # A normal close.
    ws, _ = connect(server, "doc", token)
    assert ws is not None
    ws.close()
    settled()
    assert close_code_of(server, "doc", token) == "open"


# --- a flood ---------------------------------------------------------------------------


def test_refused_flood_keeps_serving_other_ips(tmp_path, start_server):
    server = start_server(
        config=plan_config(
            tmp_path,
            {},
            apps=(),
            rate_limit={"handshakes_per_ip": "20/minute", "trusted_proxies": 1},
        )
    )
    result = run_node(
        "limits-flood.mjs",
        json.dumps(
            {
                "port": server.port,
                "count": 2000,
                "concurrency": 50,
                "xff": "203.0.113.66",
                "probe": {
                    "url": server.url,
                    "doc": "probe",
                    "token": make_token(sub="probe"),
                    "xff": "198.51.100.9",
                },
                "probeAfter": 200,
                "timeout": 120000,
            }
        ),
        timeout=150,
    )
    # The flood's first 20 pass the rate (and fail on the missing token); the rest: 4006.
    assert result["codes"] == {"4001": 20, "4006": 1980}
    assert result["errors"] == 0
    probe = result["probe"]
    # The other IP's provider synced and had its edit confirmed while the flood ran.
    assert probe["synced"] and probe["confirmed"], probe
    assert probe["answeredAtConfirm"] < 2000, probe
    assert healthz(server)["refused"] == {"4001": 20, "4006": 1980}  # every refusal counted
    assert healthz(server)["connections"] == 0


# --- across processes, on Redis ------------------------------------------------------


def redis_config(tmp_path, redis_db, name, lease_seconds=3):
    config = plan_config(
        tmp_path,
        {
            "conns": {"max_connections": 2},
            "docs": {"max_documents": 1},
            "users": {"max_users_per_doc": 1},
        },
        apps=(
            ("acme", "editor", "conns"),
            ("acme", "notes", "docs"),
            ("globex", "editor", "users"),
        ),
        rate_limit={"lease_seconds": lease_seconds},
        redis=redis_db,
    )
    config["storage"] = f"sqlite:///{tmp_path}/{name}.sqlite3"
    return config


@pytest.mark.long
def test_limits_hold_across_processes_on_redis(tmp_path, start_server, redis_db):
    s1 = start_server(config=redis_config(tmp_path, redis_db, "s1"))
    s2 = start_server(config=redis_config(tmp_path, redis_db, "s2"))
    observer = RedisQuota(redis_db, heartbeat=False)
    alice, bob = make_token(sub="alice"), make_token(sub="bob")
    held = []

    def hold(server, doc, token):
        ws, code = connect(server, doc, token)
        assert code is None, f"refused with {code}"
        held.append(ws)
        return ws

    # 4004: 2 connections per app, wherever they are.
    a = hold(s1, "d1", alice)
    hold(s2, "d2", bob)
    assert close_code_of(s1, "d3", alice) == 4004
    assert close_code_of(s2, "d3", bob) == 4004
    a.close()
    wait_for(lambda: observer.usage("acme", "editor")["connections"] == 1, 10, "a's release")
    hold(s2, "d3", bob)
    assert close_code_of(s1, "d4", alice) == 4004

    # 4005: one active document for acme/notes; the active one stays open to everyone.
    notes = lambda sub: make_token(app="notes", sub=sub)  # noqa: E731
    hold(s1, "x", notes("alice"))
    assert close_code_of(s2, "y", notes("bob")) == 4005
    hold(s2, "x", notes("bob"))

    # 4008: one user per document for globex/editor; the same user again is fine.
    globex = lambda sub: make_token(tenant="globex", kid="g1", secret=OTHER_SECRET, sub=sub)  # noqa: E731
    hold(s1, "z", globex("alice"))
    assert close_code_of(s2, "z", globex("bob")) == 4008
    hold(s2, "z", globex("alice"))
    assert observer.usage("globex", "editor", "z") == {"connections": 2, "documents": 1, "users": 1}

    # A clean shutdown (SIGTERM) gives back s1's share at once.
    assert observer.usage("acme", "notes") == {"connections": 2, "documents": 1}
    assert s1.stop() == 0
    assert observer.usage("acme", "notes") == {"connections": 1, "documents": 1}
    assert observer.usage("globex", "editor", "z") == {"connections": 1, "documents": 1, "users": 1}
    assert observer.usage("acme", "editor") == {"connections": 2, "documents": 2}
    for ws in held:
        if ws.sock is not None:
            ws.sock.close()


@pytest.mark.long
def test_killed_process_stops_counting_within_lease(tmp_path, start_server, redis_db):
    """A process killed with kill -9 keeps counting until its lease runs out (its last
    renewal + `lease_seconds`, on Redis's clock), and not one handshake longer. Timed on
    Redis's clock against the dead process's own lease, so a loaded box that makes a
    handshake slow changes which branch is checked, never the verdict."""
    lease = 3
    s1 = start_server(config=redis_config(tmp_path, redis_db, "s1", lease_seconds=lease))
    s2 = start_server(config=redis_config(tmp_path, redis_db, "s2", lease_seconds=lease))
    observer = RedisQuota(redis_db, heartbeat=False)
    client = redis_lib.Redis.from_url(redis_db)
    held = [
        connect(s2, "d1", make_token(sub="alice"))[0],
        connect(s2, "d2", make_token(sub="bob"))[0],
    ]
    assert None not in held
    assert close_code_of(s1, "d3", make_token(sub="carol")) == 4004
    dead = instance_holding(client, "d1")

    s2.stop(signal_kill())
    killed_at = redis_ms(client)
    # The dead process can renew no more: its lease expires at this score, at most a
    # lease after its death. (Already reaped, it has no score: the box stalled a lease.)
    expiry = client.zscore(f"{PREFIX}instances", dead)
    assert expiry is None or expiry <= killed_at + lease * 1000, (expiry, killed_at)
    expiry = killed_at if expiry is None else expiry

    def attempt():
        """carol's handshake on s1: (outcome, Redis time before, after, her socket)."""
        before = redis_ms(client)
        ws, code = connect(s1, "d3", make_token(sub="carol"))
        return ("open" if ws is not None else code), before, redis_ms(client), ws

    # Until the lease runs out the dead process's connections still count: an admission
    # that ended before the expiry would have stopped counting them early...
    outcome, before, after, ws = attempt()
    while outcome != "open":
        assert outcome == 4004, outcome
        # ...and from the expiry on they do not: a handshake begun after it is admitted
        # (the acquire reaps the dead lease first).
        assert before < expiry, f"refused {before - expiry} ms after the dead lease expired"
        time.sleep(0.25)
        outcome, before, after, ws = attempt()
    assert after >= expiry, f"admitted {expiry - after} ms before the dead lease expired"
    # Only carol counts: the dead process's share is gone; her close gives hers back.
    assert observer.usage("acme", "editor") == {"connections": 1, "documents": 1}
    ws.close()
    wait_for(
        lambda: observer.usage("acme", "editor") == {"connections": 0, "documents": 0},
        10,
        "carol's release",
    )
    client.close()
    for ws in held:
        if ws.sock is not None:
            ws.sock.close()


def redis_ms(client):
    """Redis's clock in ms: the one the leases are scored on."""
    seconds, micros = client.time()
    return seconds * 1000 + micros // 1000


def instance_holding(client, doc):
    """The quota instance whose journal holds a connection to `doc`."""
    for key in client.scan_iter(f"{PREFIX}j:*"):
        if any(json.loads(lease)[2] == doc for lease in client.hkeys(key)):
            return key.decode()[len(f"{PREFIX}j:") :]
    raise AssertionError(f"no instance holds {doc}")


def test_handshake_rate_shared_on_redis(tmp_path, start_server, redis_db):
    config = lambda name: plan_config(  # noqa: E731
        tmp_path,
        {},
        apps=(),
        redis=redis_db,
        storage=f"sqlite:///{tmp_path}/{name}.sqlite3",
        rate_limit={"handshakes_per_ip": "3/minute"},
    )
    s1, s2 = start_server(config=config("s1")), start_server(config=config("s2"))
    token = make_token(sub="alice")
    assert [
        close_code_of(s1, "d1", token),
        close_code_of(s2, "d1", token),
        close_code_of(s1, "d1", token),
        close_code_of(s2, "d1", token),
        close_code_of(s1, "d1", token),
    ] == ["open", "open", "open", 4006, 4006]
    assert healthz(s1)["refused"] == {"4006": 1} and healthz(s2)["refused"] == {"4006": 1}


def signal_kill():
    import signal

    return signal.SIGKILL


# --- unit: backends ----------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
def backend(request):
    if request.param == "memory":
        yield MemoryQuota()
        return
    url = request.getfixturevalue("redis_db")
    quota = RedisQuota(url, lease_seconds=30, heartbeat=False)
    yield quota
    quota.close()


def lease(doc="doc", user="u:alice", tenant="acme", app="editor"):
    return Lease(tenant, app, doc, user)


def test_backend_connection_rule(backend):
    limits = Limits(max_connections=2)
    first = backend.acquire(lease("d1"), limits)
    backend.acquire(lease("d2", "u:bob"), limits)
    with pytest.raises(ConnectionLimit):
        backend.acquire(lease("d3", "u:carol"), limits)
    assert backend.usage("acme", "editor") == {"connections": 2, "documents": 2}
    # Another app, and the same app name in another tenant, count on their own.
    backend.acquire(lease("d1", app="notes"), limits)
    backend.acquire(lease("d1", tenant="globex"), limits)
    first()
    first()  # a release runs once
    assert backend.usage("acme", "editor") == {"connections": 1, "documents": 1}
    backend.acquire(lease("d3", "u:carol"), limits)
    assert backend.usage("acme", "editor") == {"connections": 2, "documents": 2}


def test_backend_document_rule(backend):
    limits = Limits(max_documents=1)
    one = backend.acquire(lease("d1"), limits)
    with pytest.raises(DocumentLimit):
        backend.acquire(lease("d2"), limits)
    two = backend.acquire(lease("d1", "u:bob"), limits)  # active: never refused by 4005
    one()
    with pytest.raises(DocumentLimit):
        backend.acquire(lease("d2"), limits)
    two()
    backend.acquire(lease("d2"), limits)
    assert backend.usage("acme", "editor") == {"connections": 1, "documents": 1}


def test_backend_user_rule(backend):
    limits = Limits(max_users_per_doc=1)
    tab1 = backend.acquire(lease("d1", "u:alice"), limits)
    backend.acquire(lease("d1", "u:alice"), limits)  # a second tab: the same user
    with pytest.raises(UserLimit):
        backend.acquire(lease("d1", "u:bob"), limits)
    backend.acquire(lease("d2", "u:bob"), limits)  # per document
    assert backend.usage("acme", "editor", "d1") == {"connections": 3, "documents": 2, "users": 1}
    tab1()
    with pytest.raises(UserLimit):
        backend.acquire(lease("d1", "u:bob"), limits)


def test_backend_refusal_leaves_no_trace(backend):
    backend.acquire(lease("d1", "u:alice"), Limits())
    before = backend.usage("acme", "editor", "d1")
    for limits, error in (
        (Limits(max_connections=1), ConnectionLimit),
        (Limits(max_documents=1), DocumentLimit),
        (Limits(max_users_per_doc=1), UserLimit),
    ):
        with pytest.raises(error):
            backend.acquire(lease("d1" if error is UserLimit else "d2", "u:bob"), limits)
        assert backend.usage("acme", "editor", "d1") == before
        assert backend.usage("acme", "editor", "d2") == {
            "connections": 1,
            "documents": 1,
            "users": 0,
        }
    assert dict(backend.held) == {lease("d1", "u:alice"): 1}


def test_backend_unlimited_still_counts(backend):
    release = backend.acquire(lease(), Limits())
    assert backend.usage("acme", "editor", "doc") == {"connections": 1, "documents": 1, "users": 1}
    release()
    assert backend.usage("acme", "editor", "doc") == {"connections": 0, "documents": 0, "users": 0}


# --- unit: Redis leases ----------------------------------------------------------------


def test_redis_dead_instance_is_reaped_after_its_lease(redis_db):
    dead = RedisQuota(redis_db, lease_seconds=1, heartbeat=False)
    alive = RedisQuota(redis_db, lease_seconds=30, heartbeat=False)
    limits = Limits(max_connections=2)
    release_a = dead.acquire(lease("d1"), limits)
    dead.acquire(lease("d2", "u:bob"), limits)
    with pytest.raises(ConnectionLimit):
        alive.acquire(lease("d3", "u:carol"), limits)
    # `dead` stops renewing (as after kill -9): within its lease it stops counting.
    wait_for(lambda: alive.usage("acme", "editor")["connections"] == 0, 10, "the reaping")
    alive.acquire(lease("d3", "u:carol"), limits)
    # A late release from the reaped instance takes nothing from the others.
    release_a()
    assert alive.usage("acme", "editor") == {"connections": 1, "documents": 1}
    alive.close()


def test_redis_reaped_instance_resyncs(redis_db):
    slow = RedisQuota(redis_db, lease_seconds=1, heartbeat=False)
    observer = RedisQuota(redis_db, heartbeat=False)
    slow.acquire(lease("d1"), Limits())
    slow.acquire(lease("d1"), Limits())
    wait_for(lambda: observer.usage("acme", "editor")["connections"] == 0, 10, "the reaping")
    # It was only stalled: its next heartbeat finds it was reaped and writes back its share.
    slow.heartbeat()
    assert observer.usage("acme", "editor", "d1") == {"connections": 2, "documents": 1, "users": 1}
    # So does an acquire that finds it reaped.
    wait_for(lambda: observer.usage("acme", "editor")["connections"] == 0, 10, "the reaping")
    slow.acquire(lease("d2"), Limits())
    assert observer.usage("acme", "editor") == {"connections": 3, "documents": 2}
    slow.close()
    assert observer.usage("acme", "editor") == {"connections": 0, "documents": 0}


def test_redis_unreachable_fails_open_and_resyncs_later(redis_db, caplog):
    port = free_port()  # nothing listens there
    down = RedisQuota(f"redis://127.0.0.1:{port}/0", heartbeat=False)
    with caplog.at_level(logging.ERROR, logger="wsserver.limits.redis_backend"):
        release = down.acquire(lease(), Limits(max_connections=0))
    assert "admitting and resyncing later" in caplog.text
    assert dict(down.held) == {lease(): 1}
    release()
    assert dict(down.held) == {}
    # The same instance once Redis answers: the held share is written on the next heartbeat.
    flaky = RedisQuota(redis_db, heartbeat=False)
    observer = RedisQuota(redis_db, heartbeat=False)
    flaky.client, real = redis_lib.Redis.from_url(f"redis://127.0.0.1:{port}/0"), flaky.client
    for script in ("_acquire_script", "_release_script", "_heartbeat_script", "_resync_script"):
        getattr(flaky, script).registered_client = flaky.client
    flaky.acquire(lease("d1"), Limits())
    assert observer.usage("acme", "editor")["connections"] == 0
    for script in ("_acquire_script", "_release_script", "_heartbeat_script", "_resync_script"):
        getattr(flaky, script).registered_client = real
    flaky.heartbeat()
    assert observer.usage("acme", "editor") == {"connections": 1, "documents": 1}
    flaky.close()


# --- unit: the message budget ------------------------------------------------------------


class Clock:
    """A clock the test moves: `clock.now` seconds."""

    def __init__(self, now=0.0):
        self.now = now

    def __call__(self):
        return self.now


def test_message_budget_burst_then_refill():
    exhausted = []
    clock = Clock()
    budget = MessageBudget(60, exhausted.append, clock=clock)
    for _ in range(60):
        budget.spend()
    with pytest.raises(RateLimited) as refused:
        budget.spend()
    assert refused.value.close_code == 4006
    assert exhausted == [refused.value]
    clock.now = 1.0
    budget.spend()  # 60/minute: one more message each second
    with pytest.raises(RateLimited):
        budget.spend()


def test_message_budget_never_closes_within_n_per_minute():
    clock = Clock()
    budget = MessageBudget(60, clock=clock)
    # Bursts of 60 once a minute, for an hour.
    for minute in range(60):
        clock.now = minute * 60.0
        for _ in range(60):
            budget.spend()
    # Then a steady 60 a minute.
    for i in range(3600):
        clock.now = 3600.0 + i
        budget.spend()


def test_message_budget_closes_sustained_excess():
    clock = Clock()
    budget = MessageBudget(60, clock=clock)
    sent = 0
    with pytest.raises(RateLimited):
        for i in range(10_000):
            clock.now = i * 0.5  # 120 a minute
            budget.spend()
            sent += 1
    # N + N*t/60 messages in t seconds: 2t > 60 + t  ->  closed at t just over 60 s.
    assert 119 <= sent <= 122


# --- unit: client IP ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "peer, header, trusted, expected",
    [
        ("10.0.0.9", None, 0, "10.0.0.9"),
        ("10.0.0.9", "203.0.113.5", 0, "10.0.0.9"),  # untrusted: the header is ignored
        ("10.0.0.9", "203.0.113.5", 1, "203.0.113.5"),
        ("10.0.0.9", "198.51.100.1, 203.0.113.5", 1, "203.0.113.5"),  # forged left hop ignored
        ("10.0.0.9", "198.51.100.1, 203.0.113.5, 10.0.0.2", 2, "203.0.113.5"),
        ("10.0.0.9", "203.0.113.5", 2, "10.0.0.9"),  # fewer hops than proxies: the peer
        ("10.0.0.9", "", 1, "10.0.0.9"),
        ("10.0.0.9", "203.0.113.5:41234", 1, "203.0.113.5"),
        ("10.0.0.9", "[2001:db8::1]:443", 1, "2001:db8::1"),
    ],
)
def test_client_ip(peer, header, trusted, expected):
    environ = {"REMOTE_ADDR": peer}
    if header is not None:
        environ["HTTP_X_FORWARDED_FOR"] = header
    seen = []

    def app(environ, start_response):  # what every part of the server sees
        seen.append(client_ip(environ))
        return []

    trust_proxies(app, trusted)(environ, None)
    assert seen == [expected]


def test_rate_key_groups_ipv6_by_64():
    assert rate_key("203.0.113.5") == "203.0.113.5"
    assert (
        rate_key("2001:db8:1:2:aaaa::1") == rate_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    )
    assert rate_key("::ffff:203.0.113.5") == "203.0.113.5"
    assert rate_key("unknown") == "unknown"


# --- unit: the rate gate and /discovery's use of it --------------------------------------


def test_rate_gate_refuses_with_retry_after():
    refusals = Refusals()
    gate = RateLimitGate("2/minute", "memory://", refusals)
    environ = {"REMOTE_ADDR": "203.0.113.9"}
    gate.check_request(dict(environ))
    gate.check_request(dict(environ))
    with pytest.raises(RateLimited) as refused:
        gate.check_request(dict(environ))
    assert refused.value.http_status == 429
    assert 1 <= refused.value.retry_after <= 60
    assert refused.value.to_json()["retry_after"] == refused.value.retry_after
    assert refusals.counts() == {4006: 1}
    gate.check_request({"REMOTE_ADDR": "203.0.113.10"})  # another IP


def test_rate_gate_refuses_a_flood_without_asking_the_storage_again():
    gate = RateLimitGate("2/2seconds", "memory://", Refusals())
    hits = []
    real_hit = gate.limiter.hit
    gate.limiter.hit = lambda *args, **kwargs: hits.append(args) or real_hit(*args, **kwargs)
    environ = {"REMOTE_ADDR": "203.0.113.9"}
    gate.check_request(dict(environ))
    gate.check_request(dict(environ))
    for _ in range(100):
        with pytest.raises(RateLimited):
            gate.check_request(dict(environ))
    assert len(hits) == 3  # two admitted, the first refusal; the other 99 never asked
    assert gate.refusals.counts() == {4006: 100}
    # Exactly until the window frees a slot: then the storage decides again.
    wait_for(lambda: _passes(gate, environ), 10, "the window to move on", every=0.1)
    assert len(hits) == 4


def _passes(gate, environ):
    try:
        gate.check_request(dict(environ))
    except RateLimited:
        return False
    return True


def test_rate_gate_fails_open_when_its_storage_is_unreachable(caplog):
    gate = RateLimitGate("1/minute", f"redis://127.0.0.1:{free_port()}/0", Refusals())
    with caplog.at_level(logging.ERROR, logger="wsserver.limits.gates"):
        for _ in range(3):
            gate.check_request({"REMOTE_ADDR": "203.0.113.9"})
    assert caplog.text.count("admitting handshakes meanwhile") == 1  # at most one per 10 s


def test_rate_gate_off_by_default():
    gate = RateLimitGate(None, "memory://", Refusals())
    for _ in range(1000):
        gate.check_request({"REMOTE_ADDR": "203.0.113.9"})


# --- unit: settings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "plans, key",
    [
        ({"free": {"max_connections": -1}}, "plans.free.max_connections"),
        ({"free": {"max_documents": "10"}}, "plans.free.max_documents"),
        ({"free": {"max_ops_per_minute": 0}}, "plans.free.max_ops_per_minute"),
        ({"free": {"max_conections": 1}}, "plans.free.max_conections"),
        ({"free": [1]}, "plans.free"),
        ([1], "plans"),
    ],
)
def test_plans_errors_name_the_key(plans, key):
    with pytest.raises(ConfigError) as error:
        validate_plans("plans", plans)
    assert error.value.key == key


def test_plans_values():
    plans = validate_plans(
        "plans", {"free": {"max_connections": 100, "max_documents": None}, "open": None}
    )
    assert plans == {"free": Limits(max_connections=100), "open": Limits()}


@pytest.mark.parametrize(
    "rate_limit, key",
    [
        ({"handshakes_per_ip": "sixty a minute"}, "rate_limit.handshakes_per_ip"),
        ({"trusted_proxies": -1}, "rate_limit.trusted_proxies"),
        ({"trusted_proxies": True}, "rate_limit.trusted_proxies"),
        ({"storage": "memcached://x"}, "rate_limit.storage"),
        ({"lease_seconds": 0.5}, "rate_limit.lease_seconds"),
        ({"lease": 30}, "rate_limit.lease"),
    ],
)
def test_rate_limit_errors_name_the_key(rate_limit, key):
    with pytest.raises(ConfigError) as error:
        validate_rate_limit("rate_limit", rate_limit)
    assert error.value.key == key


def test_unknown_plan_stops_start_up(tmp_path):
    config = plan_config(tmp_path, {"free": {}}, apps=(("acme", "notes", "pro"),))
    with pytest.raises(ConfigError) as error:
        build_quota(Config.from_mapping(config), _authenticator(config))
    assert error.value.key == "auth.tenants.acme.apps.notes.plan"
    assert "pro" in str(error.value)


def test_example_config_loads():
    # With its own secret, as deployed (the development default is refused off loopback).
    config = Config.load(str(ROOT / "config" / "example-limits.yaml"), env={"DEV_SECRET": "s" * 32})
    assert config.plans["free"] == Limits(100, 10, 5, 6000)
    quota = build_quota(config, _authenticator(config.raw))
    assert quota.rate_gate.rates and isinstance(quota.backend, MemoryQuota)


def test_storages():
    def config(rate_storage=None, redis=None):
        return Config.from_mapping(
            base_config(
                "/tmp", rate_limit={"storage": rate_storage} if rate_storage else None, redis=redis
            )
        )

    assert storages(config()) == ("memory://", None)
    assert storages(config(redis="redis://r:6379/1")) == ("redis://r:6379/1", "redis://r:6379/1")
    assert storages(config(rate_storage="redis://q/2")) == ("redis://q/2", "redis://q/2")
    assert storages(config("memory://", "redis://r/1")) == ("memory://", "redis://r/1")


def test_limits_claim_rule():
    plan = Limits(max_connections=10, max_users_per_doc=3)
    assert plan.lowered_by({"max_users_per_doc": 1}) == Limits(10, None, 1, None)
    assert plan.lowered_by({"max_users_per_doc": 9}) == plan
    assert plan.lowered_by({"max_documents": 2}) == Limits(10, 2, 3, None)
    assert plan.lowered_by({}) == plan
    for bad in (
        {"max_users_per_doc": -1},
        {"max_users_per_doc": True},
        {"other": 1},
        [1],
        {"max_ops_per_minute": 0},
    ):
        with pytest.raises(ValueError):
            plan.lowered_by(bad)


def _authenticator(config):
    from wsserver.handshake.auth import Authenticator

    return Authenticator.from_config(config["auth"])


class StallingRedis(redis_lib.Redis):
    """A real Redis client whose next script call waits for `stall` (a gevent Event)
    when one is set: a call in flight as long as the test wants."""

    stall = None

    def evalsha(self, *args, **kwargs):
        stall, self.stall = self.stall, None
        if stall is not None:
            stall.wait()
        return super().evalsha(*args, **kwargs)


def test_redis_release_during_a_resync_does_not_count_an_open_connection_out(redis_url):
    """Two tabs of one user; one closes while a resync waits for an in-flight call: the
    other tab must still be counted once everything has settled."""
    import gevent
    from gevent.event import Event

    client = StallingRedis.from_url(redis_url)
    quota = RedisQuota(redis_url, 30, heartbeat=False, client=client)
    try:
        lease = Lease("race", "app", "doc", "u:alice")
        other = Lease("race", "app", "doc2", "u:bob")
        first = quota.acquire(lease, Limits())
        quota.acquire(lease, Limits())
        client.stall = Event()
        stalled = client.stall
        in_flight = gevent.spawn(quota.acquire, other, Limits())  # another call in flight
        gevent.sleep(0)
        resync = gevent.spawn(quota.resync)  # waits for the call in flight
        gevent.sleep(0)
        closing = gevent.spawn(first)  # tab 1 closes during the resync
        gevent.sleep(0)
        stalled.set()
        gevent.joinall([in_flight, resync, closing], raise_error=True)
        assert quota.usage("race", "app", "doc") == {"connections": 2, "documents": 2, "users": 1}
        assert dict(quota.held) == {lease: 1, other: 1}
    finally:
        quota.close()
