"""Storage and Redis outages, with real servers, sockets, SQLite locks and Redis stalls.

- Commits failing (another process holds the SQLite file's write lock): a handshake for
  a document being flushed before its release gets an answer (never a hang), SIGTERM
  ends the process with an error logged, nothing confirmed is lost.
- Redis frozen (SIGSTOP) longer than the registry TTL: documents held here stay served
  (no "claim lost"), new handshakes wait at most about a second on Redis, the claims
  are re-asserted once Redis answers again.
"""

import signal
import sqlite3
import time
import uuid

import pytest
import redis as redis_lib
import websocket
from conftest import base_config, free_port, make_token
from test_bad_input import Client, Editor

from wsserver.protocol import codec
from wsserver.transport import frames

FAST_REGISTRY = {"release_after_seconds": 0.2, "ttl_seconds": 1.0, "heartbeat_seconds": 0.3}


def two_regions(tmp_path, **overrides):
    """A config for region eu of eu+us (the us node never runs: only eu is tested)."""
    port = free_port()
    regions = {"eu": f"ws://127.0.0.1:{port}", "us": f"ws://127.0.0.1:{free_port()}"}
    return base_config(
        tmp_path, region="eu", regions=regions, registry=FAST_REGISTRY, **overrides
    ), port


def handshake_outcome(server, name, timeout=10):
    """('served', seconds) when the server starts syncing, or (close code, seconds)."""
    started = time.monotonic()
    ws = websocket.create_connection(f"{server.url}/{name}?token={make_token()}", timeout=timeout)
    try:
        opcode, data = ws.recv_data()
        elapsed = time.monotonic() - started
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return frames.parse_close(data)[0], elapsed
        return "served", elapsed
    finally:
        ws.close(timeout=1)


def confirmed_writer(server, name, client_id):
    """(editor, client) of a writer of `name` whose "kept" the server confirmed."""
    editor = Editor(client_id=client_id)
    client = Client(server, name)
    kept = codec.sync_update(editor.insert("kept"))
    client.send(kept)
    client.wait_for(kept)
    return editor, client


class WriteLock:
    """Holds the SQLite file's write lock from this process: the server's commits fail
    (busy) until `release()`."""

    def __init__(self, path):
        self.db = sqlite3.connect(path, isolation_level=None, timeout=10)
        self.db.execute("BEGIN IMMEDIATE")

    def release(self):
        self.db.execute("ROLLBACK")
        self.db.close()


def confirmed_then_stuck(server, tmp_path, name, client_id, unconfirmed):
    """A writer's "kept" is confirmed; then storage's write lock is taken and the writer
    sends `unconfirmed` (it cannot commit) and leaves; a second later its release is
    due and the flush before it waits on storage. Returns (editor, lock)."""
    editor = Editor(client_id=client_id)
    writer = Client(server, name)
    confirmed = codec.sync_update(editor.insert("kept"))
    writer.send(confirmed)
    writer.wait_for(confirmed)
    lock = WriteLock(tmp_path / "wsserver.sqlite3")
    writer.send(codec.sync_update(editor.insert(unconfirmed)))
    time.sleep(0.3)
    writer.close()
    time.sleep(1.0)
    return editor, lock


def test_failing_commits_never_hang_a_handshake_and_lose_nothing_confirmed(start_server, tmp_path):
    config, port = two_regions(tmp_path)
    server = start_server(config=config, port=port)
    name = f"stuck-{uuid.uuid4().hex[:8]}"
    # the flush before the release waits on storage (for ever, before)
    editor, lock = confirmed_then_stuck(server, tmp_path, name, 31, " unconfirmed")
    try:
        code, elapsed = handshake_outcome(server, name)
        assert code in ("served", 1013) and elapsed < 5, (code, elapsed)
        code, elapsed = handshake_outcome(server, name)
        assert code in ("served", 1013) and elapsed < 5, (code, elapsed)
    finally:
        lock.release()
    # Storage is back: the queued update commits, and the document holds both edits.
    deadline = time.monotonic() + 20
    while True:
        code, _ = handshake_outcome(server, name)
        if code == "served":
            break
        assert time.monotonic() < deadline, "never served after storage came back"
        time.sleep(0.3)
    reader = Client(server, name)
    assert str(reader.sync().get("t", type=type(editor.text))) == "kept unconfirmed"
    reader.close()


@pytest.mark.long
def test_sigterm_while_commits_fail_ends_with_an_error_and_keeps_what_was_confirmed(
    start_server, tmp_path
):
    config, port = two_regions(tmp_path, shutdown_timeout=3)
    server = start_server(config=config, port=port)
    name = f"stuck-stop-{uuid.uuid4().hex[:8]}"
    editor, lock = confirmed_then_stuck(server, tmp_path, name, 32, " never confirmed")
    try:
        started = time.monotonic()
        server.stop(signal.SIGTERM, timeout=30)  # before: blocked in Registry.close for ever
        # shutdown_timeout bounds the whole shutdown (before: 9 s, the registry's and the
        # store's closing waited on storage after the flush), plus slack for a loaded box.
        assert time.monotonic() - started < 3 + 3
    finally:
        lock.release()
    log = server.log()
    assert "ERROR" in log and "shutdown complete (flushed=False" in log
    server.restart()
    reader = Client(server, name)
    assert str(reader.sync().get("t", type=type(editor.text))).startswith("kept")
    reader.close()


