"""The admin console's API (issue 26): stored documents, connections and disconnect,
processes, the last hour, tenants, named admins with roles, the audit trail; on one
process and across two (gunicorn, Redis, Postgres)."""

import urllib.parse

import pytest
from test_ops import Gunicorn, closes_once_closed, doc_name, eventually, http, write_config
from test_ops import providers as providers  # a fixture

OPERATOR = "alice-operator-token-0123456789"
VIEWER = "victor-viewer-token-0123456789"
LEGACY = "admin-token-0123456789abcdef"
ADMINS = {
    "token": LEGACY,
    "tokens": [
        {"name": "alice", "token": OPERATOR, "role": "operator"},
        {"name": "victor", "token": VIEWER, "role": "viewer"},
    ],
}


def api(server, path, token=VIEWER, method="GET"):
    return http(method, f"{server.http}/admin/api/{path}", token=token)


def ok(server, path, token=VIEWER, method="GET"):
    status, body, _ = api(server, path, token, method)
    assert status == 200, (path, status, body)
    return body


@pytest.mark.long
def test_stored_documents_are_searched_paged_and_sized_as_the_inspector_does(
    start_server, providers
):
    server = start_server(admin=ADMINS, unload_after=0.2)
    base = doc_name("stored")
    live = providers(server.url, f"{base}-live", ["alice"])
    live.insert(0, "hello")
    for i in range(3):  # stored, nobody connected
        quiet = providers(server.url, f"{base}-{i}", ["bob"])
        quiet.insert(0, "x" * (i + 1))
        quiet.quit()
    first = eventually(
        lambda: (lambda b: not any(d["live"] for d in b["documents"]) and b)(
            ok(server, f"documents?stored=1&q=acme/editor/{base}-&limit=3")
        ),
        what="the quiet documents unloaded",
    )
    assert [d["name"] for d in first["documents"]] == [f"{base}-{i}" for i in range(3)]
    assert first["cursor"]
    rest = ok(server, f"documents?stored=1&q={base}-&cursor={first['cursor']}")
    assert [(d["name"], d["live"]) for d in rest["documents"]] == [(f"{base}-live", True)]
    assert rest["cursor"] is None
    row = rest["documents"][0]
    assert (row["tenant"], row["app"]) == ("acme", "editor")
    assert row["updated_at"].endswith("+00:00")
    detail = ok(server, f"documents/acme/editor/{base}-live")
    assert row["size"] == detail["bytes"] and row["size"] > 0  # one size everywhere
    # a stored document opens like a live one
    archived = ok(server, f"documents/acme/editor/{base}-2")
    assert archived["content"] == {"content": "xxx"}
    assert archived["updated_at"] == first["documents"][2]["updated_at"]  # from the index
    assert archived["size"] == first["documents"][2]["size"]
    assert api(server, "documents?stored=1&cursor=nonsense")[0] == 400
    assert ok(server, "documents?stored=0")["documents"]  # live only, as before


def test_connections_disconnect_roles_and_the_audit_trail(start_server, providers):
    server = start_server(admin=ADMINS)
    room = doc_name("conns")
    p = providers(server.url, room, ["alice", "bob"])
    p.insert(0, "hi")
    listed = ok(server, f"connections?doc={room}")["connections"]
    assert sorted(c["user"] for c in listed) == ["alice", "bob"]
    bob = next(c for c in listed if c["user"] == "bob")
    assert bob["access"] == "write" and bob["ip"] == "127.0.0.1" and bob["tenant"] == "acme"
    assert bob["messages_in"] > 0 and bob["bytes_out"] > 0 and bob["since"].endswith("+00:00")
    assert ok(server, f"connections?doc={room}&user=bob")["connections"] == [bob]
    assert ok(server, "connections?ip=10.9.9.9")["connections"] == []
    reason = urllib.parse.quote("token leaked")
    # a viewer reads everything but may not act
    status, body, _ = api(server, f"connections/{bob['id']}?code=4003", VIEWER, "DELETE")
    assert (status, body["code"]) == (403, 403), body
    assert api(server, f"documents/acme/editor/{room}", VIEWER, "DELETE")[0] == 403
    assert api(server, f"connections/{bob['id']}?code=1000", OPERATOR, "DELETE")[0] == 400
    closed = ok(server, f"connections/{bob['id']}?code=4003&reason={reason}", OPERATOR, "DELETE")
    assert closed == {"closed": True}
    eventually(
        lambda: bob["id"] not in {c["id"] for c in ok(server, "connections")["connections"]},
        what="bob's connection gone",
    )
    assert api(server, f"connections/{bob['id']}?code=4003", OPERATOR, "DELETE")[0] == 404
    closes = closes_once_closed(p, 1)
    assert {"code": 4003, "reason": "token leaked"} in closes[1], closes
    assert not any(c and c.get("code") == 4003 for c in closes[0])  # alice stayed
    p.quit()
    # the old single token is the operator "admin"
    assert ok(server, f"documents/acme/editor/{room}", LEGACY, "DELETE")["deleted"] is True
    entries = ok(server, "audit")["entries"]
    seen = [(e["admin"], e["role"], e["action"], e["target"]) for e in entries]
    assert seen[:4] == [
        ("admin", "operator", "delete", f"acme/editor/{room}"),
        ("alice", "operator", "disconnect", bob["id"]),  # the 404: nothing closed
        ("alice", "operator", "disconnect", bob["id"]),
        ("victor", "viewer", "delete", f"acme/editor/{room}"),
    ], seen
    assert entries[2]["details"] == {"closed": True, "code": 4003, "reason": "token leaked"}
    assert entries[3]["details"]["refused"] and entries[3]["ip"] == "127.0.0.1"
    assert ("victor", "viewer", "disconnect", bob["id"]) in seen
    assert entries[0]["at"].endswith("+00:00")
    log = server.log()
    assert f"admin disconnect {bob['id']} from 127.0.0.1 by alice code=4003" in log


