"""Per-document access in the token (issue 14): the `documents` and `access` claims.

Real `wsserver serve` processes and real y-websocket providers: tests/node/limits.mjs
(open a provider and report synced or its close code; send edits) and tests/node/
readonly.mjs (a read-only viewer next to a writer). Raw WebSocket clients check the
order of the handshake checks; unit tests cover the claim parsing, the glob rule, the
step-2 judgement and `wsserver token`.
"""

import json
import struct
import subprocess
import sys

import jwt
import pytest
import websocket
from conftest import ROOT, SECRET, base_config, free_port, make_token, run_node
from pycrdt import Doc, Map, Text
from test_limits import healthz, op_open, opens, plan_config, scenario
from test_regions import discover, open_ws, start_nodes, unique

from wsserver.documents.key import DocKey
from wsserver.documents.readonly import MAX_DROPPED, would_change
from wsserver.documents.storage import open_store
from wsserver.errors import DocumentNotAllowed, InvalidToken, ReadOnly
from wsserver.handshake.claims import Principal, access_claims
from wsserver.protocol import codec

READ_ONLY = 'read-only: the token\'s access is "read"'


def read_token(**claims):
    return make_token(access="read", **claims)


# --- which documents a token opens -------------------------------------------------


def test_a_token_limited_to_patterns_opens_only_those_documents(server):
    token = make_token(sub="alice", documents=["proj-1-*", "notes-alice"])
    results = scenario(
        op_open(server, "a", "proj-1-a", token),
        op_open(server, "notes", "notes-alice", token),
        op_open(server, "other", "proj-2-a", token),
        op_open(server, "case", "PROJ-1-a", token),  # case-sensitive
        op_open(server, "prefix", "x-proj-1-a", token),  # the whole name must match
        op_open(server, "free", "proj-2-a", make_token(sub="bob")),  # no claim: every document
    )
    assert opens(results) == [
        ("a", "synced"),
        ("notes", "synced"),
        ("other", 4003),
        ("case", 4003),
        ("prefix", 4003),
        ("free", "synced"),
    ]
    refused = [r for r in results if r.get("code") == 4003]
    assert {r["reason"] for r in refused} == {"document not allowed"}

    status, _, body = discover(server, "proj-2-a", token)
    assert (status, body) == (403, {"error": "document not allowed", "code": 4003})
    status, _, body = discover(server, "proj-1-b", token)
    assert status == 200 and body["isNew"] is True

    # The log says why (the patterns are not secret), never the token.
    log = server.log()
    assert (
        "4003 document not allowed (app=acme/editor user=alice access=write "
        "documents=proj-1-*,notes-alice)" in log
    )
    assert token not in log


def test_globs():
    principal = Principal("acme", "editor", None, {}, ("a?c", "*-draft", "exact"))
    assert [
        n
        for n in ("abc", "a-c", "ac", "abcd", "x-draft", "-draft", "x-draft2", "exact", "Exact")
        if principal.may_open(n)
    ] == ["abc", "a-c", "x-draft", "-draft", "exact"]
    assert not Principal("acme", "editor", None, {}, ()).may_open("anything")
    assert Principal("acme", "editor", None, {}).may_open("anything")
    with pytest.raises(DocumentNotAllowed) as info:
        principal.check_document("other")
    assert (info.value.close_code, info.value.http_status) == (4003, 403)
    with pytest.raises(ReadOnly) as info:
        Principal("acme", "editor", None, {}, None, True).check_write()
    assert (info.value.close_code, info.value.reason) == (4003, READ_ONLY)


MALFORMED = {
    "documents not a list": {"documents": "proj-*"},
    "documents an object": {"documents": {"proj-*": True}},
    "a pattern not a string": {"documents": ["ok", 1]},
    "an empty pattern": {"documents": [""]},
    "a pattern with a slash": {"documents": ["a/b"]},
    "a pattern with brackets": {"documents": ["proj-[12]"]},
    "access unknown": {"access": "admin"},
    "access not a string": {"access": True},
    "access rw": {"access": "rw"},
}


@pytest.mark.parametrize("claims", MALFORMED.values(), ids=list(MALFORMED))
def test_access_claims_refuses_malformed_claims(claims):
    with pytest.raises(InvalidToken) as info:
        access_claims(claims)
    assert info.value.close_code == 4002


def test_access_claims():
    assert access_claims({}) == (None, False)
    assert access_claims({"documents": None, "access": None}) == (None, False)
    assert access_claims({"documents": [], "access": "write"}) == ((), False)
    assert access_claims({"documents": ["a-*", "b?", "c.d_e"], "access": "read"}) == (
        ("a-*", "b?", "c.d_e"),
        True,
    )


