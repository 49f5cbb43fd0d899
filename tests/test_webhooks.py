"""Webhooks against a real local HTTP receiver (a thread of this process on 127.0.0.1),
sent by a real `wsserver serve` process whose documents real y-websocket providers
(and the HTTP document API) edit.

The receiver answers by path: /ok 200; /flaky 500 to its first two requests, then 200;
/hang never answers (until the test module ends); /fail always 500; /refuse 410; /trickle
200 with a body of TRICKLE_BYTES sent one byte every TRICKLE_EVERY seconds (each read
gets a byte well within a socket timeout; only a deadline on the whole request ends it).
"""

import hashlib
import hmac
import json
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import gevent
import pytest
import yaml
from conftest import (
    OTHER_SECRET,
    ROOT,
    NodeProcess,
    ServerProcess,
    base_config,
    make_token,
    run_node,
)
from test_document_api import post, request, text_update

from wsserver.errors import ConfigError
from wsserver.webhooks.delivery import Delivery
from wsserver.webhooks.settings import Hook, parse_hooks
from wsserver.webhooks.signing import verify

HOOK_SECRET = "hook-secret-for-tests-0123456789abcdef"
TRICKLE_BYTES, TRICKLE_EVERY = 200, 0.1  # 20 s for the whole answer
EVENTS = ["document.changed", "document.created", "connection.opened", "connection.closed"]


class Receiver:
    def __init__(self):
        self.records = []  # {path, headers, body, status}, in arrival order
        self.lock = threading.Lock()
        self.release = threading.Event()  # ends the hanging answers
        self.flaky_seen = 0
        self.trickles_cut = 0  # /trickle answers the sender stopped reading
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    status = 200
                    if self.path == "/flaky":
                        receiver.flaky_seen += 1
                        status = 500 if receiver.flaky_seen <= 2 else 200
                    elif self.path == "/fail":
                        status = 500
                    elif self.path == "/refuse":
                        status = 410
                    receiver.records.append(
                        {
                            "path": self.path,
                            "headers": dict(self.headers),
                            "body": body,
                            "status": status,
                        }
                    )
                if self.path == "/hang":
                    receiver.release.wait(60)
                if self.path == "/trickle":
                    self.trickle()
                    return
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def trickle(self):
                self.send_response(200)
                self.send_header("Content-Length", str(TRICKLE_BYTES))
                self.end_headers()
                try:
                    for _ in range(TRICKLE_BYTES):
                        if receiver.release.wait(TRICKLE_EVERY):
                            return
                        self.wfile.write(b"x")
                        self.wfile.flush()
                except OSError:  # the sender gave up on this answer and closed
                    with receiver.lock:
                        receiver.trickles_cut += 1
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self, path, document=None, event=None):
        with self.lock:
            records = list(self.records)
        out = []
        for record in records:
            data = json.loads(record["body"])
            if (
                record["path"] == path
                and (document is None or data["document"] == document)
                and (event is None or data["event"] == event)
            ):
                out.append((record, data))
        return out

    def wait(self, predicate, timeout, what):
        deadline = time.time() + timeout
        while not predicate():
            assert time.time() < deadline, f"timed out waiting for {what}: {self.records}"
            time.sleep(0.05)

    def close(self):
        self.release.set()
        self.server.shutdown()


@pytest.fixture(scope="module")
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def hooked(tmp_path_factory, receiver):
    directory = tmp_path_factory.mktemp("webhooks")
    config = base_config(directory, unload_after=0.3)
    apps = config["auth"]["tenants"]["acme"]["apps"]
    apps["editor"]["webhooks"] = [
        {"url": f"{receiver.url}/ok", "secret": "${HOOK_SECRET}", "events": EVENTS}
    ]
    apps["notes"]["webhooks"] = [
        {"url": f"{receiver.url}/flaky", "secret": HOOK_SECRET, "events": ["document.created"]}
    ]
    config["auth"]["tenants"]["globex"]["apps"]["editor"]["webhooks"] = [
        {"url": f"{receiver.url}/hang", "secret": HOOK_SECRET, "debounce_seconds": 0.1}
    ]
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    server = ServerProcess(path, env={"HOOK_SECRET": HOOK_SECRET}).start()
    yield server
    server.proc.kill()
    server.proc.wait()


def edit(server, doc, token, count, interval_ms):
    return run_node(
        "edits.mjs",
        json.dumps(
            {
                "url": server.url,
                "token": token,
                "room": doc,
                "count": count,
                "intervalMs": interval_ms,
            }
        ),
    )


def webhook_counts(server):
    return json.loads(request(server, "GET", "/healthz")[2])["webhooks"]


def signed_correctly(record):
    """What a receiver checks, written out here without the server's code."""
    timestamp = record["headers"]["X-Wsserver-Timestamp"]
    expected = (
        "sha256="
        + hmac.new(
            HOOK_SECRET.encode(), timestamp.encode() + b"." + record["body"], hashlib.sha256
        ).hexdigest()
    )
    return (
        hmac.compare_digest(expected, record["headers"]["X-Wsserver-Signature"])
        and abs(time.time() - int(timestamp)) < 60
    )


