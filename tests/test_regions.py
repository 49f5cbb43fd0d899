"""Regions (issue 4): the region map in the config, the global document registry, the
4009 redirect and GET /discovery.

Two or three real `wsserver serve` processes of different regions run on loopback with
fixed ports (their `regions` map names each other's real URLs) and share one storage
file, hence the embedded registry; the `shared_registry` tests run again with every
node on one real Redis, and with documents and registry in one real Postgres.
Clients are real y-websocket providers (tests/node/regions_sync.mjs follows redirects
the way docs/regions.md shows) and raw WebSocket clients that read the first frame: a
sync message means accepted, a close frame gives the code and reason.
"""

import json
import signal
import struct
import threading
import time
import urllib.error
import urllib.request
import uuid
from urllib.parse import quote

import pytest
import websocket
from conftest import ROOT, AppNode, base_config, free_port, make_token, run_node

from wsserver.documents import DocKey
from wsserver.errors import ConfigError
from wsserver.regions.map import MAX_BASE_URL_BYTES, RegionMap
from wsserver.settings import Config

REGIONS = ("eu", "us", "ap")
# Short timings so moves happen within the tests; each test says what it relies on.
FAST = {"release_after_seconds": 0.5, "ttl_seconds": 2.0, "heartbeat_seconds": 0.3}