def test_malformed_claims_are_refused_with_4002(server):
    steps = [
        op_open(server, name, "doc", make_token(**claims)) for name, claims in MALFORMED.items()
    ]
    results = scenario(*steps, op_open(server, "fine", "doc", make_token(documents=["doc"])))
    assert opens(results) == [(name, 4002) for name in MALFORMED] + [("fine", "synced")]
    reasons = {r["id"]: r["reason"] for r in results if r["op"] == "open" and "reason" in r}
    assert reasons["documents not a list"] == "invalid documents claim: must be a list of patterns"
    assert reasons["a pattern with brackets"] == "invalid documents claim: bad pattern 'proj-[12]'"
    assert reasons["access unknown"] == 'invalid access claim: must be "write" or "read"'

    status, _, body = discover(server, "doc", make_token(access="admin"))
    assert (status, body["code"]) == (401, 4002)


def test_document_check_runs_after_the_name_and_before_region_and_quota_gates(
    start_server, tmp_path
):
    port = free_port()
    config = plan_config(
        tmp_path,
        {"closed": {"max_connections": 0}},
        apps=(("acme", "notes", "closed"),),
        region="here",
        regions={"here": f"ws://127.0.0.1:{port}", "there": "ws://127.0.0.1:9"},
        pins=[{"documents": "pinned-*", "region": "there"}],
    )
    server = start_server(config=config, port=port)
    limited = make_token(documents=["proj-*"])

    def code(name, token):
        outcome = open_ws(server.url, name, token)
        outcome.close()
        return "accepted" if outcome.accepted else outcome.code

    assert code("bad~name", limited) == 4007  # the name rule first
    assert code("pinned-1", limited) == 4003  # before the region gate ...
    assert code("pinned-1", make_token()) == 4009  # ... which the claim-less token reaches
    assert code("proj-1", make_token(app="notes", documents=["other"])) == 4003  # before quotas
    assert code("proj-1", make_token(app="notes", documents=["proj-*"])) == 4004
    assert code("proj-1", limited) == "accepted"
    assert discover(server, "pinned-1", limited)[2] == {
        "error": "document not allowed",
        "code": 4003,
    }


# --- read-only connections ---------------------------------------------------------


def stored(tmp_path, name):
    """The document as the server's SQLite storage holds it (tenant acme, app editor)."""
    store = open_store(f"sqlite:///{tmp_path}/wsserver.sqlite3")
    try:
        loaded = store.load(DocKey("acme", "editor", name))
    finally:
        store.close(timeout=5)
    doc = Doc()
    for update in loaded.updates:
        doc.apply_update(update)
    return str(doc.get("text", type=Text)), doc.get("map", type=Map).to_py()


def writer_and_viewer(script, server, room):
    """Run tests/node/SCRIPT with a writer's and a read-only viewer's token on `room`."""
    tokens = {"writeToken": make_token(sub="writer"), "readToken": read_token(sub="viewer")}
    return run_node(script, json.dumps({"url": server.url, "room": room, **tokens}))


def test_a_read_only_viewer_sees_everything_and_changes_nothing(server, tmp_path):
    out = writer_and_viewer("readonly.mjs", server, "viewed")
    # Its edits reached neither the writer, nor a late joiner, nor the store ...
    nothing = {"text": "hello", "map": {}, "list": []}
    assert out["writerAfterEdit"] == nothing
    assert out["writerAfterReconnect"] == nothing  # ... nor did its step 2 after a reconnect
    assert out["writer"] == out["late"] == {"text": "hello world", "map": {}, "list": []}
    assert out["readerConfirmed"] is False and out["readerSentUpdates"] >= 2  # never echoed
    # ... while it saw the writer's edits live (on top of its own local ones).
    assert out["reader"] == {"text": "EVIL hello world", "map": {"evil": True}, "list": []}
    # Two dropped changes, not more than ten: never closed for them.
    assert 4003 not in [c["code"] for c in out["readerCloses"] if c]
    server.stop()
    assert stored(tmp_path, "viewed") == ("hello world", {})
    log = server.log()
    assert "read-only connection" in log and "access=read" in log and "user=viewer" in log


def test_a_read_only_client_learns_it_before_it_syncs(server):
    """Issue 22 item 4: /discovery answers the token's access, and a read-only
    connection gets an auth message naming it before its provider syncs, which
    providers that do not look for it ignore (tests/node/access.mjs)."""
    out = writer_and_viewer("access.mjs", server, "learns")
    assert out["readerAccess"] == [{"access": "read", "synced": False}]
    assert out["writerAccess"] == []  # writers get no such message
    assert out["logged"] == []  # no provider warned or failed to read a message
    assert out["closes"] == [[], [], []]
    assert discover(server, "learns", read_token())[2]["access"] == "read"
    assert discover(server, "learns", make_token())[2]["access"] == "write"