def test_events_are_signed_and_describe_what_happened(hooked, receiver):
    doc = f"hooks-{uuid.uuid4().hex[:8]}"
    result = edit(hooked, doc, make_token(sub="alice"), 3, 10)
    assert result["sent"] == 3
    receiver.wait(
        lambda: (
            receiver.events("/ok", doc, "connection.closed")
            and receiver.events("/ok", doc, "document.changed")
        ),
        10,
        "the events",
    )
    seen = receiver.events("/ok", doc)
    names = [data["event"] for _, data in seen]
    assert names.count("connection.opened") == 1 and names.count("connection.closed") == 1
    assert names.count("document.created") == 1
    assert names.index("connection.opened") < names.index("document.created")
    for record, data in seen:
        assert signed_correctly(record), record
        assert record["headers"]["Content-Type"] == "application/json"
        assert (data["tenant"], data["app"], data["document"]) == ("acme", "editor", doc)
        assert data["time"].endswith("Z")
        if data["event"].startswith("connection."):
            assert data["sub"] == "alice"
        else:
            assert "sub" not in data
    # A tampered body or an old timestamp fails the same check.
    record = seen[0][0]
    assert not signed_correctly(dict(record, body=record["body"] + b" "))
    assert not verify(
        HOOK_SECRET.encode(),
        record["body"],
        "1000000000",
        record["headers"]["X-Wsserver-Signature"],
    )
    assert verify(
        HOOK_SECRET.encode(),
        record["body"],
        record["headers"]["X-Wsserver-Timestamp"],
        record["headers"]["X-Wsserver-Signature"],
    )


def test_an_api_write_sends_document_changed(hooked, receiver):
    doc = f"hooks-api-{uuid.uuid4().hex[:8]}"
    assert post(hooked, doc, make_token(), text_update("from the backend"))[0] == 200
    receiver.wait(lambda: receiver.events("/ok", doc, "document.changed"), 10, "document.changed")
    assert [d["event"] for _, d in receiver.events("/ok", doc)] == [
        "document.created",
        "document.changed",
    ]


@pytest.mark.long
def test_document_changed_is_debounced(hooked, receiver):
    doc = f"hooks-debounce-{uuid.uuid4().hex[:8]}"
    result = edit(hooked, doc, make_token(sub="bob"), 100, 30)  # 100 edits in about 3 s
    assert result["sent"] == 100
    assert 2.5 < result["editedMs"] / 1000 < 6
    time.sleep(2.5)  # the last window (2 s) closes
    changed = receiver.events("/ok", doc, "document.changed")
    assert len(changed) in (2, 3), [d["time"] for _, d in changed]


def test_a_receiver_that_fails_twice_gets_the_event(hooked, receiver):
    doc = f"hooks-flaky-{uuid.uuid4().hex[:8]}"
    before = webhook_counts(hooked)
    assert post(hooked, doc, make_token(app="notes"), text_update("x"))[0] == 200
    receiver.wait(
        lambda: any(r["status"] == 200 for r, _ in receiver.events("/flaky", doc)),
        15,
        "the third attempt",
    )
    attempts = receiver.events("/flaky", doc)
    assert [r["status"] for r, _ in attempts] == [500, 500, 200]
    assert {d["event"] for _, d in attempts} == {"document.created"}
    assert all(signed_correctly(r) for r, _ in attempts)
    after = webhook_counts(hooked)
    assert after["retried"] - before["retried"] == 2
    assert after["delivered"] > before["delivered"]
    exposition = request(hooked, "GET", "/metrics")[2].decode()
    assert (
        f'wsserver_webhook_events_total{{outcome="retried"}} {float(after["retried"])}'
        in exposition
    )


