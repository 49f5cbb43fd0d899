"""Every process heals itself after a database or Redis outage while it is probed.

A real `wsserver serve` on a real Postgres of its own, with `/readyz` and `/healthz` polled
once a second by a thread meanwhile (as a load balancer and a monitor do), through each
kind of outage: Postgres frozen (SIGSTOP of the server and its backends), stopped and
started, killed with kill -9 and restarted. Afterwards the update sent during the outage
is confirmed within 5 s of Postgres answering, new documents load, and the probes say
what they promise: /readyz stays 200 through an outage every process shares, /healthz
says "degraded" with the store's reason.

The test configs keep the pool small (2) so that what used to wedge it (a readiness
probe's gevent.Timeout interrupting psycopg_pool's getconn: each one left a dead waiter
that swallowed a connection) does so within a few seconds.
"""

import contextlib
import json
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from types import SimpleNamespace

import pytest
import websocket
from conftest import base_config, free_port, make_token
from pycrdt import Doc
from test_bad_input import Client, text_of
from test_outages import confirmed_writer, handshake_outcome

from wsserver.protocol import codec


def get(url, timeout=10):
    """(status, parsed JSON body) of a GET; (None, error) when there is no answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
    except OSError as e:
        return None, repr(e)


def api_read(server, name):
    """(status, seconds) of the document API's read of `name`; (None, seconds) when no
    answer came within 20 s."""
    started = time.monotonic()
    request = urllib.request.Request(
        f"{server.http}/v1/documents/{name}", headers={"Authorization": f"Bearer {make_token()}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            status = response.status
    except urllib.error.HTTPError as e:
        status = e.code
    except OSError:
        status = None
    return status, time.monotonic() - started


def writers_on_both_workers(server, writers, name_of, first_id):
    """Add confirmed writers (`confirmed_writer`, of document `name_of(n)`, client ids
    from `first_id`) to `writers` until both of gunicorn's workers hold some (each
    worker's /healthz counts its own); returns {pid: connections}. Opened a few at a
    time, or the worker that won the first accept takes them all."""
    connections = {}

    def writer(n):
        writers.append(confirmed_writer(server, name_of(n), n))

    while len(writers) < 40 and not (len(connections) == 2 and all(connections.values())):
        batch = [
            threading.Thread(target=writer, args=(first_id + len(writers) + i,)) for i in range(4)
        ]
        for thread in batch:
            thread.start()
        for thread in batch:
            thread.join(10)
        for status, body in ask_at_once(f"{server.http}/healthz", 6):
            if status is not None:
                connections[body["pid"]] = body["connections"]
    assert len(connections) == 2 and all(connections.values()), connections
    return connections


def text_received(client, before):
    """The text `client`'s document holds once it applies every update the server sent
    it, on top of `before` (the writers' states before, which a writer that joined later
    was never sent: it asked for no step 2). Content, not bytes: updates of another
    worker that its reader gets in one read reach clients merged, as one message."""
    doc = Doc()
    for update in before:
        doc.apply_update(update)
    for message in client.received:
        decoded = codec.decode(message)
        if decoded.kind in (codec.KIND_UPDATE, codec.KIND_STEP2):
            doc.apply_update(decoded.data)
    return text_of(doc)


def ask_at_once(url, times=4):
    """`times` GETs of `url` at once: [(status, body)] as `get` answers them. gunicorn's
    workers share one listening socket and the kernel may hand one worker every request
    asked one after another; asked together, the others get some."""
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(get(url))) for _ in range(times)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    return answers


class Prober:
    """Polls /readyz and /healthz once a second from a thread: (when, path, status,
    body) in `seen`."""

    def __init__(self, server):
        self.server = server
        self.seen = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            for path in ("/readyz", "/healthz"):
                status, body = get(f"{self.server.http}{path}")
                self.seen.append((time.monotonic(), path, status, body))
            self._stop.wait(1.0)

    def between(self, start, end, path):
        return [(s, b) for t, p, s, b in self.seen if p == path and start <= t <= end]

    def until_every_worker_answered(self, since, workers=2, timeout=20):
        """Probe more, several at once, until `workers` processes have answered /readyz
        since `since` (the rounds, one probe at a time, may all reach one worker); every
        answer goes into `seen`. A worker that never answers fails the test."""
        deadline = time.monotonic() + timeout
        while True:
            answered = {b["pid"] for s, b in self.between(since, time.monotonic(), "/readyz") if s}
            if len(answered) >= workers:
                return
            assert time.monotonic() < deadline, f"only {answered} answered /readyz"
            for path in ("/readyz", "/healthz"):
                for status, body in ask_at_once(f"{self.server.http}{path}"):
                    self.seen.append((time.monotonic(), path, status, body))

    def stop(self):
        self._stop.set()
        self._thread.join(15)


def kill_9(pg):
    """kill -9 of the postmaster; its backends end by themselves (postmaster death)."""
    pg.proc.send_signal(signal.SIGKILL)
    pg.proc.wait(10)
    deadline = time.monotonic() + 10
    while subprocess.run(["pgrep", "-f", pg.data], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "backends outlived their postmaster"
        time.sleep(0.1)


OUTAGES = {
    # (take it down, bring it back, seconds down)
    "sigstop": (lambda pg: pg.pause(), lambda pg: pg.resume(), 7),
    "stop-start": (lambda pg: pg.stop(), lambda pg: pg.start(), 7),
    "kill-9": (kill_9, lambda pg: pg.start(), 7),
}


@pytest.mark.long
@pytest.mark.parametrize("outage", sorted(OUTAGES))
def test_a_probed_process_recovers_from_a_postgres_outage(
    outage, own_postgres, start_server, tmp_path, request
):
    down, up, seconds = OUTAGES[outage]
    server = start_server(
        config=base_config(tmp_path, storage=own_postgres.url(), storage_pool_size=2)
    )
    name = f"outage-{uuid.uuid4().hex[:8]}"
    editor, writer = confirmed_writer(server, name, 41)
    prober = Prober(server)
    try:
        time.sleep(1.5)
        started = time.monotonic()
        down(own_postgres)
        during = codec.sync_update(editor.insert(" during"))
        writer.send(during)
        if outage == "sigstop":
            # (resumed however this ends: a frozen Postgres never stops)
            request.addfinalizer(own_postgres.resume)
            # A document that is not loaded: a handshake is refused within the promised
            # 5 s, and the document API's read answers 503 as soon, never hung.
            read = []
            reader = threading.Thread(target=lambda: read.append(api_read(server, name + "-2")))
            reader.start()
            code, elapsed = handshake_outcome(server, f"new-{uuid.uuid4().hex[:8]}", timeout=20)
            assert code == 1011 and elapsed < 7, (code, elapsed)
            reader.join(20)
            assert read and read[0][0] == 503 and read[0][1] < 7, read
        time.sleep(max(0.0, started + seconds - time.monotonic()))
        up(own_postgres)
        back = time.monotonic()
        # Confirmed within 5 s of Postgres answering (plus a second of slack for a loaded
        # machine), on this process that was probed throughout.
        writer.wait_for(during, timeout=6)
        confirmed_after = time.monotonic() - back
        time.sleep(1.5)
        code, _ = handshake_outcome(server, f"after-{uuid.uuid4().hex[:8]}")
        assert code == "served"
    finally:
        prober.stop()
    assert confirmed_after < 6
    # /readyz: 200 throughout (an outage of every process is not this one's fault),
    # and it names the process.
    readyz = prober.between(started, time.monotonic(), "/readyz")
    assert readyz and not [r for r in readyz if r[0] != 200], readyz
    assert {"pid", "host"} <= set(readyz[-1][1])
    # /healthz: "degraded" naming the store while Postgres was down, "ok" after.
    healthz = prober.between(started + 2, back - 1, "/healthz")
    degraded = [(b["status"], b["store"]) for _, b in healthz]
    assert degraded and all(s == "degraded" and store != "ok" for s, store in degraded), degraded
    status, body = get(f"{server.http}/healthz")
    assert (status, body["status"], body["store"]) == (200, "ok", "ok"), body
    assert body["pid"] == server.proc.pid
    # Nothing confirmed was lost, and what was sent during the outage is stored.
    writer.close()
    reader = Client(server, name)
    assert str(reader.sync().get("t", type=type(editor.text))) == "kept during"
    reader.close()


@pytest.mark.long
def test_a_load_on_a_frozen_postgres_is_refused_within_5_s(
    own_postgres, start_server, tmp_path, request
):
    """The pool hands the load an idle connection whose backend is frozen: the query
    hangs until Postgres thaws, but the handshake waiting on it is refused with 1011
    within the README's 5 s, and the document API's read answers 503 as soon. Once
    Postgres answers, the same document is served."""
    server = start_server(config=base_config(tmp_path, storage=own_postgres.url()))
    assert handshake_outcome(server, f"warm-{uuid.uuid4().hex[:8]}")[0] == "served"
    request.addfinalizer(own_postgres.resume)  # however this ends
    own_postgres.pause()
    name = f"frozen-{uuid.uuid4().hex[:8]}"
    code, elapsed = handshake_outcome(server, name, timeout=15)
    assert code == 1011 and 4 < elapsed < 7, (code, elapsed)
    status, elapsed = api_read(server, f"{name}-2")
    assert status == 503 and elapsed < 7, (status, elapsed)
    own_postgres.resume()
    deadline = time.monotonic() + 10
    while handshake_outcome(server, name)[0] != "served":
        assert time.monotonic() < deadline, "never served after Postgres thawed"
        time.sleep(0.2)


@pytest.mark.long
def test_every_gunicorn_worker_recovers_from_a_postgres_stall(
    own_postgres, redis_url, tmp_path, request
):
    """The Procfile's gunicorn with 2 workers (wsserver/gunicorn_conf.py), both probed:
    after Postgres is frozen and thawed, every worker's writers are confirmed within 5 s
    and every worker loads new documents."""
    from test_ops import Gunicorn, write_config

    server = Gunicorn(
        write_config(tmp_path, storage=own_postgres.url(), storage_pool_size=2, redis=redis_url),
        workers=2,
    )
    writers = []
    try:
        # Writers until both workers hold some (a worker's /healthz counts its own);
        # opened a few at a time, or the worker that won the first accept takes them all.
        connections = writers_on_both_workers(
            server, writers, lambda n: f"gunicorn-{uuid.uuid4().hex[:8]}", 50
        )
        prober = Prober(server)
        try:
            time.sleep(1.5)
            request.addfinalizer(own_postgres.resume)  # however this ends
            own_postgres.pause()
            sent = []
            for editor, client in writers:
                sent.append(codec.sync_update(editor.insert(" during")))
                client.send(sent[-1])
            time.sleep(8)
            own_postgres.resume()
            back = time.monotonic()
            for (_, client), update in zip(writers, sent):
                client.wait_for(update, timeout=max(0.1, back + 6 - time.monotonic()))
            time.sleep(1.5)
            served = [handshake_outcome(server, f"after-{uuid.uuid4().hex[:8]}")[0]]
            served += [handshake_outcome(server, f"after-{uuid.uuid4().hex[:8]}")[0]]
            # Each worker's store says "ok" (asked until both answered: see ask_at_once).
            pids, deadline = {}, time.monotonic() + 20
            while len(pids) < 2:
                assert time.monotonic() < deadline, pids
                served.append(handshake_outcome(server, f"after-{uuid.uuid4().hex[:8]}")[0])
                for status, body in ask_at_once(f"{server.http}/healthz"):
                    if status is not None:
                        pids[body["pid"]] = body["store"]
            assert set(served) == {"served"} and pids == dict.fromkeys(connections, "ok")
            prober.until_every_worker_answered(since=0)
        finally:
            prober.stop()
        readyz = [r for _, p, s, r in prober.seen if p == "/readyz"]
        assert len({r["pid"] for r in readyz}) == 2  # both workers were probed
        assert all(r["status"] == "ready" for r in readyz), readyz
    finally:
        for _, client in writers:
            client.close()
        server.kill()


@pytest.mark.long
def test_one_region_reads_and_opens_documents_through_a_redis_outage(
    start_server, own_redis, tmp_path
):
    """With a single region nothing needs the region registry in Redis: while Redis is
    frozen the document API reads, a new document opens, /readyz stays 200 (an outage
    of every process) and /healthz says "degraded"; the limits admit as documented."""
    server = start_server(
        config=base_config(
            tmp_path, redis=own_redis.url, rate_limit={"handshakes_per_ip": "1000/minute"}
        )
    )
    name = f"read-{uuid.uuid4().hex[:8]}"
    _, writer = confirmed_writer(server, name, 61)
    writer.close()
    prober = Prober(server)
    request = urllib.request.Request(
        f"{server.http}/v1/documents/{name}?format=json",
        headers={"Authorization": f"Bearer {make_token()}"},
    )
    try:
        time.sleep(1.5)
        own_redis.proc.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        for _ in range(3):
            with urllib.request.urlopen(request, timeout=10) as response:
                assert json.loads(response.read()) == {"t": "kept"}
            code, elapsed = handshake_outcome(server, f"new-{uuid.uuid4().hex[:8]}")
            assert code == "served" and elapsed < 3, (code, elapsed)
            time.sleep(1)
        stalled = time.monotonic()
    finally:
        own_redis.proc.send_signal(signal.SIGCONT)
        prober.stop()
    readyz = prober.between(started, stalled, "/readyz")
    assert readyz and not [r for r in readyz if r[0] != 200], readyz
    healthz = prober.between(started + 1.5, stalled, "/healthz")
    assert healthz and all(b["status"] == "degraded" for _, b in healthz), healthz


@pytest.mark.long
@pytest.mark.parametrize("outage", ["sigstop", "stop-start"])
def test_an_admin_delete_during_a_postgres_outage_answers_503_and_loses_nothing(
    outage, own_postgres, start_server, tmp_path, request
):
    """The admin console's DELETE while Postgres is frozen or stopped: a JSON 503 within
    its bound (before: no answer until Postgres thawed, or an HTML 500), nothing
    deleted and nothing lost (the edit sent meanwhile is confirmed once Postgres is
    back); the list of live documents answers meanwhile, without sizes; afterwards the
    same DELETE deletes it."""
    from test_ops import ADMIN_TOKEN, http

    down, up, _ = OUTAGES[outage]
    server = start_server(
        config=base_config(tmp_path, storage=own_postgres.url(), admin={"token": ADMIN_TOKEN})
    )
    name = f"admin-{uuid.uuid4().hex[:8]}"
    url = f"{server.http}/admin/api/documents/acme/editor/{name}"
    editor, writer = confirmed_writer(server, name, 71)
    request.addfinalizer(own_postgres.resume)  # however this ends
    down(own_postgres)
    during = codec.sync_update(editor.insert(" during"))
    writer.send(during)
    started = time.monotonic()
    status, body, _ = http("DELETE", url, token=ADMIN_TOKEN, timeout=15)
    elapsed = time.monotonic() - started
    # Refused before anything is done: by the store's calls timing out or failing, or at
    # once when the writer's commit has failed already (which comes first is a race).
    reasons = {
        "storage does not answer; retry",
        "storage is not committing: nothing was deleted; retry",
    }
    assert (status, body["code"], body["error"] in reasons) == (503, 503, True), body
    assert elapsed < 8, elapsed
    # The list of live documents still answers, without the sizes storage did not give.
    started = time.monotonic()
    status, body, _ = http("GET", f"{server.http}/admin/api/documents", token=ADMIN_TOKEN)
    elapsed = time.monotonic() - started
    assert status == 200 and elapsed < 8, (status, elapsed)
    assert [(d["name"], d["bytes"]) for d in body["documents"]] == [(name, None)]
    up(own_postgres)
    writer.wait_for(during, timeout=6)
    status, detail, _ = http("GET", url, token=ADMIN_TOKEN)
    assert (status, detail["content"]) == (200, {"t": "kept during"})
    status, body, _ = http("DELETE", url, token=ADMIN_TOKEN)
    assert (status, body) == (200, {"deleted": True, "connections_closed": 1})
    assert http("GET", url, token=ADMIN_TOKEN)[0] == 404
    log = server.log()
    assert f"admin delete acme/editor/{name} from 127.0.0.1 by admin failed=storage" in log
    writer.close()


@pytest.mark.long
def test_every_gunicorn_worker_recovers_from_redis_frozen_then_restarted(
    own_redis, tmp_path, request
):
    """The Procfile's gunicorn with 2 workers on a Redis of its own, /readyz and /healthz
    polled once a second throughout: Redis frozen (SIGSTOP) 5 s and thawed, then
    stopped 3 s and started again (empty). Afterwards the workers fan out to each other
    again: writers of one document connected on both workers through it all see each
    other's new edits, and providers of a new document on both workers converge;
    /readyz said 200 all along, and every worker's /healthz is back to "ok"."""

    from test_fanout import _gunicorn, _wait_started, converged_on_both_workers, stop_gunicorn

    port = free_port()
    proc = _gunicorn(tmp_path, 2, base_config(tmp_path, redis=own_redis.url), port)
    server = SimpleNamespace(http=f"http://127.0.0.1:{port}", url=f"ws://127.0.0.1:{port}")
    request.addfinalizer(lambda: own_redis.proc.send_signal(signal.SIGCONT))
    writers = []
    try:
        _wait_started(proc, server.http)
        # Writers of one document on both workers, connected through the outages.
        name = f"both-{uuid.uuid4().hex[:8]}"
        writers_on_both_workers(server, writers, lambda n: name, 80)
        prober = Prober(server)
        try:
            time.sleep(1.5)
            started = time.monotonic()
            own_redis.proc.send_signal(signal.SIGSTOP)
            time.sleep(5)
            own_redis.proc.send_signal(signal.SIGCONT)
            time.sleep(2)
            own_redis.stop()
            time.sleep(3)
            own_redis.start()
            # Each writer's new edit reaches every writer, on either worker.
            before = [e.doc.get_update() for e, _ in writers]
            sent = [codec.sync_update(e.insert(f"[{i}]")) for i, (e, _) in enumerate(writers)]
            for (_, client), update in zip(writers, sent):
                client.send(update)
            marks = [f"[{i}]" for i in range(len(writers))]
            deadline = time.monotonic() + 15
            for _, client in writers:
                while not all(mark in text_received(client, before) for mark in marks):
                    assert time.monotonic() < deadline, "an edit did not reach every worker"
                    with contextlib.suppress(websocket.WebSocketTimeoutException):
                        client.recv(max(0.1, deadline - time.monotonic()))
            # And providers of a new document on both workers converge.
            converged_on_both_workers(tmp_path, port)
            # Every worker says "ok" again (each answers for itself).
            ok, deadline = {}, time.monotonic() + 15
            while len(ok) < 2 or not all(ok.values()):
                assert time.monotonic() < deadline, ok
                for status, body in ask_at_once(f"{server.http}/healthz"):
                    if status is not None:
                        ok[body["pid"]] = (status, body["status"]) == (200, "ok")
                time.sleep(0.1)
            prober.until_every_worker_answered(since=started)
        finally:
            prober.stop()
        readyz = prober.between(started, time.monotonic(), "/readyz")
        assert len({body["pid"] for _, body in readyz}) == 2  # both workers were probed
        assert readyz and not [r for r in readyz if r[0] != 200], readyz
        healthz = prober.between(started, time.monotonic(), "/healthz")
        assert [b for s, b in healthz if s == 200 and b["status"] == "degraded"], healthz
    finally:
        for _, client in writers:
            client.close()
        stop_gunicorn(proc)