def test_processes_stats_and_tenants(start_server, providers):
    server = start_server(
        admin=ADMINS,
        plans={"small": {"max_connections": 10, "max_documents": 5}},
    )
    room = doc_name("stats")
    p = providers(server.url, room, ["alice", "bob"])
    p.insert(0, "one")
    [process] = ok(server, "processes")["processes"]
    assert process["ready"] is True and process["connections"] == 2 and process["rooms"] == 1
    assert process["store"] == "ok" and process["uptime"] >= 0 and process["pid"]
    # What the charts draw: the last points, the one under way last. Messages sent reach
    # the counters once a second, so the update's deliveries can fall into the 10 s point
    # after the update's: once the deliveries are in, the update and its commit are too.
    points = eventually(
        lambda: (lambda ps: sum(p["deliveries"] for p in ps) > 0 and ps)(
            ok(server, "stats?minutes=60")["points"]
        ),
        what="deliveries counted",
    )
    assert points[-1]["connections"] == 2
    assert sum(p["updates"] for p in points) > 0, points
    commits = [p for p in points if p["commit_p99"] is not None]
    assert commits and all(p["commit_p50"] <= p["commit_p99"] for p in commits), points
    assert api(server, "stats?minutes=0")[0] == 400
    tenants = {(t["tenant"], t["app"]): t for t in ok(server, "tenants")["tenants"]}
    editor = tenants[("acme", "editor")]
    assert editor["live_documents"] >= 1 and editor["connections"] == 2 and editor["users"] == 2
    assert editor["stored_documents"] >= 1 and editor["stored_bytes"] > 0
    assert "max_connections" in editor["limits"]
    p.quit()


def test_admin_settings_are_checked(tmp_path):
    from conftest import base_config

    from wsserver.app import create_app
    from wsserver.errors import ConfigError

    for admin, message in [
        ({"tokens": [{"name": "a", "token": OPERATOR, "role": "root"}]}, "role"),
        ({"tokens": [{"name": "a", "token": "short"}]}, "too short"),
        (
            {"tokens": [{"name": "a", "token": OPERATOR}, {"name": "a", "token": VIEWER}]},
            "same name",
        ),
        ({"token": OPERATOR, "tokens": [{"name": "b", "token": OPERATOR}]}, "same token"),
        ({}, "needs"),
    ]:
        with pytest.raises(ConfigError, match=message):
            create_app(base_config(tmp_path, admin=admin))


def on_two_processes(server, held, another, timeout=20):
    """The connections to the documents of `held` once every one is listed and they are
    on two processes; `another()` opens one more (the kernel may hand a worker under load
    every new connection for a while)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        listed = [c for c in ok(server, "connections")["connections"] if c["doc"] in held]
        if len(listed) >= len(held) and len({c["process"] for c in listed}) == 2:
            return listed
        assert time.monotonic() < deadline, f"not on two processes: {listed}"
        if len(listed) >= len(held):  # all listed, on one process: one more
            another()
        time.sleep(0.2)


@pytest.mark.long
def test_a_connection_on_another_process_is_listed_and_closed(
    tmp_path, providers, redis_url, pg_url
):
    """Two gunicorn workers, Redis, Postgres: whichever worker answers lists every
    worker's connections and processes, and closes a connection the other one holds."""
    server = Gunicorn(
        write_config(tmp_path, admin=ADMINS, redis=redis_url, storage=pg_url), workers=2
    )
    try:
        held = {}  # room -> its provider (one connection each)

        def another():
            room = doc_name("cluster")
            held[room] = providers(server.url, room, [f"user-{len(held)}"])
            held[room].insert(0, "x")

        for _ in range(4):
            another()
        mine = on_two_processes(server, held, another)
        assert len(ok(server, "processes")["processes"]) == 2
        for c in mine:  # each closed by whichever worker answers the request
            assert ok(server, f"connections/{c['id']}?code=4404&reason=bye", OPERATOR, "DELETE")
        for p in held.values():
            assert closes_once_closed(p, 0) == [[{"code": 4404, "reason": "bye"}]]
            assert p.quit()["closes"] == [[{"code": 4404, "reason": "bye"}]]
        rooms = sorted(held)
        stored = ok(server, f"documents?stored=1&q={rooms[0][:8]}")["documents"]
        assert {d["name"] for d in stored} >= set(rooms)
        points = ok(server, "stats?minutes=5")["points"]
        assert sum(p["updates"] for p in points) > 0
        actions = [e["action"] for e in ok(server, "audit")["entries"]]
        assert actions.count("disconnect") == len(held)
        assert server.stop() == 0
    finally:
        server.kill()