@pytest.mark.long
def test_a_redis_stall_keeps_documents_served_and_handshakes_short(
    start_server, tmp_path, own_redis
):
    config, port = two_regions(
        tmp_path, redis=own_redis.url, rate_limit={"handshakes_per_ip": "1000/minute"}
    )
    server = start_server(config=config, port=port)
    name = f"stall-{uuid.uuid4().hex[:8]}"
    editor = Editor(client_id=33)
    writer = Client(server, name)
    first = codec.sync_update(editor.insert("a"))
    writer.send(first)
    writer.wait_for(first)
    own_redis.proc.send_signal(signal.SIGSTOP)
    try:
        # A new document cannot be claimed while Redis is frozen: 1013, quickly.
        code, elapsed = handshake_outcome(server, f"new-{uuid.uuid4().hex[:8]}")
        assert code == 1013 and elapsed < 2.5, (code, elapsed)
        code, elapsed = handshake_outcome(server, f"new-{uuid.uuid4().hex[:8]}")
        assert code == 1013 and elapsed < 1.0, (code, elapsed)  # fails fast now
        # The live document keeps working for three TTLs: edits confirmed, nobody closed,
        # and a second client of the document is served.
        for i in range(10):
            message = codec.sync_update(editor.insert(str(i)))
            writer.send(message)
            writer.wait_for(message)
            time.sleep(0.3)
        code, _ = handshake_outcome(server, name)
        assert code == "served"
    finally:
        own_redis.proc.send_signal(signal.SIGCONT)
    message = codec.sync_update(editor.insert("!"))
    writer.send(message)
    writer.wait_for(message)
    assert "claim on" not in server.log() or "lost" not in server.log()
    # Re-asserted: Redis records region eu for the document again.
    client = redis_lib.Redis.from_url(own_redis.url, decode_responses=True)
    key = f"wsserver:registry:acme/editor/{name}"
    deadline = time.monotonic() + 5
    while client.hget(key, "region") != "eu":
        assert time.monotonic() < deadline, "claim not re-asserted"
        time.sleep(0.1)
    writer.close()
    server.wait_log("re-asserted")  # logged right after the claim Redis shows


@pytest.mark.long
def test_a_claim_reasserted_while_the_database_is_frozen_stays_renewed(
    start_server, tmp_path, own_redis, own_postgres, request
):
    """Redis frozen past the TTL, then back while Postgres is frozen: the node re-asserts
    its claim and refreshes the document from storage, which does not answer. The
    heartbeat goes on renewing the claim meanwhile (before: it waited on that load, so
    the claim expired within the TTL and stayed gone until Postgres thawed)."""
    config, port = two_regions(tmp_path, redis=own_redis.url, storage=own_postgres.url())
    server = start_server(config=config, port=port)
    name = f"reassert-{uuid.uuid4().hex[:8]}"
    editor, writer = confirmed_writer(server, name, 34)
    client = redis_lib.Redis.from_url(own_redis.url, decode_responses=True)
    key = f"wsserver:registry:acme/editor/{name}"
    assert client.hget(key, "region") == "eu"
    request.addfinalizer(own_postgres.resume)  # however this ends
    request.addfinalizer(lambda: own_redis.proc.send_signal(signal.SIGCONT))
    own_redis.proc.send_signal(signal.SIGSTOP)
    time.sleep(2 * FAST_REGISTRY["ttl_seconds"])  # the claim expires
    own_postgres.pause()
    own_redis.proc.send_signal(signal.SIGCONT)
    server.wait_log("re-asserted", timeout=5)
    deadline = time.monotonic() + 3 * FAST_REGISTRY["ttl_seconds"]
    while time.monotonic() < deadline:
        assert client.hget(key, "region") == "eu", "the claim was not renewed"
        time.sleep(0.05)
    own_postgres.resume()
    message = codec.sync_update(editor.insert("b"))
    writer.send(message)
    writer.wait_for(message, timeout=10)
    writer.close()


@pytest.mark.long
def test_an_admin_delete_while_commits_fail_closes_nobody_and_loses_nothing(start_server, tmp_path):
    """Commits failing (SQLite's write lock held elsewhere): an admin DELETE answers a JSON
    503 at once, before closing anyone (the writer is not told the document was deleted),
    and deletes nothing; once commits go through, the update sent meanwhile is confirmed
    and the same DELETE deletes the document."""
    from test_ops import ADMIN_TOKEN, http

    server = start_server(admin={"token": ADMIN_TOKEN})
    name = f"stuck-delete-{uuid.uuid4().hex[:8]}"
    url = f"{server.http}/admin/api/documents/acme/editor/{name}"
    editor, writer = confirmed_writer(server, name, 35)
    lock = WriteLock(tmp_path / "wsserver.sqlite3")
    try:
        stuck = codec.sync_update(editor.insert(" stuck"))
        writer.send(stuck)
        deadline = time.monotonic() + 10
        while not http("GET", f"{server.http}/healthz")[1]["store"].startswith("commits failing"):
            assert time.monotonic() < deadline, "commits never failed"
            time.sleep(0.1)
        started = time.monotonic()
        status, body, _ = http("DELETE", url, token=ADMIN_TOKEN)
        body_failed = "storage is not committing: nothing was deleted; retry"
        assert (status, body) == (503, {"error": body_failed, "code": 503})
        assert time.monotonic() - started < 2
    finally:
        lock.release()
    writer.wait_for(stuck, timeout=10)  # confirmed: the writer was never closed
    status, body, _ = http("DELETE", url, token=ADMIN_TOKEN)
    assert (status, body) == (200, {"deleted": True, "connections_closed": 1})
    assert writer.wait_close() == (4404, "document deleted")
    assert http("GET", url, token=ADMIN_TOKEN)[0] == 404
    # The refused delete's audit entry was stored once storage took writes again.
    entries = http("GET", f"{server.http}/admin/api/audit", token=ADMIN_TOKEN)[1]["entries"]
    deletes = [e["details"] for e in entries if e["action"] == "delete"]
    assert deletes == [{"connections_closed": 1}, {"failed": body_failed}], entries
