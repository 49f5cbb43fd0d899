"""Interop: the real y-websocket provider (Node: yjs, y-websocket, ws) against a real
`wsserver serve` process.

Every client is a `WebsocketProvider` with `WebSocketPolyfill` (a `ws` subclass that
records what it sees) and `disableBc: true`, so providers of one Node process can only
meet through the server. The Node scripts live in tests/node/ (helpers in lib.mjs); each
takes one JSON argument and prints JSON lines, the last being its result.

Tests that do not stop the server share one (`shared`), each on its own document names.
The quiet-provider soak is in test_soak.py.
"""

import json
import signal
import time
import uuid

import pytest
import yaml
from conftest import (
    NODE_DIR,
    OTHER_SECRET,
    NodeProcess,
    ServerProcess,
    base_config,
    make_token,
    run_node,
)


def room(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def start_own_server(directory, **overrides):
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(base_config(directory, **overrides)))
    return ServerProcess(path).start()


def kill_server(server):
    if server.proc and server.proc.poll() is None:
        server.proc.kill()
        server.proc.wait()


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One server for every test that does not stop it (default config, SQLite)."""
    if not (NODE_DIR / "node_modules" / "y-websocket").is_dir():
        pytest.fail("tests/node has no node_modules: run scripts/test (it runs npm ci)")
    server = start_own_server(tmp_path_factory.mktemp("interop-shared"))
    yield server
    kill_server(server)


def cases(server, *specs, timeout=60):
    """Run handshake cases in parallel in one Node process; {id: result}."""
    return run_node(
        "cases.mjs", json.dumps({"url": server.url, "cases": list(specs)}), timeout=timeout
    )["results"]


def assert_close(result, code):
    close = result["close"]
    assert close is not None, f"{result['id']}: no close event: {result}"
    assert close["code"] == code, f"{result['id']}: expected {code}, got {close}"
    assert close["reason"], f"{result['id']}: close without a reason"
    assert len(close["reason"].encode()) <= 123
    assert not result["synced"], f"{result['id']}: synced although refused"


def assert_ok(result):
    assert result.get("error") is None and result["close"] is None and result["synced"], (
        f"{result['id']}: expected a synced connection: {result}"
    )


# --- sync -----------------------------------------------------------------------------


def test_two_providers_converge_on_concurrent_edits(shared):
    rounds = 15
    r = run_node(
        "converge.mjs",
        json.dumps(
            {"url": shared.url, "token": make_token(), "room": room("converge"), "rounds": rounds}
        ),
    )
    assert r["a"] == r["b"], "the two providers did not converge"
    assert r["late"] == r["a"], "the server's state differs from the providers'"
    text = r["a"]["text"]
    a_tokens = [f"[A{i}]" for i in range(1, rounds + 1)]
    b_tokens = [f"[B{i}]" for i in range(1, rounds + 1)]
    for token in ["<alpha>", "<bravo>", *a_tokens, *b_tokens]:
        assert text.count(token) == 1, f"{token} not exactly once in {text!r}"
    assert len(text) == len("<alpha><bravo>") + sum(map(len, a_tokens + b_tokens))
    # A appended, B prepended: each one's edits keep their order.
    a_pos = [text.index(t) for t in a_tokens]
    b_pos = [text.index(t) for t in b_tokens]
    assert a_pos == sorted(a_pos) and b_pos == sorted(b_pos, reverse=True)
    expected = {f"a{i}": i for i in range(1, rounds + 1)} | {
        f"b{i}": i for i in range(1, rounds + 1)
    }
    shared_value = r["a"]["map"].pop("shared")
    assert shared_value in ("from-a", "from-b")
    assert r["a"]["map"] == expected


def test_late_joiner_gets_full_state(shared):
    r = run_node(
        "late_join.mjs",
        json.dumps({"url": shared.url, "token": make_token(), "room": room("late")}),
    )
    expected = {
        "text": "hello yjs!",
        "map": {
            **{f"k{i}": {"i": i, "even": i % 2 == 0} for i in range(1, 20)},
            "last": "transaction",
        },
        "list": ["one", "three"],
    }
    assert r["writer"] == expected
    assert r["whileConnected"] == expected, "joiner (writer connected) lacks state"
    assert r["afterLeft"] == expected, "joiner (writer gone) lacks state"
    assert r["updatesSent"] > 20  # many separate updates, not one
    # Step 2 holds only what the client lacks: everything for an empty client, next to
    # nothing (the delete set) for one that already has the document.
    sizes = r["step2Sizes"]
    assert sizes["full"][0] > 300, sizes
    assert sizes["known"][0] < 64, sizes


def test_awareness_appears_and_disappears(shared):
    r = run_node(
        "awareness.mjs",
        json.dumps({"url": shared.url, "token": make_token(), "room": room("awareness")}),
    )
    a, b, c = r["aId"], r["bId"], r["cId"]
    assert r["bSaw"] == {"user": {"name": "alice", "color": "#ff0000"}}
    # Exactly the clients: the server has no awareness state of its own.
    assert set(r["bKeys"]) == {a, b}
    assert set(r["cKeys"]) == {a, b, c}
    # A renews its state only every 15 s: C got it from the server when it joined.
    assert r["cSawAfterMs"] < 5000
    # A's socket was cut without a null state: only the server's removal broadcast
    # explains it disappearing before the clients' own 30 s timeout.
    assert r["removedAfterMs"] < 5000, r
    assert r["bKeysAfter"] == [b]
    assert set(r["cKeysAfter"]) == {b, c}
    assert r["bCloses"] == [] and r["cCloses"] == []


# --- restarts -------------------------------------------------------------------------


@pytest.mark.long
@pytest.mark.parametrize("storage", ["sqlite", "postgres"])
def test_sigterm_restart_keeps_document_and_providers_reconnect(start_server, storage, request):
    server = start_server(
        **({"storage": request.getfixturevalue("pg_url")} if storage == "postgres" else {})
    )
    node = NodeProcess(
        "restart_sigterm.mjs",
        {
            "url": server.url,
            "token": make_token(),
            "persistRoom": room("persist"),
            "liveRoom": room("live"),
        },
    )
    try:
        node.wait_phase("ready", 20)
        started = time.monotonic()
        code = server.stop(signal.SIGTERM)
        took = time.monotonic() - started
        assert code == 0, f"exit code {code} after SIGTERM:\n{server.log()}"
        assert took < 10, f"SIGTERM took {took:.1f}s"
        server.restart()
        r = node.result(60)
    finally:
        node.kill()
    for name in ("w", "a", "b"):
        close = r["closes"][name]
        assert close and close["code"] == 1012, f"{name}: {close}"
        assert close["reason"] and len(close["reason"].encode()) <= 123
    # W never reconnected, so what the reader found came from storage.
    assert r["wStatuses"].count("connected") == 1
    assert r["persisted"] == {"text": "written before SIGTERM", "map": {"by": "w"}, "list": []}
    # A and B reconnected by themselves and kept collaborating.
    assert r["aStatuses"].count("connected") >= 2
    assert r["offline"]
    assert (
        r["a"]
        == r["b"]
        == {"text": "A before. A offline. A after.", "map": {"b": "before"}, "list": []}
    )


@pytest.mark.long
@pytest.mark.parametrize("storage", ["sqlite", "postgres"])
@pytest.mark.parametrize(
    "overrides", [{}, {"compact_after_updates": 25}], ids=["log", "compacting"]
)
def test_kill9_keeps_confirmed_edits(start_server, overrides, storage, request):
    if storage == "postgres":
        overrides = dict(overrides, storage=request.getfixturevalue("pg_url"))
    server = start_server(**overrides)
    name = room("kill9")
    count = 60
    node = NodeProcess(
        "kill.mjs", {"url": server.url, "token": make_token(), "room": name, "count": count}
    )
    try:
        ready = node.wait_phase("ready", 20)
        assert server.stop(signal.SIGKILL) == -signal.SIGKILL
        r = node.result(30)
    finally:
        node.kill()
    assert ready["updates"] == 2 * count  # a text insert and a map set each
    assert r["closes"]["w"]["code"] == 1006  # the process died: no close frame
    server.restart()
    read = cases(server, {"id": "read", "room": name, "token": make_token(), "expect": "ok"})[
        "read"
    ]
    assert_ok(read)
    assert read["content"] == ready["content"]
    assert read["content"]["text"] == "".join(f"[{i}]" for i in range(count))
    assert read["content"]["map"] == {f"k{i}": i for i in range(count)}


@pytest.mark.long
@pytest.mark.parametrize("storage", ["sqlite", "postgres"])
def test_kill9_while_writing_loses_no_echoed_update(start_server, storage, request):
    overrides = {"compact_after_updates": 30}
    if storage == "postgres":
        overrides["storage"] = request.getfixturevalue("pg_url")
    server = start_server(**overrides)
    name = room("kill9-writing")
    node = NodeProcess(
        "kill_writing.mjs",
        {"url": server.url, "token": make_token(), "room": name, "intervalMs": 5},
    )
    try:
        node.wait_phase("writing", 20)
        time.sleep(1.5)
        assert server.stop(signal.SIGKILL) == -signal.SIGKILL
        r = node.result(30)
    finally:
        node.kill()
    assert r["close"]["code"] == 1006
    assert len(r["confirmed"]) > 50, r["sent"]
    server.restart()
    read = cases(server, {"id": "read", "room": name, "token": make_token(), "expect": "ok"})[
        "read"
    ]
    assert_ok(read)
    stored = read["content"]["map"]
    lost = [i for i in r["confirmed"] if stored.get(f"k{i}") != i]
    assert lost == [], f"{len(lost)} echoed updates lost, e.g. {lost[:5]}"


# --- auth -----------------------------------------------------------------------------


def test_each_auth_method_works(shared):
    tokens = {
        via: make_token(sub=f"user-{via}-{uuid.uuid4().hex}")
        for via in ("protocol", "query", "header")
    }
    rooms = {via: room(f"auth-{via}") for via in tokens}
    # Each method writes to its own document...
    written = cases(
        shared,
        *(
            {
                "id": via,
                "room": rooms[via],
                "token": tokens[via],
                "via": via,
                "expect": "ok",
                "write": f"via {via}",
            }
            for via in tokens
        ),
    )
    for via, result in written.items():
        assert_ok(result)
        assert result["content"]["text"] == f"via {via}"
    assert written["protocol"]["upgradeProtocol"] == "access_token"
    assert written["protocol"]["protocol"] == "access_token"
    # ...and another method reads it: all three reach the same tenant/app namespace.
    readers = {"protocol": "header", "query": "protocol", "header": "query"}
    read = cases(
        shared,
        *(
            {
                "id": via,
                "room": rooms[via],
                "token": make_token(),
                "via": readers[via],
                "expect": "ok",
            }
            for via in tokens
        ),
    )
    for via, result in read.items():
        assert_ok(result)
        assert result["content"] == {
            "text": f"via {via}",
            "map": {"writer": f"via {via}"},
            "list": [],
        }
    assert read["query"]["upgradeProtocol"] == "access_token"  # read via subprotocol
    # A token is never logged, wherever it came from.
    log = shared.log()
    for via, token in tokens.items():
        assert token not in log, f"the {via} token appears in the server log"
        assert token.split(".")[2] not in log


def test_subprotocol_selection_is_exact(shared):
    token = make_token()
    name = room("subprotocol")
    r = cases(
        shared,
        {"id": "exact", "room": name, "raw": True, "protocols": ["access_token", token]},
        {
            "id": "bearer",
            "room": name,
            "raw": True,
            "headers": {"Authorization": f"Bearer {token}"},
        },
        {"id": "lookalike", "room": name, "raw": True, "protocols": ["not_access_token_v2", token]},
        {"id": "prefix", "room": name, "raw": True, "protocols": ["access_token_v2", token]},
    )
    exact = r["exact"]
    assert exact["upgradeProtocol"] == "access_token" and exact["protocol"] == "access_token"
    assert exact["firstMessage"] == [0, 0], exact  # sync step 1 from the server
    bearer = r["bearer"]
    assert bearer["upgradeProtocol"] is None and bearer["firstMessage"] == [0, 0], bearer
    for case in ("lookalike", "prefix"):
        # 'access_token' is a substring of what was offered, but was not offered itself.
        assert r[case]["upgradeProtocol"] is None, r[case]


def test_scp_claim_is_accepted(shared):
    token = make_token(scope=None, scp="openid WireSocket.API")
    r = cases(shared, {"id": "scp", "room": room("scp"), "token": token, "expect": "ok"})
    assert_ok(r["scp"])


# --- close codes ----------------------------------------------------------------------


def test_close_codes_seen_by_provider(shared):
    now = int(time.time())
    good = make_token()
    name = room("codes")
    long_ok = (name + "-" + "x" * 255)[:255]
    specs = {
        # 4001: no token at all
        "no_token": (4001, {"via": "none"}),
        "empty_query_token": (4001, {"via": "none", "params": {"token": ""}}),
        # 4002: every way a token can be bad
        "expired": (4002, {"token": make_token(ttl=-60)}),
        "not_yet_valid": (4002, {"token": make_token(nbf=now + 600)}),
        "malformed": (4002, {"token": "not-a-jwt"}),
        "malformed_segments": (4002, {"token": "aaaa.bbbb.cccc"}),
        "bad_signature": (4002, {"token": make_token(secret=OTHER_SECRET)}),
        "unknown_kid": (4002, {"token": make_token(kid="nope")}),
        "wrong_audience": (4002, {"token": make_token(aud="Other.API")}),
        "missing_scope": (4002, {"token": make_token(scope="read write")}),
        "no_exp": (4002, {"token": make_token(exp=None)}),
        "alg_none": (4002, {"token": make_token(secret=None, alg="none")}),
        "bad_query_token": (4002, {"token": make_token(ttl=-60), "via": "query"}),
        "bad_header_token": (4002, {"token": make_token(secret=OTHER_SECRET), "via": "header"}),
        # a tenant that is not configured: no key can verify the token (4002, not 4003,
        # so that nobody can enumerate tenants)
        "unknown_tenant": (4002, {"token": make_token(tenant="initech")}),
        # 4003: valid token, but not for anything configured / not from an allowed origin
        "unknown_app": (4003, {"token": make_token(app="nope")}),
        "locked_bad_origin": (
            4003,
            {"token": make_token(app="locked"), "origin": "https://evil.example"},
        ),
        "locked_no_origin": (4003, {"token": make_token(app="locked")}),
        # 4007: document names
        "name_256": (4007, {"room": "a" * 256}),
        "name_dot": (4007, {"room": ".hidden"}),
        "name_space": (4007, {"room": "a%20b"}),
        "name_unicode": (4007, {"room": "caf\u00e9"}),
        "name_slash": (4007, {"room": "a/b"}),
        "name_empty": (4007, {"room": ""}),
        # order: name before token, token before tenant/app
        "bad_name_no_token": (4007, {"room": ".hidden", "via": "none"}),
        "bad_name_expired": (4007, {"room": "a b", "token": make_token(ttl=-60)}),
        "expired_unknown_app": (4002, {"token": make_token(app="nope", ttl=-60)}),
        "expired_unknown_tenant": (4002, {"token": make_token(tenant="initech", ttl=-60)}),
        "bad_signature_unknown_app": (4002, {"token": make_token(app="nope", secret=OTHER_SECRET)}),
        "bad_audience_bad_origin": (
            4002,
            {"token": make_token(app="locked", aud="x"), "origin": "https://evil.example"},
        ),
    }
    oks = {
        "locked_good_origin": {
            "token": make_token(app="locked"),
            "origin": "https://editor.acme.com",
        },
        "name_255": {"room": long_ok},
        "name_two_uuids": {"room": f"{uuid.uuid4()}_{uuid.uuid4()}"},
        "name_all_chars": {"room": f"A.b_c-9.{uuid.uuid4().hex[:8]}"},
    }
    run = []
    for cid, (_, extra) in specs.items():
        run.append({"id": cid, "room": name, "token": good, "expect": "close", **extra})
    for cid, extra in oks.items():
        run.append({"id": cid, "room": name, "token": good, "expect": "ok", **extra})
    for k in run:
        if k.get("via") == "none":
            k.pop("token")
    results = cases(shared, *run)
    codes = {cid: (results[cid]["close"] or {}).get("code") for cid in specs}
    assert codes == {cid: code for cid, (code, _) in specs.items()}, results
    for cid, (code, _) in specs.items():
        assert_close(results[cid], code)
    for word, cid in [
        ("expired", "expired"),
        ("audience", "wrong_audience"),
        ("scope", "missing_scope"),
        ("signature", "bad_signature"),
        ("signature", "unknown_tenant"),
    ]:
        assert word in results[cid]["close"]["reason"].lower(), results[cid]
    for cid in oks:
        assert_ok(results[cid])


def test_oversize_update_closes_1009_and_others_carry_on(start_server):
    server = start_server(max_message_size=4096)
    r = run_node(
        "oversize.mjs",
        json.dumps(
            {"url": server.url, "token": make_token(), "room": room("oversize"), "size": 20000}
        ),
    )
    assert r["bigClose"]["code"] == 1009, r
    assert r["bigClose"]["reason"] and len(r["bigClose"]["reason"].encode()) <= 123
    assert r["otherCloses"] == [] and r["otherConnected"], r
    expected = {"text": "small", "map": {"after": True}, "list": []}
    assert r["other"] == expected and r["reader"] == expected, r


# --- tenant isolation -----------------------------------------------------------------


def test_tenant_isolation(shared):
    name = room("same-name")
    namespaces = {
        "acme_editor": make_token(app="editor"),
        "acme_notes": make_token(app="notes"),
        "globex_editor": make_token(tenant="globex", app="editor", secret=OTHER_SECRET, kid="g1"),
    }
    written = cases(
        shared,
        *(
            {"id": ns, "room": name, "token": token, "expect": "ok", "write": f"data of {ns}"}
            for ns, token in namespaces.items()
        ),
    )
    for ns, result in written.items():
        assert_ok(result)
        assert result["content"]["text"] == f"data of {ns}", result
    read = cases(
        shared,
        *(
            {"id": ns, "room": name, "token": token, "expect": "ok"}
            for ns, token in namespaces.items()
        ),
    )
    for ns, result in read.items():
        assert_ok(result)
        assert result["content"] == {
            "text": f"data of {ns}",
            "map": {"writer": f"data of {ns}"},
            "list": [],
        }, result


# --- plain HTTP -----------------------------------------------------------------------


def test_http_get_document_426_and_healthz(start_app):
    # Plain HTTP needs no socket: the app itself, through Flask's test client (the real
    # server's HTTP path is exercised by every test that reads /healthz from a server).
    node = start_app()
    status, headers, body = node.request(f"/{room('http')}")
    assert status == 426
    assert headers["Content-Type"] == "application/json"
    assert headers["Upgrade"] == "websocket"
    assert body.get("error") and body["code"] == 426
    status, headers, body = node.request("/healthz")
    assert status == 200
    assert body.get("status") == "ok"
    assert (body["rooms"], body["connections"], body["refused"]) == (0, 0, {})  # a new app
    status, _, body = node.request("/some-doc", method="POST")
    assert status == 405 and body == {"error": "method not allowed", "code": 405}