def unique(prefix="doc"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(params=["embedded", "redis", "postgres"])
def shared_registry(request):
    """Settings every node is given: {} (the nodes share the embedded registry of their
    common SQLite file), a `redis` URL, or a Postgres `storage` (documents and registry
    in one database)."""
    if request.param == "redis":
        return {"redis": request.getfixturevalue("redis_url")}
    if request.param == "postgres":
        return {"storage": request.getfixturevalue("pg_url")}
    return {}


def start_nodes(
    start_server,
    tmp_path,
    count=2,
    shared=None,
    registry=FAST,
    per_node=None,
    start_app=None,
    in_process=(),
    **overrides,
):
    """`count` nodes of regions eu, us, ap on fixed free ports, one storage (the SQLite
    file, unless `shared` names another); `per_node` maps a region to settings for that
    node only. The regions in `in_process` are built with `start_app` (an AppNode: plain
    HTTP only, through the test client) instead of being started as servers."""
    names = REGIONS[:count]
    ports = [free_port() for _ in names]
    regions = {name: f"ws://127.0.0.1:{port}" for name, port in zip(names, ports)}
    nodes = []
    for name, port in zip(names, ports):
        config = base_config(
            tmp_path,
            region=name,
            regions=regions,
            registry=registry,
            **overrides,
            **(per_node or {}).get(name, {}),
        )
        config.update(shared or {})
        if name in in_process:
            node = start_app(config=config)
        else:
            node = start_server(config=config, port=port)
        assert node.url == regions[name]
        node.region = name
        nodes.append(node)
    return nodes


class Outcome:
    def __init__(self, accepted, code=None, reason=None, ws=None):
        self.accepted, self.code, self.reason, self.ws = accepted, code, reason, ws

    def __repr__(self):
        return f"Outcome(accepted={self.accepted}, code={self.code}, reason={self.reason!r})"

    def close(self):
        if self.ws is not None:
            self.ws.close()


def open_ws(url, name, token, timeout=10):
    """Open url/name; Outcome(accepted=True, ws=...) when the server starts syncing, or
    Outcome(False, code, reason) when its first frame is a close."""
    ws = websocket.create_connection(f"{url}/{name}?token={token}", timeout=timeout)
    frame = ws.recv_frame()
    if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
        code = struct.unpack("!H", frame.data[:2])[0]
        reason = frame.data[2:].decode("utf-8")
        ws.shutdown()
        return Outcome(False, code, reason)
    assert frame.opcode == websocket.ABNF.OPCODE_BINARY
    assert frame.data[:2] == b"\x00\x00"  # sync step 1: the server accepted and syncs
    return Outcome(True, ws=ws)


def http(node, path, method="GET", headers=None):
    """(status, headers, parsed JSON body or None), from a server or an AppNode."""
    if isinstance(node, AppNode):
        return node.request(path, method, headers)
    request = urllib.request.Request(node.http + path, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, head, body = response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        status, head, body = e.code, e.headers, e.read()
    return status, head, (json.loads(body) if body else None)


def discover(node, name, token=None, headers=None, via_query=False):
    headers = dict(headers or {})
    path = f"/discovery?documentName={quote(name)}"
    if token and via_query:
        path += f"&token={token}"
    elif token:
        headers["Authorization"] = f"Bearer {token}"
    return http(node, path, headers=headers)


def where(node, name, token):
    status, _, body = discover(node, name, token)
    assert status == 200, body
    return body


def wait_released(node, name, token, timeout=15):
    """Wait until no region hosts `name`; return the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if where(node, name, token)["isNew"]:
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"{name} still live after {timeout}s: {where(node, name, token)}")


def sync(name, token, urls):
    return run_node("regions_sync.mjs", json.dumps({"doc": name, "token": token, "urls": urls}))


def stored_text(tmp_path, name, tenant="acme", app="editor", shared=None):
    """The Y.Text "t" of a document as the nodes' shared storage holds it now."""
    from pycrdt import Doc, Text

    from wsserver.documents.storage import open_store

    store = open_store((shared or {}).get("storage") or base_config(tmp_path)["storage"])
    try:
        updates = store.load(DocKey(tenant, app, name)).updates
    finally:
        store.close()
    doc = Doc()
    for update in updates:
        doc.apply_update(update)
    return str(doc.get("t", type=Text))


def redirect_to(node, name):
    return {"code": 4009, "reason": f"REDIRECT:{node.url}/{name}"}


def assert_converged(result):
    texts = result["texts"]
    assert all(text == texts[0] for text in texts), texts
    for tag in result["tags"]:
        assert tag in texts[0]
    return texts[0]


# --- a live document redirects, and the redirected provider syncs ----------------------


def test_live_document_redirects_to_its_region_and_providers_sync(
    start_server, tmp_path, shared_registry
):
    eu, us = start_nodes(
        start_server,
        tmp_path,
        shared=shared_registry,
        registry=dict(FAST, release_after_seconds=20),
    )
    name, token = unique(), make_token()

    # Provider 0 on eu makes the document live there; provider 1, sent to us, gets 4009
    # with eu's URL, follows it and syncs with provider 0.
    result = sync(name, token, [eu.url, us.url])
    assert result["closes"][0] == []
    assert result["closes"][1][0] == redirect_to(eu, name)
    assert result["finalUrls"] == [eu.url, eu.url]
    assert_converged(result)

    # Still live in eu (release_after 20 s): discovery on either node says so.
    expected = {"region": "eu", "url": f"{eu.url}/{name}", "isNew": False, "access": "write"}
    assert where(us, name, token) == expected
    assert where(eu, name, token) == expected
    refused = open_ws(us.url, name, token)
    assert (refused.accepted, refused.code, refused.reason) == (
        False,
        4009,
        f"REDIRECT:{eu.url}/{name}",
    )
    accepted = open_ws(eu.url, name, token)
    assert accepted.accepted
    accepted.close()
    # The same name in another app is another document: free in us.
    other_app = open_ws(us.url, name, make_token(app="notes"))
    assert other_app.accepted
    other_app.close()


# --- documents move between regions, and their content with them ------------------------


@pytest.mark.long
def test_documents_move_between_three_regions_with_their_content(
    start_server, tmp_path, shared_registry
):
    # unload_after 60: only the release's eviction drops a room, so a region that kept
    # a stale copy would show it when the document comes back.
    eu, us, ap = start_nodes(
        start_server, tmp_path, count=3, shared=shared_registry, unload_after=60
    )
    name, token = unique(), make_token()

    first = sync(name, token, [eu.url, us.url, ap.url])
    assert first["initialText"] == ""
    assert first["closes"][0] == []
    assert first["closes"][1][0] == redirect_to(eu, name)
    assert first["closes"][2][0] == redirect_to(eu, name)
    assert first["finalUrls"] == [eu.url] * 3
    text = assert_converged(first)

    # Every client left: after release_after, any region can take it.
    wait_released(us, name, token)
    second = sync(name, token, [ap.url, eu.url])
    assert second["closes"][0] == []
    assert second["initialText"] == text  # eu -> ap: nothing lost
    assert second["closes"][1][0] == redirect_to(ap, name)  # and eu now redirects
    text = assert_converged(second)

    wait_released(eu, name, token)
    third = sync(name, token, [eu.url, us.url])
    assert third["closes"][0] == []
    # Back in eu, loaded from storage: ap's edits are there (a stale room would lack them).
    assert third["initialText"] == text
    assert third["closes"][1][0] == redirect_to(eu, name)
    text = assert_converged(third)

    wait_released(ap, name, token)
    fourth = sync(name, token, [us.url])
    assert fourth["closes"][0] == []
    assert fourth["initialText"] == text
    assert where(eu, name, token)["region"] == "us"


@pytest.mark.long
def test_release_waits_release_after_seconds(start_server, tmp_path):
    eu, us = start_nodes(start_server, tmp_path, registry=dict(FAST, release_after_seconds=3))
    name, token = unique(), make_token()
    held = open_ws(eu.url, name, token)
    assert held.accepted
    held.close()
    time.sleep(1.5)
    assert where(us, name, token)["region"] == "eu"  # kept for release_after
    refused = open_ws(us.url, name, token)
    assert refused.code == 4009
    took = wait_released(us, name, token)
    assert took < 4.0
    assert open_ws(us.url, name, token).accepted


# --- pins ------------------------------------------------------------------------------


def test_pins_redirect_even_when_the_document_is_not_live(start_server, tmp_path):
    pins = [{"tenant": "acme", "app": "editor", "documents": "gdpr-*", "region": "eu"}]
    eu, us = start_nodes(start_server, tmp_path, pins=pins)
    token = make_token()
    pinned = unique("gdpr")

    assert where(us, pinned, token) == {
        "region": "eu",
        "url": f"{eu.url}/{pinned}",
        "isNew": True,
        "access": "write",
    }
    refused = open_ws(us.url, pinned, token)
    assert (refused.code, refused.reason) == (4009, f"REDIRECT:{eu.url}/{pinned}")
    assert where(us, pinned, token)["isNew"] is True  # a refusal claims nothing

    result = sync(pinned, token, [us.url])
    assert result["closes"][0][0] == redirect_to(eu, pinned)
    assert result["finalUrls"] == [eu.url]
    assert where(us, pinned, token)["isNew"] is False

    # Not pinned: another name, or the same name in another app.
    free = unique("plain")
    assert where(us, free, token) == {
        "region": "us",
        "url": f"{us.url}/{free}",
        "isNew": True,
        "access": "write",
    }
    assert where(eu, free, token)["region"] == "eu"  # the answering node's region
    other_app = open_ws(us.url, unique("gdpr"), make_token(app="notes"))
    assert other_app.accepted
    other_app.close()


# --- races -------------------------------------------------------------------------------


def test_two_regions_racing_for_new_documents_end_with_one_owner(
    start_server, tmp_path, shared_registry
):
    eu, us = start_nodes(
        start_server,
        tmp_path,
        shared=shared_registry,
        registry=dict(FAST, release_after_seconds=30),
    )
    token = make_token()
    names = [unique("race") for _ in range(25)]
    wins = {"eu": 0, "us": 0}
    for name in names:
        barrier = threading.Barrier(2)
        outcomes = {}

        def attempt(node, barrier=barrier, outcomes=outcomes, name=name):
            barrier.wait()
            outcomes[node.region] = open_ws(node.url, name, token)

        threads = [threading.Thread(target=attempt, args=(node,)) for node in (eu, us)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        accepted = [r for r, o in outcomes.items() if o.accepted]
        assert len(accepted) == 1, (name, outcomes)
        owner = eu if accepted[0] == "eu" else us
        loser = us if owner is eu else eu
        assert (outcomes[loser.region].code, outcomes[loser.region].reason) == (
            4009,
            f"REDIRECT:{owner.url}/{name}",
        )
        assert where(eu, name, token)["region"] == owner.region
        assert where(us, name, token)["region"] == owner.region
        wins[owner.region] += 1
        outcomes[owner.region].close()
    assert sum(wins.values()) == len(names)


# --- a killed node, and a clean shutdown ----------------------------------------------------


@pytest.mark.long
def test_killed_nodes_claims_expire_within_the_ttl(start_server, tmp_path, shared_registry):
    ttl = FAST["ttl_seconds"]
    eu, us = start_nodes(
        start_server,
        tmp_path,
        shared=shared_registry,
        registry=dict(FAST, release_after_seconds=30),
    )
    name, token = unique(), make_token()
    first = sync(name, token, [eu.url])
    text = assert_converged(first)
    held = open_ws(eu.url, name, token)
    assert held.accepted

    eu.stop(signal.SIGKILL)
    killed = time.monotonic()
    assert open_ws(us.url, name, token).code == 4009  # the claim outlives the process...
    while True:  # ...but not its TTL
        outcome = open_ws(us.url, name, token)
        if outcome.accepted:
            break
        assert outcome.code == 4009
        assert time.monotonic() - killed < ttl + 1.5, "claim of a killed node did not expire"
        time.sleep(0.05)
    took = time.monotonic() - killed
    assert took <= ttl + 1.0
    outcome.close()
    moved = sync(name, token, [us.url])
    assert moved["closes"][0] == []
    assert moved["initialText"] == text  # nothing lost to the kill


@pytest.mark.long
def test_a_node_cut_off_longer_than_the_ttl_hands_its_connections_over(
    start_server, tmp_path, shared_registry
):
    ttl = FAST["ttl_seconds"]
    # us folds every update into its snapshot at once while eu keeps its log: a snapshot
    # of eu's stale copy written after the loss would visibly drop us's edits.
    eu, us = start_nodes(
        start_server,
        tmp_path,
        shared=shared_registry,
        registry=dict(FAST, release_after_seconds=30),
        per_node={"us": {"compact_after_updates": 1}},
    )
    name, token = unique(), make_token()
    text = assert_converged(sync(name, token, [eu.url]))
    held = open_ws(eu.url, name, token)
    assert held.accepted

    eu.proc.send_signal(signal.SIGSTOP)  # frozen: no heartbeat, its claim expires
    try:
        time.sleep(ttl + 0.5)
        moved = sync(name, token, [us.url])  # us takes the document over
        assert moved["closes"][0] == []
        assert moved["initialText"] == text
    finally:
        eu.proc.send_signal(signal.SIGCONT)
    # Back, eu finds its claim lost and sends its client to us.
    held.ws.settimeout(10)
    while True:
        frame = held.ws.recv_frame()
        if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
            break
    assert struct.unpack("!H", frame.data[:2])[0] == 4009
    assert frame.data[2:].decode() == f"REDIRECT:{us.url}/{name}"
    # A Redis call eu had in flight when it was frozen times out as it thaws (its clock
    # ran on), so its registry may answer 1013 for one fail-fast window (0.5 s) first.
    deadline = time.monotonic() + 3
    while (found := discover(eu, name, token))[0] == 503 and time.monotonic() < deadline:
        assert found[2]["code"] == 1013, found
        time.sleep(0.1)
    assert found[0] == 200 and found[2]["region"] == "us", found
    deadline = time.monotonic() + 10
    while True:  # 1013 while eu is still dropping its copy, then a redirect
        refused = open_ws(eu.url, name, token)
        if refused.code == 4009 or time.monotonic() > deadline:
            break
        assert refused.code == 1013
        time.sleep(0.05)
    assert (refused.code, refused.reason) == (4009, f"REDIRECT:{us.url}/{name}")
    # eu dropped its stale copy without writing a snapshot of it over what us stored.
    assert stored_text(tmp_path, name, shared=shared_registry) == assert_converged(moved)


def test_clean_shutdown_releases_claims_at_once(start_server, tmp_path, shared_registry):
    eu, us = start_nodes(
        start_server,
        tmp_path,
        shared=shared_registry,
        registry={"release_after_seconds": 30, "ttl_seconds": 20},
    )
    name, token = unique(), make_token()
    text = assert_converged(sync(name, token, [eu.url]))
    assert where(us, name, token)["region"] == "eu"
    assert eu.stop(signal.SIGTERM) == 0
    # Neither release_after (30 s) nor the TTL (20 s) had to pass.
    assert where(us, name, token)["isNew"] is True
    moved = sync(name, token, [us.url])
    assert moved["closes"][0] == []
    assert moved["initialText"] == text


# --- /discovery ------------------------------------------------------------------------------


def test_discovery_errors_use_the_websocket_close_codes(start_server, start_app, tmp_path):
    # eu answers through the test client; us is a real server on the same storage file
    # (hence the same embedded registry), so a WebSocket can take the document there.
    eu, us = start_nodes(start_server, tmp_path, start_app=start_app, in_process=("eu",))
    token = make_token()

    def error(*args, **kwargs):
        status, _, body = discover(*args, **kwargs)
        assert set(body) >= {"error", "code"}, body
        return status, body["code"]

    assert http(eu, "/discovery")[0] == 400 and http(eu, "/discovery")[2]["code"] == 4007
    assert error(eu, "") == (400, 4007)
    for bad in (".hidden", "a" * 256, "a b", "a/b", "/abs", "é"):
        assert error(eu, bad, token) == (400, 4007), bad
    assert error(eu, ".hidden") == (400, 4007)  # the name is checked before the token
    assert error(eu, "fine") == (401, 4001)
    assert error(eu, "fine", "not-a-jwt") == (401, 4002)
    assert error(eu, "fine", make_token(ttl=-120)) == (401, 4002)
    assert error(eu, "fine", make_token(secret="wrong-secret-0123456789abcdef0123")) == (401, 4002)
    assert error(eu, "fine", make_token(tenant="nope")) == (401, 4002)  # no tenant enumeration
    assert error(eu, "fine", make_token(app="nope")) == (403, 4003)
    locked = make_token(app="locked")
    assert error(eu, "fine", locked, headers={"Origin": "https://evil.example"}) == (403, 4003)
    assert error(eu, "fine", locked) == (403, 4003)  # no Origin: not in the list either
    assert where_with(eu, "fine", locked, {"Origin": "https://editor.acme.com"})["isNew"] is True

    # Both ways of passing the token work; the answer is JSON with the four fields.
    status, head, body = discover(eu, "fine", token, via_query=True)
    assert status == 200 and head["Content-Type"].startswith("application/json")
    assert body == {"region": "eu", "url": f"{eu.url}/fine", "isNew": True, "access": "write"}
    assert discover(us, "fine", token)[2] == {
        "region": "us",
        "url": f"{us.url}/fine",
        "isNew": True,
        "access": "write",
    }

    # Discovery never claims: after asking eu, us can still take the document.
    taken = open_ws(us.url, "fine", token)
    assert taken.accepted
    assert where(eu, "fine", token)["region"] == "us"
    taken.close()
    # Not a WebSocket path: POST is refused, and the document route still answers 426.
    assert http(eu, "/discovery?documentName=x", method="POST")[0] == 405
    assert http(eu, "/some-doc")[0] == 426


def where_with(node, name, token, headers):
    status, _, body = discover(node, name, token, headers=headers)
    assert status == 200, body
    return body


def test_discovery_is_rate_limited_with_retry_after(start_app, tmp_path):
    (eu,) = start_nodes(
        None,
        tmp_path,
        count=1,
        start_app=start_app,
        in_process=("eu",),
        rate_limit={"handshakes_per_ip": "3/minute"},
    )
    token = make_token()
    for _ in range(3):
        assert discover(eu, "doc", token)[0] == 200
    status, head, body = discover(eu, "doc", token)
    assert (status, body["code"]) == (429, 4006)
    assert int(head["Retry-After"]) >= 1


def cors_config(tmp_path, port):
    config = base_config(tmp_path, region="eu", regions={"eu": f"ws://127.0.0.1:{port}"})
    apps = config["auth"]["tenants"]["acme"]["apps"]
    apps.clear()
    apps["locked"] = {"allowed_origins": ["https://editor.acme.com"]}
    apps["other"] = {"allowed_origins": ["https://other.example"]}
    config["auth"]["tenants"]["globex"]["apps"] = {
        "editor": {"allowed_origins": ["https://globex.example"]}
    }
    return config


def preflight(node, origin):
    return http(
        node,
        "/discovery?documentName=doc",
        method="OPTIONS",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )


def test_discovery_cors_follows_the_apps_allowed_origins(start_app, tmp_path):
    node = start_app(config=cors_config(tmp_path, free_port()))
    locked = make_token(app="locked")

    # Preflight (no token yet): the union of every app's allowed origins.
    for origin in ("https://editor.acme.com", "https://other.example", "https://globex.example"):
        status, head, _ = preflight(node, origin)
        assert status == 204
        assert head["Access-Control-Allow-Origin"] == origin
        assert "GET" in head["Access-Control-Allow-Methods"]
        assert "authorization" in head["Access-Control-Allow-Headers"].lower()
        assert "Origin" in head["Vary"]
    status, head, _ = preflight(node, "https://evil.example")
    assert status == 204 and "Access-Control-Allow-Origin" not in head

    # The answer itself: only the token's app's origins.
    status, head, body = discover(
        node, "doc", locked, headers={"Origin": "https://editor.acme.com"}
    )
    assert status == 200 and body["region"] == "eu"
    assert head["Access-Control-Allow-Origin"] == "https://editor.acme.com"
    status, head, body = discover(node, "doc", locked, headers={"Origin": "https://other.example"})
    assert (status, body["code"]) == (403, 4003) and "region" not in body
    status, head, body = discover(node, "doc", locked, headers={"Origin": "https://evil.example"})
    assert (status, body["code"]) == (403, 4003)
    assert "Access-Control-Allow-Origin" not in head
    # An error for a configured origin is readable by its page (e.g. to refresh a token).
    status, head, body = discover(node, "doc", None, headers={"Origin": "https://editor.acme.com"})
    assert (status, body["code"]) == (401, 4001)
    assert head["Access-Control-Allow-Origin"] == "https://editor.acme.com"


def test_discovery_cors_allows_any_origin_when_an_app_sets_no_list(start_app, tmp_path):
    # acme/editor has no list
    (eu,) = start_nodes(None, tmp_path, count=1, start_app=start_app, in_process=("eu",))
    origin = "https://anywhere.example"
    status, head, _ = preflight(eu, origin)
    assert status == 204 and head["Access-Control-Allow-Origin"] == origin
    status, head, body = discover(eu, "doc", make_token(), headers={"Origin": origin})
    assert status == 200 and head["Access-Control-Allow-Origin"] == origin
    # acme/locked still refuses origins outside its list.
    status, head, body = discover(eu, "doc", make_token(app="locked"), headers={"Origin": origin})
    assert (status, body["code"]) == (403, 4003)


# --- the region map in the config ----------------------------------------------------------


AUTH = {
    "tenants": {
        "acme": {"keys": [{"kid": "k", "alg": "HS256", "secret": "s" * 32}], "apps": {"editor": {}}}
    }
}
TWO = {"eu": "wss://eu.example.net", "us": "wss://us.example.net"}


def load(env=None, **settings):
    return Config.from_mapping({"auth": AUTH, **settings}, env=env or {})


def refused_key(env=None, **settings):
    with pytest.raises(ConfigError) as info:
        load(env, **settings)
    return info.value.key


def test_config_defaults_and_overrides():
    c = load(region="eu", regions=TWO)
    assert c.pins == []
    assert c.registry == {
        "release_after_seconds": 30.0,
        "ttl_seconds": 15.0,
        "heartbeat_seconds": 5.0,
    }
    assert load(region="eu", regions=TWO, env={"WSSERVER_REGION": "us"}).region == "us"
    c = load(region="eu", regions={"eu": "wss://eu.example.net/sync/"}, registry={"ttl_seconds": 6})
    assert c.regions["eu"] == "wss://eu.example.net/sync"  # no trailing slash: no "//" in URLs
    assert c.registry["heartbeat_seconds"] == 2.0  # a third of the TTL by default
    pins = [{"tenant": "acme", "documents": "gdpr-*", "region": "eu"}]
    assert load(region="eu", regions=TWO, pins=pins).pins == [
        {"tenant": "acme", "app": "*", "documents": "gdpr-*", "region": "eu"}
    ]


def test_config_refusals_name_the_key():
    assert refused_key(region="ap", regions=TWO) == "region"
    assert refused_key(region="eu", regions=TWO, env={"WSSERVER_REGION": "ap"}) == "WSSERVER_REGION"
    assert (
        refused_key(region="eu", regions=TWO, pins=[{"documents": "x", "region": "ap"}])
        == "pins[0].region"
    )
    assert refused_key(region="eu", regions=TWO, pins=[{"documents": "x"}]) == "pins[0].region"
    assert (
        refused_key(region="eu", regions=TWO, pins=[{"docs": "x", "region": "eu"}])
        == "pins[0].docs"
    )
    assert refused_key(region="eu", regions=TWO, pins={"region": "eu"}) == "pins"
    assert refused_key(region="eu", regions={"eu": "https://eu.example.net"}) == "regions.eu"
    assert refused_key(region="eu", regions={"eu": "wss://eu.example.net/?x=1"}) == "regions.eu"
    assert (
        refused_key(region="eu", regions=TWO, registry={"ttl_seconds": 3, "heartbeat_seconds": 3})
        == "registry.heartbeat_seconds"
    )
    assert refused_key(region="eu", regions=TWO, registry={"ttl": 3}) == "registry.ttl"
    assert (
        refused_key(region="eu", regions=TWO, registry={"release_after_seconds": -1})
        == "registry.release_after_seconds"
    )


def test_a_redirect_that_does_not_fit_a_close_reason_carries_the_base_url_alone():
    longest = "wss://" + "e" * (MAX_BASE_URL_BYTES - len("wss://"))  # 114 bytes
    short = "wss://eu.example.net"
    c = load(region="eu", regions={"eu": longest, "us": short})
    regions = RegionMap.from_config(c)
    # What fits is sent whole: REDIRECT: + base + / + name, up to exactly 123 bytes.
    fits = "n" * (123 - len("REDIRECT:") - len(short) - 1)
    assert regions.redirect("us", fits).reason == f"REDIRECT:{short}/{fits}"
    assert len(regions.redirect("us", fits).close_reason) == 123
    # One byte more, or a 255-character name, or a long base: the base URL alone.
    assert regions.redirect("us", fits + "n").reason == f"REDIRECT:{short}"
    assert regions.redirect("us", "n" * 255).reason == f"REDIRECT:{short}"
    assert regions.redirect("eu", "d").reason == f"REDIRECT:{longest}"
    assert len(regions.redirect("eu", "d").close_reason) == 123
    # /discovery's URL is never shortened.
    assert regions.url("us", "n" * 255) == f"{short}/{'n' * 255}"
    # Base URLs: up to the 114 bytes that REDIRECT: leaves in a close reason.
    assert refused_key(region="eu", regions={"eu": longest + "e"}) == "regions.eu"


def test_a_long_document_name_is_redirected_by_base_url_and_discovered_in_full(
    start_server, tmp_path
):
    eu, us = start_nodes(start_server, tmp_path, registry=dict(FAST, release_after_seconds=20))
    token = make_token()
    name = (unique("long") + "." + uuid.uuid4().hex * 8)[:255]  # the longest name allowed
    assert len(name) == 255
    result = sync(name, token, [eu.url, us.url])
    # The redirect names eu's base URL only; the provider follows it and syncs.
    assert result["closes"][1][0] == {"code": 4009, "reason": f"REDIRECT:{eu.url}"}
    assert result["finalUrls"] == [eu.url, eu.url]
    assert_converged(result)
    assert where(us, name, token) == {
        "region": "eu",
        "url": f"{eu.url}/{name}",
        "isNew": False,
        "access": "write",
    }
    too_long = open_ws(us.url, name + "x", token)
    assert (too_long.code, too_long.reason) == (4007, "invalid document name")


def test_the_example_config_is_valid():
    c = Config.load(str(ROOT / "config" / "example-regions.yaml"), env={})
    assert c.region == "eu-central-1" and c.redis
    assert c.pins[0]["documents"] == "gdpr-*"
    assert (
        Config.load(
            str(ROOT / "config" / "example-regions.yaml"), env={"WSSERVER_REGION": "us-east-1"}
        ).region
        == "us-east-1"
    )


def test_a_bad_region_map_stops_start_up(tmp_path):
    import subprocess
    import sys

    import yaml

    path = tmp_path / "bad.yaml"
    path.write_text(
        yaml.safe_dump(
            base_config(
                tmp_path, region="eu", regions={"eu": "wss://" + "x" * 120 + ".example.net"}
            )
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "wsserver.cli", "serve", "--config", str(path), "--port", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "regions.eu" in proc.stderr


def test_pins_match_tenant_app_and_document_globs_first_match_wins():
    regions = {"eu": "wss://eu", "us": "wss://us", "ap": "wss://ap"}
    pins = [
        {"tenant": "acme", "app": "editor", "documents": "gdpr-*", "region": "eu"},
        {"tenant": "acme", "app": "*", "documents": "*", "region": "us"},
        {"tenant": "glob?x", "app": "*", "documents": "[ab]*", "region": "ap"},
    ]
    m = RegionMap("eu", regions, pins)
    assert m.pinned(DocKey("acme", "editor", "gdpr-1")) == "eu"
    assert m.pinned(DocKey("acme", "editor", "GDPR-1")) == "us"  # case-sensitive
    assert m.pinned(DocKey("acme", "notes", "gdpr-1")) == "us"
    assert m.pinned(DocKey("globex", "x", "alpha")) == "ap"
    assert m.pinned(DocKey("globex", "x", "zeta")) is None
    assert m.pinned(DocKey("other", "editor", "gdpr-1")) is None
    assert m.url("us", "d") == "wss://us/d"
