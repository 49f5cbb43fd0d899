"""The HTTP document API (GET /v1/documents/NAME, POST /v1/documents/NAME/update) over
real HTTP against real `wsserver serve` processes, with real y-websocket providers
where the document is live.

One server (`api`) serves every test that does not stop it; it trusts one proxy hop,
so each test sends its own X-Forwarded-For and the per-IP rate limit of one test never
touches another's.
"""

import http.client
import json
import random
import signal
import socket
import sqlite3
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest
import websocket
import yaml
from conftest import OTHER_SECRET, NodeProcess, ServerProcess, base_config, make_token
from pycrdt import Doc, Map, Text

RATE = 30  # handshakes_per_ip per minute on the shared server


def name(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def client_ip():
    return f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"


def request(server, method, path, token=None, body=None, headers=None, ip=None, timeout=10):
    """(status, headers, body bytes) of one HTTP request to `server`."""
    headers = dict(headers or {})
    headers.setdefault("X-Forwarded-For", ip or client_ip())
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(server.http + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as res:
            return res.status, res.headers, res.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def get_json(server, doc, token):
    status, _, body = request(server, "GET", f"/v1/documents/{doc}?format=json", token)
    assert status == 200, body
    return json.loads(body)


def post(server, doc, token, update, **kw):
    return request(
        server,
        "POST",
        f"/v1/documents/{doc}/update",
        token,
        update,
        {"Content-Type": "application/octet-stream"},
        **kw,
    )


def assert_error(answer, status, code):
    got_status, _, body = answer
    data = json.loads(body)
    assert (got_status, data["code"]) == (status, code), (got_status, data)
    assert data["error"]
    return data


def text_update(text, key="text"):
    doc = Doc()
    doc[key] = Text(text)
    return doc.get_update()


def api_config(directory, **overrides):
    config = base_config(
        directory,
        unload_after=0.3,
        max_message_size=8192,
        plans={"one": {"max_documents": 1}},
        rate_limit={"handshakes_per_ip": f"{RATE}/minute", "trusted_proxies": 1},
        regions={"local": "ws://127.0.0.1:1234", "far": "wss://far.example.net"},
        pins=[{"documents": "far-*", "region": "far"}],
        **overrides,
    )
    config["auth"]["tenants"]["acme"]["apps"]["capped"] = {"plan": "one"}
    return config


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    directory = tmp_path_factory.mktemp("docapi")
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(api_config(directory)))
    server = ServerProcess(path).start()
    yield server
    server.proc.kill()
    server.proc.wait()


# --- with live providers ------------------------------------------------------------


def test_get_and_post_match_live_providers_and_post_survives_kill9(start_server):
    server = start_server()
    doc, token = name("live"), make_token(sub="backend")
    node = NodeProcess(
        "docapi.mjs", {"url": server.url, "http": server.http, "token": token, "room": doc}
    )
    try:
        r = node.wait_phase("posted", 40)
        held = r["held"]
        assert held["text"] == "[b]hello from a" or held["text"] == "hello from a[b]"
        assert held["xml"] == '<p class="c">hi</p>'
        # GET binary: a Node Y.Doc applies it as it is and holds what the providers hold.
        assert r["type"] == "application/octet-stream"
        assert r["fromBinary"] == held
        # GET ?format=json: every root type as JSON.
        assert r["json"] == held
        # POST: 200 once durable, and broadcast to both providers.
        assert r["posted"] == {"status": 200, "body": {"stored": True}}
        assert r["after"]["a"] == r["after"]["b"]
        assert r["after"]["a"]["text"] == "[api]" + held["text"]
        assert r["after"]["a"]["map"] == {**held["map"], "api": 42}

        server.stop(signal.SIGKILL)
        server.restart()
        after = get_json(server, doc, token)
        assert after["text"] == "[api]" + held["text"]
        assert after["map"]["api"] == 42
    finally:
        node.kill()


# --- reads and writes ---------------------------------------------------------------


def test_post_creates_a_document_read_live_then_from_storage(api):
    doc, token = name("create"), make_token()
    assert_error(request(api, "GET", f"/v1/documents/{doc}", token), 404, 404)
    status, _, body = post(api, doc, token, text_update("seeded"))
    assert (status, json.loads(body)) == (200, {"stored": True})
    assert get_json(api, doc, token) == {"text": "seeded"}  # the live copy
    deadline = time.time() + 10
    while json.loads(request(api, "GET", "/healthz")[2])["rooms"]:
        assert time.time() < deadline, "the document was never unloaded"
        time.sleep(0.1)
    assert get_json(api, doc, token) == {"text": "seeded"}  # from storage
    status, headers, body = request(api, "GET", f"/v1/documents/{doc}", token)
    assert status == 200 and headers["Content-Type"] == "application/octet-stream"
    copy = Doc()
    copy.apply_update(body)
    assert str(copy.get("text", type=Text)) == "seeded"


def test_post_answers_only_once_the_update_is_durable(api):
    doc, token = name("durable"), make_token()
    assert post(api, doc, token, text_update("first"))[0] == 200  # loaded
    # Another writer holds the database: the server's commit cannot happen meanwhile.
    db = sqlite3.connect(api.config_path.parent / "wsserver.sqlite3", isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    answers = []
    source = Doc()
    source["later"] = Text("second")
    writer = threading.Thread(
        target=lambda: answers.append(post(api, doc, token, source.get_update()))
    )
    writer.start()
    try:
        writer.join(1.5)
        assert not answers, "answered before the update was committed"
        # A read of a live document is the live copy: the update is applied there (and
        # echoed to no one yet), while storage still has only "first".
        deadline, live = time.time() + 5, None
        while live != {"text": "first", "later": "second"}:
            assert time.time() < deadline, f"GET did not answer the live copy: {live}"
            try:  # storage is busy: an answer from it would wait for the lock
                status, _, body = request(
                    api, "GET", f"/v1/documents/{doc}?format=json", token, timeout=2
                )
                live = json.loads(body) if status == 200 else (status, body)
            except TimeoutError:
                live = "no answer within 2 s"
        assert not answers, "answered before the update was committed"
    finally:
        db.execute("ROLLBACK")
        db.close()
    writer.join(15)
    assert answers and answers[0][0] == 200
    assert get_json(api, doc, token) == {"text": "first", "later": "second"}


def test_concurrent_writes_to_a_new_document_share_one_load(api):
    doc, token = name("together"), make_token()
    answers = []
    writers = [
        threading.Thread(
            target=lambda i=i: answers.append(
                post(api, doc, token, text_update(f"w{i}", key=f"root{i}"))[0]
            )
        )
        for i in range(6)
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(15)
    assert answers == [200] * 6
    assert get_json(api, doc, token) == {f"root{i}": f"w{i}" for i in range(6)}


def test_invalid_update_is_1007_and_leaves_the_document_untouched(api):
    doc, token = name("invalid"), make_token()
    assert post(api, doc, token, text_update("kept"))[0] == 200
    before = request(api, "GET", f"/v1/documents/{doc}", token)[2]
    assert_error(post(api, doc, token, b"\x01\x02\x03garbage"), 400, 1007)
    assert_error(post(api, doc, token, b""), 400, 1007)
    assert request(api, "GET", f"/v1/documents/{doc}", token)[2] == before
    assert get_json(api, doc, token) == {"text": "kept"}


def test_a_body_is_exactly_one_update_trailing_bytes_are_400(api):
    """A valid update followed by junk used to be applied and stored, junk included."""
    doc, token = name("trailing"), make_token()
    assert post(api, doc, token, text_update("kept"))[0] == 200
    before = request(api, "GET", f"/v1/documents/{doc}", token)[2]
    for junk in (b"\x00", b"junk after the update"):
        data = assert_error(post(api, doc, token, text_update("added", key="t2") + junk), 400, 1007)
        assert data["error"] == "invalid update: trailing bytes after the update"
    cut = text_update("added", key="t2")[:-3]
    assert assert_error(post(api, doc, token, cut), 400, 1007)["error"] == (
        "invalid update: cut short or malformed"
    )
    assert request(api, "GET", f"/v1/documents/{doc}", token)[2] == before
    assert get_json(api, doc, token) == {"text": "kept"}
    assert "Traceback" not in api.log()


def test_an_empty_update_stores_nothing(api):
    doc, token = name("empty"), make_token()
    status, _, body = post(api, doc, token, b"\x00\x00")
    assert (status, json.loads(body)) == (200, {"stored": False})
    assert_error(request(api, "GET", f"/v1/documents/{doc}", token), 404, 404)


def test_json_of_maps_and_nested_types(api):
    doc, token = name("json"), make_token()
    source = Doc()
    source["meta"] = Map({"title": "T", "count": 3, "tags": ["a", "b"], "body": Text("nested")})
    assert post(api, doc, token, source.get_update())[0] == 200
    assert get_json(api, doc, token) == {
        "meta": {"title": "T", "count": 3, "tags": ["a", "b"], "body": "nested"}
    }


def test_json_of_numbers_json_cannot_hold_is_null(api):
    """A client can store NaN and ±Infinity (Yjs keeps float64s); JSON has no such
    numbers, and Python would write `NaN`, which no JSON parser takes: they are null,
    as JSON.stringify makes them."""
    doc, token = name("nan"), make_token()
    source = Doc()
    source["m"] = Map({"nan": float("nan"), "inf": float("inf"), "list": [float("-inf"), 1.5]})
    assert post(api, doc, token, source.get_update())[0] == 200
    status, _, body = request(api, "GET", f"/v1/documents/{doc}?format=json", token)
    assert status == 200
    assert json.loads(body, parse_constant=lambda c: pytest.fail(f"{c} in {body!r}")) == {
        "m": {"nan": None, "inf": None, "list": [None, 1.5]}
    }


def test_json_of_a_document_nested_too_deep_is_422_without_a_traceback(api):
    """Any writer can nest maps a thousand deep (in small updates); the JSON form of
    such a document is refused with a JSON 422, never a 500 and a RecursionError in
    the log, and its binary form is still served."""
    doc, token = name("deep"), make_token()
    source = Doc()
    source["root"] = current = Map()
    state = None
    for _ in range(2):
        for _ in range(500):
            current["k"] = nested = Map()
            current = nested
        update = source.get_update(state) if state else source.get_update()
        state = source.get_state()
        assert post(api, doc, token, update)[0] == 200
    answer = request(api, "GET", f"/v1/documents/{doc}?format=json", token)
    assert_error(answer, 422, 422)
    assert request(api, "GET", f"/v1/documents/{doc}", token)[0] == 200
    assert f"/v1/documents/{doc} failed" not in api.log(), api.log()
    assert "RecursionError" not in api.log(), api.log()


# --- errors -------------------------------------------------------------------------


def test_errors_carry_the_websocket_close_code(api):
    doc, token = name("errors"), make_token()
    path = f"/v1/documents/{doc}"
    update = text_update("x")
    for method, target, body in (("GET", path, None), ("POST", path + "/update", update)):
        assert_error(request(api, method, target, None, body), 401, 4001)
        assert_error(request(api, method, target, make_token(secret=OTHER_SECRET), body), 401, 4002)
        assert_error(request(api, method, target, make_token(ttl=-60), body), 401, 4002)
        assert_error(request(api, method, target, make_token(app="nope"), body), 403, 4003)
        assert_error(
            request(
                api,
                method,
                target,
                make_token(app="locked"),
                body,
                {"Origin": "https://evil.example"},
            ),
            403,
            4003,
        )
    assert_error(request(api, "GET", "/v1/documents/.hidden", token), 400, 4007)
    assert_error(post(api, "bad%20name", token, update), 400, 4007)
    assert_error(request(api, "GET", path + "?format=xml", token), 400, 400)
    # The token may also come as ?token=.
    assert post(api, doc, None, update)[0] == 401
    status, _, _ = request(api, "POST", f"{path}/update?token={token}", None, update)
    assert status == 200


def test_the_tokens_documents_and_access_claims_apply(api):
    doc = name("claims")
    assert post(api, doc, make_token(), text_update("shared"))[0] == 200
    path = f"/v1/documents/{doc}"
    other = make_token(documents=["somewhere-else-*"])
    assert_error(request(api, "GET", path, other), 403, 4003)
    assert_error(post(api, doc, other, text_update("no")), 403, 4003)
    matching = make_token(documents=["claims-*"])
    assert request(api, "GET", path, matching)[0] == 200
    reader = make_token(documents=["claims-*"], access="read")
    assert get_json(api, doc, reader) == {"text": "shared"}
    data = assert_error(post(api, doc, reader, text_update("no")), 403, 4003)
    assert data["error"] == 'read-only: the token\'s access is "read"'
    assert get_json(api, doc, reader) == {"text": "shared"}
    writer = make_token(documents=["claims-*"], access="write")
    assert post(api, doc, writer, text_update("yes", key="more"))[0] == 200
    assert get_json(api, doc, reader) == {"text": "shared", "more": "yes"}


def test_body_over_max_message_size_is_413(api):
    doc, token = name("big"), make_token()
    doc_update = text_update("y" * 9000)
    assert len(doc_update) > 8192
    assert_error(post(api, doc, token, doc_update), 413, 1009)
    assert_error(request(api, "GET", f"/v1/documents/{doc}", token), 404, 404)
    # Chunked (no Content-Length): the size is known only while reading; refused the same.
    connection = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    connection.request(
        "POST",
        f"/v1/documents/{doc}/update",
        body=iter([doc_update[:4096], doc_update[4096:]]),
        headers={"Authorization": f"Bearer {token}", "X-Forwarded-For": client_ip()},
        encode_chunked=True,
    )
    response = connection.getresponse()
    answer = (response.status, response.headers, response.read())
    assert answer[0] == 413, answer[2]
    assert_error(answer, 413, 1009)
    connection.close()
    assert_error(request(api, "GET", f"/v1/documents/{doc}", token), 404, 404)


def test_a_body_cut_short_is_400_without_a_traceback(api):
    """A client that announces more body than it sends, then closes its side: its
    fault, a 400, never a 500 with an ERROR traceback in the log."""
    token = make_token()
    for framing in (
        b"Content-Length: 1000\r\n\r\nab",
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nab",
    ):
        doc = name("cut")
        s = socket.create_connection(("127.0.0.1", api.port), timeout=10)
        s.sendall(
            f"POST /v1/documents/{doc}/update HTTP/1.1\r\nHost: x\r\n"
            f"X-Forwarded-For: {client_ip()}\r\nAuthorization: Bearer {token}\r\n".encode()
            + framing
        )
        s.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
        s.close()
        assert answer.startswith(b"HTTP/1.1 400"), answer
        assert f"/v1/documents/{doc}/update failed" not in api.log(), api.log()
        assert_error(request(api, "GET", f"/v1/documents/{doc}", token), 404, 404)


def test_rate_limit_is_429_with_retry_after(api):
    ip, token, doc = client_ip(), make_token(), name("rate")
    answers = [request(api, "GET", f"/v1/documents/{doc}", token, ip=ip) for _ in range(RATE + 1)]
    assert [a[0] for a in answers[:RATE]] == [404] * RATE
    assert_error(answers[-1], 429, 4006)
    assert int(answers[-1][1]["Retry-After"]) >= 1
    assert_error(post(api, doc, token, text_update("z"), ip=ip), 429, 4006)


def test_document_of_another_region_is_409_with_its_url(api):
    token = make_token()
    for method, suffix, body in (("GET", "", None), ("POST", "/update", text_update("w"))):
        data = assert_error(
            request(api, method, f"/v1/documents/far-doc{suffix}", token, body), 409, 4009
        )
        assert data["url"] == "https://far.example.net/v1/documents/far-doc"


def test_write_over_max_documents_is_4005(api):
    token = make_token(app="capped", sub="u1")
    active, other = name("cap-a"), name("cap-b")
    ws = websocket.create_connection(
        f"{api.url}/{active}",
        timeout=5,
        subprotocols=["access_token", token],
        header={"X-Forwarded-For": client_ip()},
    )
    try:
        ws.recv()  # sync step 1: admitted, the document is active
        assert_error(post(api, other, token, text_update("no")), 429, 4005)
        assert post(api, active, token, text_update("yes"))[0] == 200  # already active
    finally:
        ws.close()
    deadline = time.time() + 5
    while post(api, other, token, text_update("now"))[0] != 200:
        assert time.time() < deadline, "the closed connection's document still counts"
        time.sleep(0.1)


def test_tenant_isolation(api):
    doc = name("iso")
    acme, globex = make_token(), make_token(tenant="globex", kid="g1", secret=OTHER_SECRET)
    assert post(api, doc, acme, text_update("acme's"))[0] == 200
    assert_error(request(api, "GET", f"/v1/documents/{doc}", globex), 404, 404)
    assert_error(request(api, "GET", f"/v1/documents/{doc}", make_token(app="notes")), 404, 404)
    assert post(api, doc, globex, text_update("globex's", key="other"))[0] == 200
    assert get_json(api, doc, acme) == {"text": "acme's"}
    assert get_json(api, doc, globex) == {"other": "globex's"}


def test_cors_as_for_discovery(api):
    origin = "https://editor.acme.com"
    doc = name("cors")
    status, headers, _ = request(
        api,
        "OPTIONS",
        f"/v1/documents/{doc}/update",
        headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
    )
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == origin
    assert "POST" in headers["Access-Control-Allow-Methods"]
    assert "Content-Type" in headers["Access-Control-Allow-Headers"]
    token = make_token(app="locked")
    status, headers, _ = request(
        api, "POST", f"/v1/documents/{doc}/update", token, text_update("c"), {"Origin": origin}
    )
    assert status == 200 and headers["Access-Control-Allow-Origin"] == origin
    status, headers, _ = request(
        api, "GET", f"/v1/documents/{doc}", token, headers={"Origin": origin}
    )
    assert status == 200 and headers["Access-Control-Allow-Origin"] == origin
    assert headers["Vary"] == "Origin"
    status, headers, _ = request(
        api, "GET", f"/v1/documents/{doc}", None, headers={"Origin": origin}
    )
    assert status == 401 and headers["Access-Control-Allow-Origin"] == origin
