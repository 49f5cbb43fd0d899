"""Interop on Postgres storage: the real y-websocket provider against `wsserver serve`
processes whose documents live in a real Postgres, while that Postgres or the server
misbehaves. (kill -9 of the server on Postgres is in test_interop.py, next to SQLite's.)"""

import json
import signal
import time

import pytest
from conftest import make_token, run_node
from test_interop import NodeProcess, assert_close, assert_ok, cases, room


def outage_config(pg, **overrides):
    # compaction on, so commits and compactions both meet the outage
    return dict(storage=pg.url(), compact_after_updates=40, **overrides)


@pytest.mark.long
@pytest.mark.parametrize("how", ["sigstop", "restart"])
def test_edits_during_a_postgres_outage_are_kept_and_confirmed_after(
    start_server, own_postgres, how
):
    server = start_server(**outage_config(own_postgres))
    name = room(f"outage-{how}")
    node = NodeProcess(
        "outage.mjs",
        {
            "url": server.url,
            "token": make_token(),
            "room": name,
            "durationMs": 7000,
            "intervalMs": 40,
        },
    )
    try:
        node.wait_phase("writing", 20)
        time.sleep(1.5)
        if how == "sigstop":
            own_postgres.pause()
            time.sleep(3)
            own_postgres.resume()
        else:
            own_postgres.stop()
            time.sleep(3)
            own_postgres.start()
        r = node.result(120)
    finally:
        node.kill()
        if how == "sigstop":
            own_postgres.resume()
    count = r["count"]
    assert count > 100
    # writes went on during the outage, unconfirmed (no echo before the commit) ...
    assert r["maxUnconfirmed"] >= 30, r["maxUnconfirmed"]
    # ... and every one was confirmed afterwards, without the clients being dropped
    assert r["content"]["text"] == "".join(f"[{i}]" for i in range(count))
    assert r["wCloses"] == [] and r["oCloses"] == []
    # the outage was logged once per 10 s, not once per update, retry or reconnect attempt
    log = server.log()
    assert log.count("storage commit of") <= 2, log
    assert log.count("error connecting") <= 1, log
    assert "connection requested" not in log  # the pool's INFO chatter is off
    # kept: a fresh process (no flush at exit) loads all of it from Postgres
    assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    server.restart()
    read = cases(server, {"id": "read", "room": name, "token": make_token(), "expect": "ok"})
    assert_ok(read["read"])
    assert read["read"]["content"] == r["content"]


@pytest.mark.long
def test_document_that_cannot_be_loaded_is_refused_and_retried(
    start_server, own_postgres, redis_url
):
    """1011 while Postgres is down (the registry is in Redis here, so the claim succeeds
    and the load is what fails); the next connection after it is back loads it."""
    server = start_server(storage=own_postgres.url(), redis=redis_url)
    name = room("load")
    first = cases(
        server, {"id": "w", "room": name, "token": make_token(), "expect": "ok", "write": "stored "}
    )["w"]
    assert_ok(first)
    time.sleep(0.3)
    # a second document, never loaded, while Postgres is down
    other = room("load-other")
    own_postgres.stop()
    try:
        refused = cases(
            server,
            *[
                {"id": f"c{i}", "room": other, "token": make_token(), "expect": "close"}
                for i in range(3)
            ],
        )
        for result in refused.values():
            assert_close(result, 1011)
    finally:
        own_postgres.start()
    again = cases(
        server,
        {"id": "again", "room": other, "token": make_token(), "expect": "ok", "write": "after"},
    )["again"]
    assert_ok(again)
    assert again["content"]["text"] == "after"
    # the log said it once, not once per refused connection
    assert server.log().count("load failed") == 1, server.log()


@pytest.mark.long
@pytest.mark.parametrize("storage", ["postgres", "sqlite"])
def test_two_servers_on_one_database_converge_after_reload(
    start_server, storage, request, tmp_path
):
    """Each process loads and compacts the document on its own; the compaction rule
    (count and sum of the row ids it has seen, merged with the stored snapshot) keeps
    either from dropping what the other stored, so both reload the same, complete
    document. (SQLite: two processes sharing the file, for comparison.)"""
    url = (
        request.getfixturevalue("pg_url")
        if storage == "postgres"
        else f"sqlite:///{tmp_path}/shared.sqlite3"
    )
    settings = dict(
        storage=url,
        unload_after=0.2,
        compact_after_updates=7,
        registry={"release_after_seconds": 0.2},
    )
    servers = [start_server(**settings), start_server(**settings)]
    name = room("two-servers")
    edits = 40
    r = run_node(
        "two_servers.mjs",
        json.dumps(
            {
                "urls": [s.url for s in servers],
                "token": make_token(),
                "room": name,
                "edits": edits,
                "settleMs": 2000,
            }
        ),
        timeout=90,
    )
    first, second = r["contents"]
    assert first == second
    assert first["map"] == {f"{tag}{i}": i for tag in "ab" for i in range(edits)}
    for server in servers:
        assert "compaction failed" not in server.log(), server.log()
    if storage == "postgres":
        import psycopg

        with psycopg.connect(url) as conn:  # they compacted it meanwhile: a snapshot is there
            assert (
                conn.execute(
                    "SELECT count(*) FROM wsserver_snapshots WHERE name = %s", (name,)
                ).fetchone()[0]
                == 1
            )