def test_the_console_works_offline_and_has_an_icon(tmp_path):
    """Every file the page loads is served here (no CDN); /favicon.ico is an icon, with
    or without the console (it was a 426)."""
    import re

    from conftest import base_config

    from wsserver.app import create_app

    for admin in [ADMINS, None]:
        app = create_app(base_config(tmp_path, admin=admin))
        try:
            client = app.test_client()
            icon = client.get("/favicon.ico")
            assert icon.status_code == 200 and icon.mimetype == "image/svg+xml"
            if admin is None:
                assert client.get("/admin/static/console.js").status_code == 404
                continue
            page = client.get("/admin").get_data(as_text=True)
            loaded = re.findall(r'(?:src|href)="([^"]+)"', page)
            assert loaded and all(url.startswith("/") for url in loaded), loaded
            for url in loaded:
                assert client.get(url).status_code == 200, url
            script = client.get("/admin/static/console.js").get_data(as_text=True)
            assert "http://" not in script and "https://" not in script
        finally:
            app.extensions["wsserver"].shutdown(timeout=1)


def test_the_last_hour_is_summed_over_processes_point_by_point():
    from wsserver.http.admin.stats import point, summed

    inf = float("inf")
    before = {"updates": 10, "deliveries": 0, "refusals": {"4004": 1}, "errors": 0,
              "buckets": {0.001: 0, 0.01: 0, inf: 0}}  # fmt: skip
    after = {"updates": 30, "deliveries": 100, "refusals": {"4004": 3, "4001": 1}, "errors": 1,
             "buckets": {0.001: 90, 0.01: 99, inf: 100}}  # fmt: skip
    p = point(before, after, 10.0, 4, 100.0)
    assert p == {
        "t": 100.0,
        "connections": 4,
        "updates": 2.0,
        "deliveries": 10.0,
        "refusals": {"4004": 2, "4001": 1},
        "commit_p50": 0.001,  # the bound of the bucket the quantile falls in
        "commit_p99": 0.01,
        "errors": 1,
    }
    other = dict(p, connections=1, refusals={"4004": 5}, commit_p99=0.1)
    later = dict(p, t=110.0)
    assert summed([[p, later], [other]]) == [
        dict(
            p,
            connections=5,
            updates=4.0,
            deliveries=20.0,
            errors=2,
            refusals={"4004": 7, "4001": 1},
            commit_p99=0.1,
        ),  # fmt: skip
        later,
    ]


def test_the_board_entry_beats_on_the_process_heartbeat_and_leaves_with_the_process(
    start_server, redis_url
):
    """The admin board's entry is named by the process id (support/liveness.py), renewed
    on the process heartbeat within the process TTL (the test config: 0.25 s / 2 s), and
    taken off the board when the process stops."""
    import time

    import redis
    from conftest import TEST_PROCESS

    server = start_server(admin=ADMINS, redis=redis_url)
    [process] = ok(server, "processes")["processes"]
    key = f"wsserver:admin:live:{process['process']}"
    client = redis.Redis.from_url(redis_url)
    ttl_ms = TEST_PROCESS["ttl_seconds"] * 1000
    # /processes answers from the process itself: its first beat may not be on the board yet
    eventually(lambda: client.exists(key), timeout=5, what="the board entry")
    deadline = time.monotonic() + TEST_PROCESS["ttl_seconds"] + 0.5
    while time.monotonic() < deadline:  # outlives its TTL: renewed on every beat
        assert 0 < client.pttl(key) <= ttl_ms, client.pttl(key)
        time.sleep(0.1)
    assert server.stop() == 0
    assert client.exists(key) == 0  # its goodbye, not its expiry
