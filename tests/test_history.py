"""Version history end to end (README, History): real `wsserver serve` processes, real
y-websocket providers (tests/node/history.mjs), SQLite and Postgres, two processes
with Redis. A restore is seen live by every editor and they keep editing; a deleted
document cannot be pushed back by a reconnecting provider, on any process, after a
restart; automatic versions come after a quiet period and when the last client
leaves, with their authors."""

import json
import time
import uuid

import pytest
import websocket
from conftest import NodeProcess, base_config, make_token
from pycrdt import Doc, Text
from test_document_api import request

from wsserver.protocol import codec

WRITER = make_token(sub="alice")


def doc_name(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def call(server, method, path, token=WRITER, body=None):
    """(status, parsed JSON or raw bytes)."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data else {}
    status, _, raw = request(server, method, path, token, data, headers)
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


def post_update(server, name, update):
    """POST a Yjs update as the writer: the status."""
    headers = {"Content-Type": "application/octet-stream"}
    return request(server, "POST", f"/v1/documents/{name}/update", WRITER, update, headers)[0]


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


@pytest.mark.long
@pytest.mark.parametrize("storage", ["sqlite", "postgres"])
def test_a_restore_is_live_for_every_editor_and_they_keep_editing(
    start_server, tmp_path, storage, request
):
    url = request.getfixturevalue("pg_url") if storage == "postgres" else None
    # Compaction after every 3 updates: the version restored is from before one.
    config = base_config(tmp_path, compact_after_updates=3)
    if url:
        config["storage"] = url
    server = start_server(config)
    name = doc_name("restore")
    api = f"{server.http}/v1/documents/{name}"
    result = NodeProcess(
        "history.mjs",
        {
            "mode": "restore",
            "urls": [server.url, server.url],
            "apis": [api],
            "restoreVia": 0,
            "token": WRITER,
            "room": name,
        },
    ).result(30)
    assert result["a"] == result["b"]
    assert json.loads(result["a"])["text"][0] == {"insert": "!"}
    assert result["reconnected"] == [0, 0]  # live: nobody reloaded
    assert result["edited"] != result["wanted"]
    assert result["answer"]["changed"] is True
    # The state before the restore became a version first: restoring it undoes it.
    before = result["answer"]["version_before"]
    assert before["label"] == f"before restoring version {result['version']['id']}"
    status, listed = call(server, "GET", f"/v1/documents/{name}/versions")
    assert status == 200
    # (newest first; the clients leaving at the end may have added an automatic one)
    ids = [v["id"] for v in listed["versions"]]
    assert ids[-2:] == [before["id"], result["version"]["id"]] and len(ids) <= 3
    assert listed["versions"][-1]["authors"] == ["alice"]
    assert listed["versions"][-1]["created_at"].endswith("Z")
    status, content = call(
        server, "GET", f"/v1/documents/{name}/versions/{before['id']}?format=json"
    )
    assert status == 200 and content["map"] == {"title": "v2"}
    status, binary = call(server, "GET", f"/v1/documents/{name}/versions/{before['id']}")
    doc = Doc()
    doc.apply_update(binary)
    assert str(doc.get("text", type=Text)).startswith("draft: version one")


@pytest.mark.long
def test_a_restore_reaches_the_editors_of_another_process(start_server, tmp_path, redis_url):
    config = base_config(tmp_path, redis=redis_url)
    one, two = start_server(config), start_server(config)
    name = doc_name("restore2")
    result = NodeProcess(
        "history.mjs",
        {
            "mode": "restore",
            "urls": [one.url, two.url],
            "apis": [f"{one.http}/v1/documents/{name}", f"{two.http}/v1/documents/{name}"],
            "restoreVia": 1,
            "token": WRITER,
            "room": name,
        },
    ).result(30)
    assert result["a"] == result["b"] and result["reconnected"] == [0, 0]


@pytest.mark.long
@pytest.mark.parametrize("version", [1, 2, 3])
def test_a_deleted_document_cannot_be_resurrected_by_a_reconnecting_provider(start_server, version):
    server = start_server()
    name = doc_name(f"trash{version}")
    node = NodeProcess(
        "history.mjs",
        {
            "mode": "deleted",
            "urls": [server.url],
            "token": WRITER,
            "room": name,
            "version": version,
            "watchMs": 1200,
        },
    )
    node.wait_phase("written", 10)
    status, answer = call(server, "DELETE", f"/v1/documents/{name}")
    assert status == 200 and answer["deleted"] and answer["connections_closed"] == 1
    result = node.result(15)
    # Every socket it opened again was refused 4404; 3.x stops at the first. (A socket
    # whose handshake the provider gave up on, on a loaded machine, closes with no event.)
    assert result["closes"] and {c["code"] for c in result["closes"] if c} == {4404}
    # (the last socket may still be waiting for its close when the script looked)
    assert result["reconnects"] <= len(result["closes"]) <= result["reconnects"] + 1
    if version == 3:
        assert result["reconnects"] == 0
    assert close_code(server, name, WRITER) == 4404  # a new client too
    for path in (f"/v1/documents/{name}", f"/v1/documents/{name}/versions"):
        status, answer = call(server, "GET", path)
        assert (status, answer["code"]) == (410, 4404)
    status, answer = call(server, "POST", f"/v1/documents/{name}/versions", body={})
    assert (status, answer["code"]) == (410, 4404)
    if version == 1:  # the trash is in the store: a restart changes nothing
        server.stop()
        server.restart()
        assert call(server, "GET", f"/v1/documents/{name}")[0] == 410
    status, _ = call(server, "POST", f"/v1/documents/{name}/undelete")
    assert status == 200
    status, content = call(server, "GET", f"/v1/documents/{name}?format=json")
    assert status == 200 and content["text"] == f"written by {version}"  # nothing pushed back
    assert call(server, "POST", f"/v1/documents/{name}/undelete")[0] == 404


@pytest.mark.long
@pytest.mark.parametrize("fanout", ["redis", "none"])
def test_a_delete_closes_the_clients_of_every_process(start_server, tmp_path, fanout, request):
    """With Redis the other processes are told at once; without it (or while Redis is
    down) each process finds its live documents in the trash within TRASH_CHECK (2 s)."""
    redis = request.getfixturevalue("redis_url") if fanout == "redis" else None
    config = base_config(tmp_path, redis=redis)
    one, two = start_server(config), start_server(config)
    name = doc_name("trash2")
    node = NodeProcess(
        "history.mjs",
        {
            "mode": "deleted",
            "urls": [two.url],
            "token": WRITER,
            "room": name,
            "version": 2,
            "watchMs": 800,
        },
    )
    node.wait_phase("written", 10)
    started = time.monotonic()
    status, answer = call(one, "DELETE", f"/v1/documents/{name}")
    assert status == 200
    result = node.result(15)
    assert {c["code"] for c in result["closes"] if c} == {4404}
    assert time.monotonic() - started < (3 if redis else 5)
    assert call(two, "GET", f"/v1/documents/{name}")[0] == 410


def close_code(server, name, token):
    """The close code a new connection to `name` gets (None: it stays open)."""
    ws = _connect(server, name, token)
    try:
        while True:
            opcode, data = ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return int.from_bytes(data[:2], "big")
    except websocket.WebSocketTimeoutException:
        return None
    finally:
        ws.close()


def _connect(server, name, token):
    ws = websocket.create_connection(
        f"{server.url}/{name}", subprotocols=["access_token", token], timeout=5
    )
    return ws


@pytest.mark.long
def test_automatic_versions_after_a_quiet_period_and_when_the_last_client_leaves(start_server):
    quiet = 1.5
    server = start_server(history={"quiet_period": quiet, "every": 60})
    name = doc_name("auto")
    ws = _connect(server, name, make_token(sub="bob"))
    doc = Doc()
    doc.get("text", type=Text).insert(0, "hello")
    ws.send_binary(codec.sync_update(doc.get_update()))
    sent = time.monotonic()

    def versions():
        return call(server, "GET", f"/v1/documents/{name}/versions")[1]["versions"]

    # None while the edit is recent; one once the document has been quiet.
    first = wait_until(versions, quiet + 5, "the quiet-period version")
    assert time.monotonic() - sent >= quiet * 0.9
    assert [v["authors"] for v in first] == [["bob"]]
    time.sleep(0.5)
    assert len(versions()) == 1  # nothing changed since
    # The last client leaves right after an edit: a version at once, not after the quiet.
    state = doc.get_state()
    doc.get("text", type=Text).insert(5, " again")
    ws.send_binary(codec.sync_update(doc.get_update(state)))
    ws.close()
    left = time.monotonic()
    second = wait_until(lambda: len(versions()) == 2 and versions(), quiet + 5, "leave version")
    assert time.monotonic() - left < quiet * 0.75
    assert second[0]["authors"] == ["bob"] and second[0]["label"] is None


def test_history_routes_answer_clear_errors(start_server):
    server = start_server()
    name = doc_name("errors")
    assert call(server, "GET", f"/v1/documents/{name}/versions/1")[0] == 404
    assert call(server, "POST", f"/v1/documents/{name}/versions", body={})[0] == 404
    assert call(server, "DELETE", f"/v1/documents/{name}")[0] == 404
    doc = Doc()
    doc.get("text", type=Text).insert(0, "x")
    assert post_update(server, name, doc.get_update()) == 200
    status, answer = call(server, "POST", f"/v1/documents/{name}/versions", body={"label": 5})
    assert (status, answer["code"]) == (400, 400)
    status, made = call(server, "POST", f"/v1/documents/{name}/versions", body={"label": "one"})
    assert status == 201 and made["label"] == "one" and made["size"] > 0
    reader = make_token(sub="rita", access="read")
    assert call(server, "GET", f"/v1/documents/{name}/versions", reader)[0] == 200
    for method, path in (
        ("POST", f"/v1/documents/{name}/versions"),
        ("POST", f"/v1/documents/{name}/versions/{made['id']}/restore"),
        ("DELETE", f"/v1/documents/{name}"),
    ):
        status, answer = call(server, method, path, reader, body={})
        assert (status, answer["code"]) == (403, 4003), (method, path)
    assert call(server, "POST", f"/v1/documents/{name}/versions/999999/restore")[0] == 404
    assert call(server, "GET", f"/v1/documents/{name}/versions/{made['id']}?format=xml")[0] == 400


def test_a_version_is_read_in_every_format_the_document_get_answers(start_server):
    server = start_server()
    name = doc_name("formats")
    content = f"/v1/documents/{name}/content?format=markdown&field=notes"
    markdown = {"Content-Type": "text/markdown"}
    assert request(server, "PUT", content, WRITER, b"# Plan\n\nStep *one*.\n", markdown)[0] == 200
    status, made = call(server, "POST", f"/v1/documents/{name}/versions", body={})
    assert status == 201
    queries = ("?format=markdown&field=notes", "?format=text&field=notes", "?format=json")
    queries += ("?format=prosemirror&field=notes",)
    then = {}
    for query in queries:
        status, head, body = request(server, "GET", f"/v1/documents/{name}{query}", WRITER)
        assert status == 200, query
        then[query] = (head["Content-Type"], body)
    assert request(server, "PUT", content, WRITER, b"Changed.\n", markdown)[0] == 200
    for query in queries:
        status, head, body = request(
            server, "GET", f"/v1/documents/{name}/versions/{made['id']}{query}", WRITER
        )
        assert (status, (head["Content-Type"], body)) == (200, then[query]), query
    assert b"Plan" in then[queries[0]][1] and b"Changed" not in then[queries[0]][1]


ADMIN = "admin-token-0123456789abcdef"


def test_the_admin_api_shows_the_timeline_restores_and_keeps_the_trash(start_server):
    server = start_server(admin={"token": ADMIN})
    name = doc_name("console")
    base = f"/admin/api/documents/acme/editor/{name}"
    doc = Doc()
    text = doc.get("text", type=Text)
    text.insert(0, "first")
    assert post_update(server, name, doc.get_update()) == 200
    assert call(server, "POST", f"{base}/versions", ADMIN, {"label": "one"})[0] == 201
    state = doc.get_state()
    text.insert(5, " second")
    assert post_update(server, name, doc.get_update(state)) == 200
    assert call(server, "GET", f"{base}/versions", WRITER)[0] == 403  # an app token is not enough
    status, timeline = call(server, "GET", f"{base}/versions", ADMIN)
    assert status == 200 and [v["label"] for v in timeline["versions"]] == ["one"]
    one = timeline["versions"][0]
    assert one["authors"] == ["alice"]
    status, preview = call(server, "GET", f"{base}/versions/{one['id']}", ADMIN)
    assert status == 200 and preview["content"] == {"text": "first"}
    status, restored = call(server, "POST", f"{base}/versions/{one['id']}/restore", ADMIN)
    assert status == 200 and restored["changed"]
    assert call(server, "GET", f"/v1/documents/{name}?format=json")[1] == {"text": "first"}
    # The console's delete moves it to the trash: it sticks, and comes back as it was.
    assert call(server, "DELETE", base, ADMIN)[0] == 200
    assert call(server, "GET", f"/v1/documents/{name}")[0] == 410
    assert post_update(server, name, doc.get_update()) == 410
    status, trash = call(server, "GET", "/admin/api/trash", ADMIN)
    entry = next(e for e in trash["trash"] if e["name"] == name)
    assert entry["purge_at"] > entry["deleted_at"]
    assert call(server, "POST", f"{base}/undelete", ADMIN)[0] == 200
    assert call(server, "GET", f"/v1/documents/{name}?format=json")[1] == {"text": "first"}
    # A purge removes it for good, versions too: the name is free again.
    assert call(server, "DELETE", f"{base}/purge", ADMIN)[0] == 200
    assert call(server, "GET", f"/v1/documents/{name}")[0] == 404
    assert call(server, "GET", f"{base}/versions", ADMIN)[1] == {"versions": []}


def test_named_admins_on_the_history_routes_and_trashed_documents_in_the_index(start_server):
    """The console's history routes with named admins only (no `admin.token`): a viewer
    reads but gets 403 on every action, each refusal and each operator action audited;
    the stored-document search lists a trashed document with its `deleted_at`, never
    live, and a purge takes it out of the index."""
    from test_console import OPERATOR, VIEWER

    admins = {
        "tokens": [
            {"name": "alice", "token": OPERATOR, "role": "operator"},
            {"name": "victor", "token": VIEWER, "role": "viewer"},
        ]
    }
    server = start_server(admin=admins)
    name = doc_name("roles")
    base = f"/admin/api/documents/acme/editor/{name}"
    doc = Doc()
    doc.get("text", type=Text).insert(0, "kept")
    assert post_update(server, name, doc.get_update()) == 200
    status, made = call(server, "POST", f"{base}/versions", OPERATOR, {"label": "one"})
    assert status == 201 and made["label"] == "one"
    assert call(server, "GET", f"{base}/versions", VIEWER)[0] == 200
    assert call(server, "GET", f"{base}/versions/{made['id']}", VIEWER)[0] == 200
    assert call(server, "GET", f"{base}/versions")[0] == 403  # an app token is no admin's
    refused = [
        ("POST", f"{base}/versions"),
        ("POST", f"{base}/versions/{made['id']}/restore"),
        ("POST", f"{base}/undelete"),
        ("DELETE", f"{base}/purge"),
    ]
    for method, path in refused:
        status, answer = call(server, method, path, VIEWER, {})
        assert (status, answer["code"]) == (403, 403), (method, path, answer)
    assert call(server, "POST", f"{base}/versions/{made['id']}/restore", OPERATOR)[0] == 200

    def stored():
        status, page = call(server, "GET", f"/admin/api/documents?stored=1&q=acme/editor/{name}")
        assert status == 403  # (an app token)
        status, page = call(
            server, "GET", f"/admin/api/documents?stored=1&q=acme/editor/{name}", VIEWER
        )
        assert status == 200
        return [(d["name"], d["live"], d["deleted_at"] is not None) for d in page["documents"]]

    assert stored() == [(name, True, False)]
    assert call(server, "DELETE", base, OPERATOR)[0] == 200  # to the trash
    assert stored() == [(name, False, True)]  # still stored, shown as trashed
    assert call(server, "GET", base, VIEWER)[0] == 404
    assert call(server, "GET", "/admin/api/trash", VIEWER)[0] == 200
    assert call(server, "POST", f"{base}/undelete", OPERATOR)[0] == 200
    assert stored() == [(name, False, False)]
    assert call(server, "DELETE", f"{base}/purge", OPERATOR)[0] == 200
    assert stored() == []  # gone from the index too
    status, audit = call(server, "GET", "/admin/api/audit", VIEWER)
    entries = [(e["admin"], e["action"], "refused" in e["details"]) for e in audit["entries"]]
    for action in ("version", "restore", "delete", "undelete", "purge"):
        assert ("alice", action, False) in entries, (action, entries)
    assert ("victor", "preview", False) in entries, entries  # a view, by the viewer
    for action in ("version", "restore", "undelete", "purge"):
        assert ("victor", action, True) in entries, (action, entries)


def test_history_webhooks_are_sent_to_the_hooks_that_list_them(start_server, tmp_path):
    from test_webhooks import HOOK_SECRET, Receiver

    receiver = Receiver()
    try:
        config = base_config(tmp_path)
        apps = config["auth"]["tenants"]["acme"]["apps"]
        events = ["version.created", "document.restored", "document.deleted", "document.undeleted"]
        apps["editor"]["webhooks"] = [
            {"url": f"{receiver.url}/history", "secret": HOOK_SECRET, "events": events},
            {"url": f"{receiver.url}/default", "secret": HOOK_SECRET},  # the first four only
        ]
        server = start_server(config)
        name = doc_name("hooks")
        doc = Doc()
        doc.get("text", type=Text).insert(0, "x")
        assert post_update(server, name, doc.get_update()) == 200
        made = call(server, "POST", f"/v1/documents/{name}/versions", body={"label": "l"})[1]
        assert call(server, "POST", f"/v1/documents/{name}/versions/{made['id']}/restore")[0] == 200
        assert call(server, "DELETE", f"/v1/documents/{name}")[0] == 200
        assert call(server, "POST", f"/v1/documents/{name}/undelete")[0] == 200
        receiver.wait(lambda: len(receiver.events("/history", name)) >= 4, 5, "the history events")
        # (several senders deliver: not necessarily in order)
        got = {data["event"]: data for _, data in receiver.events("/history", name)}
        assert sorted(got) == sorted(events)
        created, restored = got["version.created"], got["document.restored"]
        assert created["version"]["id"] == made["id"] and created["version"]["label"] == "l"
        assert (restored["version"], restored["sub"]) == (made["id"], "alice")
        time.sleep(0.3)
        assert not any(d["event"] in events for _, d in receiver.events("/default", name))
    finally:
        receiver.close()
