"""Several processes serving one document through Redis Streams (wsserver/fanout).

Real processes only: two `wsserver serve` processes sharing one SQLite file, or gunicorn
with WEB_CONCURRENCY=2 started the Procfile's way; a real redis-server; real y-websocket
providers (tests/node/fanout.mjs, kill_cross.mjs, edit_during.mjs, join_during.mjs).
The engine's own rules (trimming, outages, own entries) and the room's (once-only
delivery, awareness ownership) are also checked directly, at the end.
"""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import redis
import websocket
import yaml
from conftest import (
    NODE_DIR,
    ROOT,
    SHIPPED_PROCESS,
    TEST_PROCESS,
    base_config,
    free_port,
    make_token,
    run_node,
    wait_workers_answering,
)
from pycrdt import Doc, Text
from test_bad_input import Client, Editor
from test_interop import NodeProcess, room

from wsserver.fanout.redis_streams import PREFIX
from wsserver.protocol import codec


def healthz(server_or_url):
    url = server_or_url if isinstance(server_or_url, str) else server_or_url.http
    with urllib.request.urlopen(url + "/healthz", timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture
def two_processes(start_server, tmp_path, redis_url):
    """Factory: two `wsserver serve` processes, one SQLite file, one Redis."""

    def start(redis=None, **overrides):
        config = base_config(tmp_path, redis=redis or redis_url, **overrides)
        return start_server(config), start_server(config)

    return start


@pytest.mark.long
def test_two_processes_converge_and_share_awareness(two_processes):
    a, b = two_processes()
    r = run_node(
        "fanout.mjs",
        json.dumps({"urls": [a.url, b.url, b.url], "token": make_token(), "room": room("fan")}),
    )
    assert r["converged"]
    assert all(late == r["content"] for late in r["late"])
    assert len(r["content"]["map"]) == 3 * 20  # every client's every edit
    # A cut connection's awareness is removed by the servers, on both processes, fast.
    assert r["removedMs"] < 3000
    for server in (a, b):
        fanout = healthz(server)["fanout"]
        assert fanout["state"] == "up" and fanout["streams"] == 1
        assert fanout["peers"] == 1 and fanout["lag_ms"] is not None


@pytest.mark.long
def test_without_redis_two_processes_do_not_see_each_other(start_server, tmp_path):
    """What the fan-out fixes: the same setup without `redis` splits the document."""
    config = base_config(tmp_path)
    a, b = start_server(config), start_server(config)
    with pytest.raises(AssertionError, match="awareness of every client everywhere"):
        run_node(
            "fanout.mjs",
            json.dumps(
                {
                    "urls": [a.url, b.url],
                    "token": make_token(),
                    "room": room("split"),
                    # With Redis every client sees every other within a second (the
                    # test above); without it, never: 3 s of not seeing them shows it.
                    "awarenessMs": 3000,
                    "hardMs": 20000,
                }
            ),
        )
    assert healthz(a)["fanout"] == {"state": "off"}


def _gunicorn(tmp_path, workers, config, port):
    path = tmp_path / "gunicorn.yaml"
    path.write_text(yaml.safe_dump(config))
    # The Procfile's command, bound to loopback for the test.
    procfile = (ROOT / "Procfile").read_text().split(":", 1)[1].strip()
    command = procfile.replace("gunicorn", str(Path(sys.executable).parent / "gunicorn"), 1)
    env = dict(
        os.environ,
        WEB_CONCURRENCY=str(workers),
        PORT=str(port),
        WSSERVER_CONFIG=str(path),
        PYTHONUNBUFFERED="1",
    )
    return subprocess.Popen(
        command + f" --bind 127.0.0.1:{port}",
        shell=True,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _wait_started(proc, url, workers=2):
    """Wait until every worker of gunicorn (`proc`) answers /healthz at `url`."""
    try:
        wait_workers_answering(url, workers, alive=lambda: proc.poll() is None)
    except AssertionError as e:
        output = proc.stdout.read() if proc.poll() is not None else ""
        raise AssertionError(f"gunicorn did not start: {e}\n{output}") from None


def test_gunicorn_with_two_workers_and_no_redis_refuses_to_start(tmp_path):
    proc = _gunicorn(tmp_path, 2, base_config(tmp_path), free_port())
    try:
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0
    assert "redis: must be set to run 2 workers" in output


def converged_on_both_workers(tmp_path, port, attempts=8):
    """Providers of one new document spread over gunicorn's two workers on `port` (the
    kernel decides which worker accepts each: a run whose clients all landed on one
    proves nothing, so it is tried again, `attempts` times: under load the worker that is
    running takes them all more often) converge on concurrent
    edits, and late joiners get the same content. Returns {worker pid: connections}."""
    url = f"http://127.0.0.1:{port}"
    for _ in range(attempts):
        pause = tmp_path / f"go-on-{uuid.uuid4().hex[:8]}"
        node = NodeProcess(
            "fanout.mjs",
            {
                "urls": [f"ws://127.0.0.1:{port}"] * 6,
                "token": make_token(),
                "room": room("guni"),
                "pauseFile": str(pause),
                "staggerMs": 150,
            },
        )
        try:
            node.wait_phase("ready", 40)
            # Which worker answers /healthz is the kernel's choice too: ask until both did.
            workers = {}
            deadline = time.time() + 20
            while len(workers) < 2 and time.time() < deadline:
                body = healthz(url)
                workers[body["pid"]] = body["connections"]
            pause.touch()
            r = node.result(40)
        finally:
            node.kill()
        assert r["converged"] and all(late == r["content"] for late in r["late"])
        assert len(workers) == 2, workers
        if all(n > 0 for n in workers.values()):
            break
    # Clients of the one document were on both workers.
    assert all(n > 0 for n in workers.values()), f"all clients on one worker: {workers}"
    return workers


def test_gunicorn_two_workers_serve_one_document(tmp_path, redis_url):
    port = free_port()
    proc = _gunicorn(tmp_path, 2, base_config(tmp_path, redis=redis_url), port)
    try:
        _wait_started(proc, f"http://127.0.0.1:{port}")
        converged_on_both_workers(tmp_path, port)
    finally:
        stop_gunicorn(proc)


def stop_gunicorn(proc):
    """SIGTERM to gunicorn (`_gunicorn`'s process group), SIGKILL after 30 s."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.long
def test_kill9_mid_writing_loses_nothing_echoed(two_processes):
    a, b = two_processes(process=SHIPPED_PROCESS)  # the shipped heartbeat and TTL
    node = NodeProcess(
        "kill_cross.mjs",
        {"writerUrl": a.url, "otherUrl": b.url, "token": make_token(), "room": room("kill")},
    )
    try:
        node.wait_phase("writing", 20)
        time.sleep(0.3)  # the writer goes on writing
        assert a.stop(signal.SIGKILL) == -signal.SIGKILL
        r = node.result(50)
    finally:
        node.kill()
    assert r["confirmed"] >= 20
    assert r["missing"] == [], f"echoed to the writer but not served by the other process: {r}"
    assert r["observerHasAll"]
    # The killed process's client vanishes from the others' awareness in bounded time
    # (host_ttl 10 s + heartbeat 2 s), well within y-protocols' 30 s.
    assert r["awarenessGoneAfterMs"] < 15000


def _presence_after(r):
    """The checks of tests/node/presence_failover.mjs's result."""
    assert r["missing"] == [], r
    assert r["reconnectedAfterMs"] and None not in r["reconnectedAfterMs"].values(), r
    assert max(r["seenByAllAfterMs"].values()) < 2000, r
    assert max(r["seesAllAfterMs"].values()) < 2000, r


def _presence_spec(urls, **extra):
    tokens = [make_token(sub=f"user-{i}") for i in range(6)]
    return {"urls": urls, "tokens": tokens, "room": room("presence"), **extra}


@pytest.mark.long
@pytest.mark.parametrize("restart", [False, True], ids=["moved", "restarted"])
def test_presence_is_back_within_2s_of_a_reconnect_after_kill9(two_processes, restart):
    """y-websocket 1.5.4, 2.1 and 3.1 clients on two processes, each its own user; one
    process is killed (kill -9) and its clients reconnect: to the other process, or to
    the same one started again. Every pair of clients sees each other again within 2 s
    of the reconnect, not at the providers' 15 s renewal
    (tests/node/presence_failover.mjs). The shipped host TTL (10 s): the clients are back
    before the killed process is declared gone, as on a platform that restarts it; with
    the tests' 2 s TTL the other process removes their states first, which is the
    path of test_an_anonymous_client_is_back_once_its_dead_process_is_declared_gone."""
    a, b = two_processes(process=SHIPPED_PROCESS)
    node = NodeProcess("presence_failover.mjs", _presence_spec([a.url, b.url], restart=restart))
    try:
        node.wait_phase("ready", 20)
        assert a.stop(signal.SIGKILL) == -signal.SIGKILL
        if restart:
            a.restart()
        r = node.result(40)
    finally:
        node.kill()
    _presence_after(r)


def test_presence_is_back_within_2s_after_a_gunicorn_worker_is_killed(tmp_path, redis_url):
    """The same with gunicorn's two workers (the Procfile's way): a worker holding
    connections is killed, gunicorn starts another, the cut clients reconnect to either."""
    port = free_port()
    proc = _gunicorn(tmp_path, 2, base_config(tmp_path, redis=redis_url), port)
    url = f"http://127.0.0.1:{port}"
    node = None
    try:
        _wait_started(proc, url)
        node = NodeProcess("presence_failover.mjs", _presence_spec([f"ws://127.0.0.1:{port}"]))
        node.wait_phase("ready", 30)
        # Which worker answers /healthz is the kernel's choice: ask until one holding
        # connections does.
        deadline = time.time() + 10
        while (body := healthz(url))["connections"] == 0:
            assert time.time() < deadline, "no worker with connections answered"
        os.kill(body["pid"], signal.SIGKILL)
        r = node.result(40)
    finally:
        if node is not None:
            node.kill()
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    _presence_after(r)


@pytest.mark.long
def test_presence_is_back_after_a_redis_outage_longer_than_the_host_ttl(two_processes, own_redis):
    """Redis hung for more than the host TTL (2 s in tests): each process took the other for dead
    and removed its clients' states, and the answers to its `query` after the outage
    carry the clocks the clients saw removed (ignored). Once Redis is back each process
    makes its clients announce themselves again: every client (y-websocket 1.5.4 and 3.1,
    their own 15 s renewals stopped) sees every other within 5 s of Redis going on: the
    reader's reconnect back-off (up to 2 s), then the renewal
    (tests/node/presence_outage.mjs)."""
    a, b = two_processes(redis=own_redis.url)
    tokens = [make_token(sub=f"user-{i}") for i in range(4)]
    spec = {"urls": [a.url, b.url], "tokens": tokens, "room": room("outage-presence")}
    node = NodeProcess("presence_outage.mjs", spec)
    try:
        node.wait_phase("ready", 20)
        own_redis.proc.send_signal(signal.SIGSTOP)
        try:
            node.wait_phase("gone", 25)
        finally:
            own_redis.proc.send_signal(signal.SIGCONT)
        resumed = time.time() * 1000
        r = node.result(20)
    finally:
        node.kill()
    assert r["backAt"] - resumed < 5000, r["backAt"] - resumed
    assert r["closes"] == [[], [], [], []]  # nobody was disconnected
    for server in (a, b):
        assert "Traceback" not in server.log()


@pytest.mark.long
@pytest.mark.parametrize("where", ["typed", "restarted"])
def test_an_anonymous_client_is_back_once_its_dead_process_is_declared_gone(two_processes, where):
    """An anonymous client (no `sub`) whose process was killed comes back with the
    client id the dead process still owns on the other one: it cannot take it over
    (another anonymous user could be claiming it) until that process is declared gone
    (the host TTL: 2 s in tests, 10 s shipped). The removal sent then reached it only
    when it was connected there and its clock had not moved since; now its last refused
    claim is handed the id: through the other process after its user moved the cursor
    ("typed"), and through the killed process started again ("restarted"). It sees the
    others at once (they are renewed for it, as for any returning client). Before, its
    peers on the other process saw it again only at its own 15 s renewal (never, for
    this raw client)."""
    from test_awareness import _Peer, announce

    a, b = two_processes()
    doc = room("anonymous")
    walter = _Peer(b, doc, 600, "walter")
    anonymous = _Peer(a, doc, 500, None)
    deadline = time.monotonic() + 10
    while not (walter.present.get(500) == 2 and anonymous.present.get(600) == 2):
        assert time.monotonic() < deadline, (walter.present, anonymous.present)
        time.sleep(0.02)
    assert a.stop(signal.SIGKILL) == -signal.SIGKILL
    killed = time.monotonic()
    anonymous.close()
    if where == "restarted":
        a.restart()
    back = _Peer(a if where == "restarted" else b, doc, 500, None, clock=anonymous.clock)
    try:
        if where == "typed":
            time.sleep(0.3)
            back.clock += 1  # a caret moved: refused like the rest, and newer
            back.client.send(announce((500, back.clock, {"user": None, "cursor": 1})))
        # It sees walter renewed at once (its provider removed him when its socket
        # closed), though it cannot announce itself yet.
        deadline = killed + 5
        while not back.clocks.get(600, 0) > 2:
            assert time.monotonic() < deadline, back.clocks
            time.sleep(0.02)
        # the TTL, checked every heartbeat, and slack (shipped 10 s and 2 s: 18 s)
        ttl, heartbeat = TEST_PROCESS["ttl_seconds"], TEST_PROCESS["heartbeat_seconds"]
        deadline = killed + ttl + heartbeat + 6
        while not walter.present.get(500, 0) > 2:
            assert time.monotonic() < deadline, (walter.present, back.present)
            time.sleep(0.05)
        after = time.monotonic() - killed
    finally:
        walter.close()
        back.close()
    assert after >= ttl - 1, after  # not before the dead process is declared gone
    for server in (a, b):
        assert "Traceback" not in server.log()


@pytest.mark.long
def test_tiptap_carets_are_back_within_2s_of_a_reconnect_after_kill9(
    two_processes, tmp_path, browser
):
    """Tiptap editors with collaboration carets in real Chromium pages, one per process
    (y-websocket 3.1); one process is killed and its page's provider moves to the other.
    Each page shows the other's caret again within 2 s of the reconnect: the moved page
    (which removed every other client when its socket closed) sees the other's state
    announced anew, and the other page sees the moved one's new announcement (not only
    the dead process's copy, which is removed once that process is declared gone)."""
    a, b = two_processes()
    bundle = tmp_path / "editor.js"
    subprocess.run(
        ["node", "bundle.mjs", "tiptap_editor.js", str(bundle)], cwd=NODE_DIR, check=True
    )
    name = room("carets")
    try:
        pages = {}
        for user, server in (("ann", a), ("ben", b)):
            page = browser.new_page()
            page.set_content("<div id=editor></div>")
            page.add_script_tag(path=str(bundle))
            page.evaluate(
                "spec => startEditor(spec)",
                {
                    "url": server.url,
                    "room": name,
                    "token": make_token(sub=user),
                    "name": user,
                    "color": "#2563eb",
                },
            )
            pages[user] = page
        pages["ann"].wait_for_function("provider.synced", timeout=5000)
        pages["ann"].evaluate("editor.commands.insertContent('hello')")
        for page in pages.values():
            page.wait_for_function("editor.getText() === 'hello'", timeout=5000)
            page.evaluate("editor.commands.focus('end')")
        for user, other in (("ann", "ben"), ("ben", "ann")):
            pages[user].wait_for_function(
                "other => caretNames().includes(other)", arg=other, timeout=5000
            )
        # The clock each page knows of the other's client before the kill.
        ids = {user: page.evaluate("doc.clientID") for user, page in pages.items()}
        before = {
            user: pages[user].evaluate("id => provider.awareness.meta.get(id).clock", ids[other])
            for user, other in (("ann", "ben"), ("ben", "ann"))
        }
        pages["ann"].evaluate(
            "url => provider.on('connection-close', () => { provider.serverUrl = url })",
            b.url,
        )
        assert a.stop(signal.SIGKILL) == -signal.SIGKILL
        pages["ann"].wait_for_function("provider.connects.length > 1", timeout=10000)
        reconnected = pages["ann"].evaluate("provider.connects[1]")
        seen = {}
        for user, other in (("ann", "ben"), ("ben", "ann")):
            pages[user].wait_for_function(
                "([other, id, clock]) => caretNames().includes(other)"
                " && provider.awareness.meta.get(id).clock > clock",
                arg=[other, ids[other], before[user]],
                timeout=8000,
                polling=10,
            )
            seen[user] = pages[user].evaluate("Date.now()")
    finally:
        browser.close()
    assert max(seen.values()) - reconnected < 2000, (seen, reconnected)


def _edit_during(urls, name, durationMs=4000):
    return NodeProcess(
        "edit_during.mjs",
        {"urls": urls, "token": make_token(), "room": name, "durationMs": durationMs},
    )


@pytest.mark.long
def test_redis_hung_then_back(two_processes, own_redis):
    # Frequent compactions: each process compacts while it cannot see the other's updates.
    a, b = two_processes(redis=own_redis.url, compact_after_updates=5)
    name = room("hung")
    node = _edit_during([a.url, b.url], name, durationMs=6000)
    try:
        node.wait_phase("editing", 20)
        time.sleep(1)
        own_redis.proc.send_signal(signal.SIGSTOP)
        stopped = time.time() * 1000
        time.sleep(1.5)
        # A new client of the open document is admitted without waiting on Redis for
        # more than about a second (the case fails if it is not synced within 2.5 s).
        joined = run_node(
            "cases.mjs",
            json.dumps(
                {
                    "url": a.url,
                    "caseTimeoutMs": 2500,
                    "cases": [
                        {
                            "id": "join",
                            "room": name,
                            "token": make_token(),
                            "expect": "ok",
                            "write": "during the outage",
                        }
                    ],
                }
            ),
        )["results"]["join"]
        time.sleep(max(0.0, 3 - (time.time() * 1000 - stopped) / 1000))
        continued = time.time() * 1000
        down = healthz(a)["fanout"]
        own_redis.proc.send_signal(signal.SIGCONT)
        r = node.result(80)
    finally:
        node.kill()
    assert joined.get("error") is None and joined["synced"], joined
    assert "during the outage" in joined["content"]["text"]  # and its edit was echoed
    assert r["converged"]
    assert r["keys"] == 3 * r["rounds"]  # three clients, one key each per round
    # Inside a process, collaboration went on while Redis was hung: echoes (durable)
    # and the other local client receiving the edits.
    during = lambda times: [t for t in times if stopped + 1500 < t < continued]
    assert during(r["echoes"]), r["echoes"]
    assert during(r["localSeen"])
    assert down["state"] == "down"
    assert all(closes == [] for closes in r["closes"])  # nobody was disconnected
    assert a.log().count("fanout: redis") <= 4, a.log()  # throttled, not one per message


def received_within(client, message, seconds):
    """Whether `client` receives `message` within `seconds` (other messages are skipped)."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            if client.recv(left) == message:
                return True
        except websocket.WebSocketTimeoutException:
            return False
    return False


def test_the_echo_waits_for_the_update_to_be_in_the_stream(start_server, own_redis):
    """The sender's echo is its confirmation: it must not come before the update is in
    the document's stream, where the other processes read it (a process killed right
    after confirming would otherwise leave them without it). Redis frozen: the other
    local client gets the update at once, the sender no echo; Redis back: the echo, and
    the update is in the stream by then."""
    server = start_server(redis=own_redis.url)
    name = room("echo")
    sender = Client(server, name)
    other = Client(server, name)
    for client in (sender, other):
        client.recv()  # step 1
    source = Doc()
    source["text"] = Text("confirmed only once shared")
    update = source.get_update()
    message = codec.sync_update(update)
    frozen = False
    try:
        own_redis.proc.send_signal(signal.SIGSTOP)
        frozen = True
        sender.send(message)
        assert received_within(other, message, 5), "the other local client did not get it"
        # The engine waits for Redis up to its socket timeout (0.5 s) before it gives up
        # and confirms anyway (reconciled later): look well within that.
        assert not received_within(sender, message, 0.25), "echoed before it was in the stream"
        own_redis.proc.send_signal(signal.SIGCONT)
        frozen = False
        assert received_within(sender, message, 5), "no echo once Redis answered"
        entries = redis.Redis.from_url(own_redis.url).xrange(f"{PREFIX}doc:acme/editor/{name}")
        assert [fields[b"d"] for _, fields in entries if fields[b"t"] == b"u"] == [update]
    finally:
        if frozen:
            own_redis.proc.send_signal(signal.SIGCONT)
        sender.close()
        other.close()


def test_updates_read_together_reach_a_client_as_one_message(start_server, redis_url):
    """The reader hands the room the updates of other processes it read at once as one
    (reader.py; this process's own entries between them are skipped), and the room sends
    what they changed as one message: a client gets every edit, not the bytes each
    process published. (Comparing those bytes made test_recovery's writers "miss" edits
    now and then under load: when one read held two of the other worker's updates.)"""
    server = start_server(redis=redis_url)
    name = room("together")
    client = Client(server, name)
    client.recv()  # step 1: the room is loaded, its stream subscribed
    stream = f"{PREFIX}doc:acme/editor/{name}"
    r = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 5
    while not (entries := r.xrange(stream)):  # the server's query on subscribing
        assert time.monotonic() < deadline, "the server published nothing on subscribing"
        time.sleep(0.02)
    own = entries[0][1][b"h"]
    theirs = [Editor(client_id=i).insert(f"[{i}]") for i in (1, 2)]
    # MULTI/EXEC: a blocked XREAD is answered after EXEC, so one read holds all three.
    pipe = r.pipeline(transaction=True)
    pipe.xadd(stream, {b"h": b"vm:1:other", b"t": b"u", b"d": theirs[0]})
    pipe.xadd(stream, {b"h": own, b"t": b"u", b"d": Editor(client_id=3).insert("own")})
    pipe.xadd(stream, {b"h": b"vm:1:other", b"t": b"u", b"d": theirs[1]})
    pipe.execute()
    deadline = time.monotonic() + 5
    while not any(codec.decode(m).kind == codec.KIND_UPDATE for m in client.received):
        client.recv(max(0.01, deadline - time.monotonic()))
    received_within(client, None, 0.3)  # and whatever comes right after
    updates = [m for m in client.received if codec.decode(m).kind == codec.KIND_UPDATE]
    assert len(updates) == 1, updates
    assert updates[0] not in [codec.sync_update(update) for update in theirs]
    doc = Doc()
    doc.apply_update(codec.decode(updates[0]).data)
    text = str(doc.get("t", type=Text))
    assert "[1]" in text and "[2]" in text and "own" not in text, text
    client.close()


@pytest.mark.long
def test_redis_restarted_empty(two_processes, own_redis):
    # The region registry re-asserts the claims Redis forgot at its next renewal and
    # refreshes the rooms from storage (regions/registry/base.py), which would hide what
    # the fan-out does: no renewal during this test.
    a, b = two_processes(
        redis=own_redis.url, registry={"ttl_seconds": 120, "heartbeat_seconds": 60}
    )
    node = _edit_during([a.url, b.url], room("empty"), durationMs=6000)
    try:
        node.wait_phase("editing", 20)
        time.sleep(1.5)
        own_redis.stop()
        time.sleep(1.5)
        own_redis.start()
        r = node.result(80)
    except AssertionError:
        print("A:", a.log()[-5000:], "\nB:", b.log()[-5000:])
        raise
    finally:
        node.kill()
    assert r["converged"]
    assert r["keys"] == 3 * r["rounds"]  # nothing lost, echoed or not
    assert all(closes == [] for closes in r["closes"])
    for server in (a, b):
        assert healthz(server)["fanout"]["state"] == "up"


def test_a_process_loading_a_document_mid_stream_misses_nothing(two_processes):
    """The joiner's process subscribes before it reads the store: every update is in
    what the store returned or in the stream after the position it took."""
    a, b = two_processes()
    r = run_node(
        "join_during.mjs",
        json.dumps(
            {
                "writerUrl": a.url,
                "joinerUrl": b.url,
                "token": make_token(),
                "writeMs": 1500,
                "rooms": [room(f"join{i}") for i in range(12)],
            }
        ),
    )
    for result in r["results"]:
        assert result["missing"] == [], result
        # the joiner opened mid-stream: keys written before it and after (a count, not a
        # rate: a loaded machine writes fewer in the 1.5 s)
        assert 0 < result["atJoin"] < result["written"], result


# --- the engine against a real Redis, without servers -----------------------------------


class FakeRoom:
    """What the engine needs of a room: a key, `ready`, and the remote entry points."""

    def __init__(self, key):
        from gevent.event import AsyncResult

        self.key = key
        self.ready = AsyncResult()
        self.ready.set(self)
        self.updates, self.reconciles, self.renewals = [], 0, 0

    def apply_remote_updates(self, updates):
        self.updates.extend(updates)

    def refresh(self):
        self.reconciles += 1

    def renew_awareness(self):
        self.renewals += 1

    def local_awareness(self):
        return []


@pytest.fixture
def engine(redis_url):
    import uuid

    from wsserver.fanout.redis_streams import RedisStreamsFanout

    fanout = RedisStreamsFanout(redis_url, prefix=f"test:{{fanout}}:{uuid.uuid4().hex}:")
    fanout._connect()
    fanout.state = "up"
    yield fanout
    fanout._closed = True
    fanout._disconnect()


def test_a_reader_trimmed_past_its_position_reloads_from_the_store(engine):
    import gevent

    from wsserver.fanout.base import UPDATE, Subscription

    room = FakeRoom(("acme", "editor", "trimmed"))
    stream = engine.stream_of(room.key)
    ids = engine._publish(
        [(stream, {b"h": b"other", b"t": UPDATE, b"d": b"u%d" % i}) for i in range(50)]
    )
    engine.commands.xtrim(stream, maxlen=10, approximate=False)  # as MAXLEN/MINID would
    assert engine._trimmed_past({stream: ids[5]}) == {stream}
    assert engine._trimmed_past({stream: ids[45]}) == set()
    assert engine._trimmed_past({engine.prefix + "doc:none": "0-0"}) == set()

    engine.subs[stream] = sub = Subscription(room, stream, ids[5].decode())
    engine._check_trimmed([stream])
    assert sub.position is None  # unknown: resync
    engine._resync_unknown()
    gevent.sleep(0.05)
    assert sub.position == ids[-1].decode()  # the tail, taken before the reload
    assert room.reconciles == 1
    assert room.renewals == 1  # its clients announce themselves again


def test_updates_not_published_during_an_outage_are_announced_for_reconciliation(engine):
    from wsserver.fanout.base import RECONCILE

    key = ("acme", "editor", "outage")
    stream = engine.stream_of(key)
    engine.state = "down"
    echoed = []
    engine.publish_update(key, b"update", lambda: echoed.append(True))
    assert echoed == [True]  # the echo never waits for a Redis that is down
    engine.publish_awareness(key, b"awareness")  # ephemeral: not announced
    assert engine._unpublished == {stream} and not engine._queue
    engine._recovered()
    assert [(s, kind) for s, kind, _, _ in engine._queue] == [(stream, RECONCILE)]
    assert engine._unpublished == set()


def test_after_redis_restarted_empty_the_reader_reads_its_new_entries(engine):
    """A restarted Redis numbers its entries from its clock again, below a position read
    from the old one (another machine's clock, or the same ms): XREAD after that position
    would skip them. Once Redis answers again every position is taken anew from it."""
    import gevent

    from wsserver.fanout.base import UPDATE, Subscription

    room = FakeRoom(("acme", "editor", "restarted"))
    stream = engine.stream_of(room.key)
    ahead = f"{int(time.time() * 1000) + 3_600_000}-0"  # the old Redis's, an hour ahead
    engine.subs[stream] = Subscription(room, stream, ahead)
    engine._recovered()  # what the reader does once Redis answers again
    engine._resync_unknown()
    gevent.sleep(0.05)
    assert room.reconciles == 1  # what was published before the new position is stored
    engine._publish([(stream, {b"h": b"other", b"t": UPDATE, b"d": b"new"})])
    for read, entries in engine._read(engine.reading.positions(), 100):
        engine._deliver(read, entries)
    assert room.updates == [b"new"]


class FakeConnection:
    sending = False  # Connection.sending: nothing queued

    def __init__(self):
        self.principal = None  # an anonymous token
        self.frames = []
        self.awareness_ids = set()
        self.awareness_announced = False

    def send(self, frame):
        self.frames.append(frame)

    def send_message(self, message):
        self.frames.append(message)


def test_an_update_from_another_process_reaches_local_clients_once():
    """Whatever path it comes by (the stream, a second delivery, a reload from the
    store), a client gets what another process stored once, and only what it lacks."""
    from pycrdt import Doc, Text

    from wsserver.documents.room import Room
    from wsserver.documents.storage.memory import MemoryStore

    room = Room(("acme", "editor", "once"), MemoryStore(), 1000, 10**9)
    client = FakeConnection()
    room.connections[client] = None
    remote = Doc()
    remote["text"] = text = Text()
    text += "from another process"
    update = remote.get_update()
    room.apply_remote_updates([update])
    assert len(client.frames) == 1
    room.apply_remote_updates([update])  # read again (e.g. after a resync)
    room.apply_remote_updates([update, update])
    assert len(client.frames) == 1
    assert str(room.doc.get("text", type=Text)) == "from another process"


def test_the_reader_skips_its_own_entries(engine):
    from wsserver.fanout.base import UPDATE, Subscription

    room = FakeRoom(("acme", "editor", "own"))
    stream = engine.stream_of(room.key)
    engine.subs[stream] = Subscription(room, stream, "0-0")
    engine._deliver(
        stream,
        [
            ("1-1", {b"h": engine.host, b"t": UPDATE, b"d": b"mine"}),
            ("1-2", {b"h": b"other", b"t": UPDATE, b"d": b"theirs"}),
        ],
    )
    assert room.updates == [b"theirs"]
    assert engine.subs[stream].position == "1-2"


def test_awareness_from_other_processes_follows_the_ownership_rule():
    """A client id announced through another process is that process's, for that user:
    a connection here of another user cannot take it over, the same user (a provider that
    reconnected through this process) can, and the other process's removal frees it."""
    from types import SimpleNamespace

    from wsserver.documents.room import Room
    from wsserver.documents.storage.memory import MemoryStore
    from wsserver.protocol.codec import AwarenessEntry, encode_awareness_entries

    def update(client_id, clock, state=b'{"user":"x"}'):
        return encode_awareness_entries([AwarenessEntry(client_id, clock, state)])

    def connection(user):
        conn = FakeConnection()
        conn.principal = SimpleNamespace(user=user)
        conn.awareness_ignored = 0
        return conn

    room = Room(("acme", "editor", "owners"), MemoryStore(), 1000, 10**9)
    mallory, alice = connection("mallory"), connection("alice")
    room.connections[mallory] = room.connections[alice] = None
    room.apply_remote_awareness(update(7, 1), b"host-a", "alice")
    assert 7 in room.awareness.states
    room.receive(mallory, SimpleNamespace(kind="awareness", data=update(7, 2, b'{"x":1}')))
    assert mallory.awareness_ignored == 1 and 7 not in mallory.awareness_ids
    room.receive(alice, SimpleNamespace(kind="awareness", data=update(7, 3)))
    assert room.awareness_owners[7] is alice
    # The other process's late removal of its old connection (its clock + 1) changes
    # nothing here...
    room.apply_remote_awareness(update(7, 2, b"null"), b"host-a", "alice")
    assert room.awareness_owners[7] is alice
    # ...and one it owns frees the id.
    room.apply_remote_awareness(update(8, 1), b"host-a", "bob")
    room.apply_remote_awareness(update(8, 2, b"null"), b"host-a", "bob")
    assert 8 not in room.awareness_owners and 8 not in room.awareness.states