@pytest.mark.long
def test_an_admin_purge_left_running_keeps_the_document_closed_until_it_ends(
    own_postgres, start_server, tmp_path
):
    """A purge (the delete from storage; a plain delete only writes the trash entry) that
    waits in the database longer than the admin API's 5 s (here: on the document's lock,
    held by another session, with a longer storage_lock_timeout) answers 503 saying it
    goes on; until it ends nobody opens the document (4404), so nothing written
    meanwhile is deleted with it; then it is gone, and opens new."""
    import psycopg
    from test_ops import ADMIN_TOKEN, http

    from wsserver.documents import DocKey
    from wsserver.documents.storage.postgres import LOCK_NAMESPACE, doc_lock_key

    server = start_server(
        config=base_config(
            tmp_path,
            storage=own_postgres.url(),
            admin={"token": ADMIN_TOKEN},
            storage_lock_timeout=30,
            unload_after=0.1,
        )
    )
    name = f"locked-{uuid.uuid4().hex[:8]}"
    url = f"{server.http}/admin/api/documents/acme/editor/{name}"
    _, writer = confirmed_writer(server, name, 72)
    writer.close()
    deadline = time.monotonic() + 10
    while http("GET", url, token=ADMIN_TOKEN)[1]["connections"]:
        assert time.monotonic() < deadline, "the writer never left"
        time.sleep(0.1)
    with psycopg.connect(own_postgres.url(), autocommit=True) as holder:
        key = DocKey("acme", "editor", name)
        holder.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_NAMESPACE, doc_lock_key(key)))
        status, body, _ = http("DELETE", f"{url}/purge", token=ADMIN_TOKEN, timeout=15)
        assert (status, body) == (
            503,
            {
                "error": "storage did not answer in time: the delete ends when it does; retry",
                "code": 503,
            },
        )
        assert handshake_outcome(server, name)[0] == 4404  # before: served, then deleted
    deadline = time.monotonic() + 10
    while http("GET", url, token=ADMIN_TOKEN)[0] != 404:
        assert time.monotonic() < deadline, "the delete never ended"
        time.sleep(0.1)
    assert handshake_outcome(server, name)[0] == "served"