def test_a_hanging_receiver_does_not_slow_editing(hooked, receiver):
    token = make_token(tenant="globex", kid="g1", secret=OTHER_SECRET, sub="carol")
    docs = [f"hooks-hang-{i}-{uuid.uuid4().hex[:6]}" for i in range(3)]
    nodes = [
        NodeProcess(
            "edits.mjs",
            {"url": hooked.url, "token": token, "room": doc, "count": 60, "intervalMs": 20},
        )
        for doc in docs
    ]
    try:
        results = [node.result(60) for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    # Every edit was confirmed (durable and echoed) while every sender was parked.
    assert [r["sent"] for r in results] == [60, 60, 60]
    assert receiver.events("/hang")
    counts = webhook_counts(hooked)
    assert counts["in_flight"] <= 4 and counts["queued"] <= 1000, counts
    # The documents are whole, as the API reads them.
    for doc, r in zip(docs, results):
        status, _, body = request(hooked, "GET", f"/v1/documents/{doc}?format=json", token)
        assert status == 200 and json.loads(body) == {"text": r["text"]}


# --- the delivery queue in this process, against the same receiver ------------------


def test_a_full_queue_drops_and_counts(receiver):
    hook = Hook(f"{receiver.url}/hang", HOOK_SECRET.encode(), frozenset(EVENTS))
    delivery = Delivery(queue_size=3, senders=1, attempts=1, timeout=0.5)
    for i in range(10):
        delivery.enqueue(hook, "document.changed", json.dumps({"i": i}).encode())
    counts = delivery.counts()
    assert (counts["queued"], counts["dropped"]) == (3, 7)
    delivery.close(0)


def test_retries_run_out_and_the_event_is_dropped(receiver):
    hook = Hook(f"{receiver.url}/fail", HOOK_SECRET.encode(), frozenset(EVENTS))
    delivery = Delivery(senders=1, attempts=3, retry=(0.05, 0.1), timeout=2)
    body = json.dumps({"event": "document.changed", "document": "gone"}).encode()
    delivery.enqueue(hook, "document.changed", body)
    deadline = time.time() + 10
    while delivery.counts()["dropped"] == 0:
        assert time.time() < deadline, delivery.counts()
        gevent.sleep(0.05)
    assert delivery.counts() == {
        "queued": 0,
        "in_flight": 0,
        "delivered": 0,
        "retried": 2,
        "dropped": 1,
    }
    assert len([r for r in receiver.records if r["body"] == body]) == 3
    delivery.close(0)


def test_a_4xx_answer_is_dropped_without_a_retry(receiver):
    """The receiver refuses the event (4xx): asking again would get the same answer."""
    hook = Hook(f"{receiver.url}/refuse", HOOK_SECRET.encode(), frozenset(EVENTS))
    delivery = Delivery(senders=1, attempts=3, retry=(0.05, 0.1), timeout=2)
    body = json.dumps({"event": "document.changed", "document": uuid.uuid4().hex}).encode()
    delivery.enqueue(hook, "document.changed", body)
    deadline = time.time() + 10
    while delivery.counts()["dropped"] == 0:
        assert time.time() < deadline, delivery.counts()
        gevent.sleep(0.05)
    assert [r["status"] for r in receiver.records if r["body"] == body] == [410]
    assert delivery.counts() == {
        "queued": 0,
        "in_flight": 0,
        "delivered": 0,
        "retried": 0,
        "dropped": 1,
    }
    delivery.close(0)


# Run the way the server runs it: gevent's sockets (monkey-patched at start), so the
# whole-request deadline can interrupt a read; this test process is not patched.
TRICKLE_SCRIPT = """
import gevent.monkey; gevent.monkey.patch_all()
import json, sys, time
import gevent
from wsserver.webhooks.delivery import Delivery
from wsserver.webhooks.settings import Hook
delivery = Delivery(senders=1, attempts=2, retry=(0.05, 0.05), timeout=0.5)
hook = Hook(sys.argv[1], b"secret", frozenset())
delivery.enqueue(hook, "document.changed", sys.argv[2].encode())
started = time.monotonic()
while not (delivery.counts()["dropped"] or delivery.counts()["delivered"]):
    if time.monotonic() - started > 5:  # each attempt's deadline is 0.5 s
        break
    gevent.sleep(0.02)
print(json.dumps(delivery.counts()))
"""


def test_a_receiver_trickling_its_answer_is_abandoned_at_the_deadline(receiver):
    """REQUEST_TIMEOUT bounds the whole request: a receiver that sends its answer a byte
    at a time (each read well within the socket timeout) would otherwise hold a sender
    for as long as it likes. Each attempt is abandoned at the deadline and retried, and
    the event is dropped once the attempts run out, as for a receiver that never answers."""
    body = json.dumps({"event": "document.changed", "document": uuid.uuid4().hex})
    run = subprocess.run(
        [sys.executable, "-c", TRICKLE_SCRIPT, f"{receiver.url}/trickle", body],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    counts = json.loads(run.stdout)
    assert counts == {"queued": 0, "in_flight": 0, "delivered": 0, "retried": 1, "dropped": 1}, (
        counts,
        run.stderr,
    )
    assert "no answer within 0.5s" in run.stderr
    assert len([r for r in receiver.records if r["body"] == body.encode()]) == 2
    receiver.wait(lambda: receiver.trickles_cut >= 2, 5, "the sender to close both answers")


def test_bad_webhook_config_names_the_key():
    path = "auth.tenants.acme.apps.editor.webhooks"
    cases = [
        ({"url": "ftp://x", "secret": HOOK_SECRET}, f"{path}[0].url"),
        ({"url": "https://x.example"}, f"{path}[0].secret"),
        (
            {"url": "https://x.example", "secret": HOOK_SECRET, "events": ["document.erased"]},
            f"{path}[0].events",
        ),
        (
            {"url": "https://x.example", "secret": HOOK_SECRET, "debounce_seconds": 60},
            f"{path}[0].debounce_seconds",
        ),
        ({"url": "https://x.example", "secret": HOOK_SECRET, "retries": 3}, f"{path}[0].retries"),
    ]
    for entry, key in cases:
        with pytest.raises(ConfigError) as e:
            parse_hooks(path, [entry])
        assert e.value.key == key
    assert parse_hooks(path, [{"url": "https://x.example", "secret": HOOK_SECRET}])[
        0
    ].events == set(EVENTS)