def test_a_read_only_client_that_keeps_writing_is_closed_with_4003(server):
    token = read_token(sub="viewer")
    results = scenario(
        op_open(server, "r", "doc", token),
        op_open(server, "w", "doc", make_token(sub="writer")),
        {"op": "edits", "id": "r", "count": MAX_DROPPED, "settle": 500},
        {"op": "edits", "id": "r", "count": 1, "settle": 5000},
        {"op": "edits", "id": "w", "count": 1, "settle": 200},
    )
    edits = [r for r in results if r["op"] == "edits"]
    assert edits[0]["status"] == "open"  # ten are dropped quietly
    assert (edits[1]["status"], edits[1]["code"], edits[1]["reason"]) == (
        "closed",
        4003,
        f"{READ_ONLY}; its 11 document changes were dropped",
    )  # the eleventh closes, and its reason says why
    assert edits[2]["status"] == "open"  # the writer is not affected
    server.wait_log(
        f"4003 {READ_ONLY}; its 11 document changes were dropped (app=acme/editor "
        "user=viewer access=read"
    )
    assert healthz(server)["read_only"] == {"dropped": MAX_DROPPED + 1, "closed": 1}
    assert token not in server.log()


def _doc_with(text="hello world", delete=(0, 3)):
    doc = Doc()
    t = doc.get("text", type=Text)
    t += text
    del t[delete[0] : delete[1]]
    return doc


def _copy(doc):
    copy = Doc()
    copy.apply_update(doc.get_update())
    return copy


def test_would_change_judges_a_step_2_without_applying_it():
    doc = _doc_with()
    before = doc.get_update()
    same = _copy(doc)
    # A reconnecting viewer's step 2: nothing new, but the whole delete set again.
    step2 = same.get_update(doc.get_state())
    assert step2 != b"\x00\x00" and not would_change(doc, step2)
    assert not would_change(doc, doc.get_update())
    assert not would_change(doc, b"\x00\x00")

    inserted = _copy(doc)
    inserted.get("text", type=Text).insert(0, "!")
    assert would_change(doc, inserted.get_update(doc.get_state()))

    deleted = _copy(doc)
    del deleted.get("text", type=Text)[3:5]  # deletes what the document still has
    assert would_change(doc, deleted.get_update(doc.get_state()))

    other = Doc()  # an update about a client the document never saw
    other.get("map", type=Map)["k"] = 1
    assert would_change(doc, other.get_update())

    assert doc.get_update() == before  # judged, never applied
    with pytest.raises(Exception) as info:
        would_change(doc, b"garbage!")
    assert info.value.close_code == 1007


# --- wsserver token ----------------------------------------------------------------


def _cli(tmp_path, *args):
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps(base_config(tmp_path)))
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "wsserver",
            "token",
            "--config",
            str(config),
            "--tenant",
            "acme",
            "--app",
            "editor",
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_token_command_mints_documents_and_read_only(tmp_path):
    out = _cli(
        tmp_path,
        "--sub",
        "alice",
        "--documents",
        "proj-1-*,notes-alice",
        "--documents",
        "x",
        "--read-only",
    )
    assert out.returncode == 0, out.stderr
    claims = jwt.decode(out.stdout.strip(), SECRET, algorithms=["HS256"], audience="WireSocket.API")
    assert claims["documents"] == ["proj-1-*", "notes-alice", "x"]
    assert claims["access"] == "read"
    plain = jwt.decode(
        _cli(tmp_path).stdout.strip(), SECRET, algorithms=["HS256"], audience="WireSocket.API"
    )
    assert "documents" not in plain and "access" not in plain

    bad = _cli(tmp_path, "--documents", "proj-[1]")
    assert bad.returncode == 2 and "invalid documents claim" in bad.stderr and not bad.stdout


def test_claims_hold_on_every_node_of_every_region(start_server, tmp_path):
    eu, us = start_nodes(start_server, tmp_path)
    name = unique("proj")
    holder = open_ws(eu.url, name, make_token())  # the document is live in eu
    assert holder.accepted
    viewer = read_token(sub="viewer", documents=[name])
    for node in (eu, us):
        refused = open_ws(node.url, unique("other"), viewer)
        assert (refused.code, refused.reason) == (4003, "document not allowed")
    # us sends the viewer to eu, where it is read-only too.
    assert open_ws(us.url, name, viewer).code == 4009
    outcome = open_ws(eu.url, name, viewer)
    assert outcome.accepted
    edit = Doc()
    edit.get("text", type=Text).insert(0, "x")
    for _ in range(MAX_DROPPED + 1):
        outcome.ws.send_binary(codec.sync_update(edit.get_update()))
    while (frame := outcome.ws.recv_frame()).opcode != websocket.ABNF.OPCODE_CLOSE:
        assert frame.data[:2] != b"\x00\x02"  # never an echo of its update
    reason = f"{READ_ONLY}; its {MAX_DROPPED + 1} document changes were dropped"
    assert frame.data == struct.pack("!H", 4003) + reason.encode()
    holder.close()
