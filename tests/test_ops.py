"""Operations: /metrics, /livez and /readyz, JSON logs without tokens, the admin API
and console (in a real headless Chromium), `wsserver check-config`, and gunicorn
(two workers' metrics summed; SIGTERM waits for the flush and the claims' release).

Servers are real processes (`wsserver serve`, or gunicorn with the Procfile's config);
clients are real y-websocket providers (tests/node/ops.mjs), held open while the test
looks at the server and told over stdin when to edit.
"""

import json
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime

import pytest
import websocket
import yaml
from conftest import (
    NODE_DIR,
    ROOT,
    TEST_PROCESS,
    ServerProcess,
    base_config,
    free_port,
    make_token,
    wait_workers_answering,
)
from prometheus_client.parser import text_string_to_metric_families
from pycrdt import Doc, Text
from test_bad_input import Client
from test_outages import handshake_outcome

from wsserver.protocol import codec
from wsserver.scrub import redact
from wsserver.transport import frames

ADMIN_TOKEN = "admin-token-0123456789abcdef"
METRICS_TOKEN = "metrics-token-0123456789abcdef"


def doc_name(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --- HTTP and metrics helpers --------------------------------------------------------


def http(method, url, token=None, timeout=10):
    """(status, parsed JSON or text body, headers) of one request."""
    request = urllib.request.Request(url, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, body, headers = response.status, response.read().decode(), response.headers
    except urllib.error.HTTPError as e:
        status, body, headers = e.code, e.read().decode(), e.headers
    if headers.get("Content-Type", "").startswith("application/json"):
        body = json.loads(body)
    return status, body, headers


def status_of(method, url, token=None):
    """(status, JSON body) of a request that should be refused; for one that is not,
    (status, None) without reading the body (an event stream does not end)."""
    request = urllib.request.Request(url, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, None
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def near_misses(token):
    """Tokens that are not `token` but start or end like it: truncated, extended."""
    return [token[:-1], token[:8], token + "0", token[1:]]


def scrape(base, token=None):
    """{(sample name, frozenset of labels): value} of GET /metrics."""
    status, body, _ = http("GET", f"{base}/metrics", token)
    assert status == 200, body
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


def eventually(predicate, timeout=10, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def refused_handshake(url, doc="refused-doc", **options):
    """Open a WebSocket the server refuses; return its close code."""
    ws = websocket.create_connection(f"{url}/{doc}", timeout=5, **options)
    try:
        while True:
            opcode, frame = ws.recv_data_frame(True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return frames.parse_close(frame.data)[0]
    finally:
        ws.close()


# --- providers held open -------------------------------------------------------------


class Providers:
    """tests/node/ops.mjs: providers on one document, editing on command."""

    def __init__(self, url, room, subs, names=None, via_tokens=None):
        tokens = via_tokens or [make_token(sub=sub) for sub in subs]
        spec = {"url": url, "room": room, "tokens": tokens, "names": names}
        self.proc = subprocess.Popen(
            ["node", str(NODE_DIR / "ops.mjs"), json.dumps(spec)],
            cwd=NODE_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines = queue.Queue()
        self.stderr = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()
        self.wait("synced")

    def _read(self):
        for line in self.proc.stdout:
            if line.strip():
                self.lines.put(json.loads(line))
        self.lines.put(None)

    def wait(self, phase, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            try:
                message = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"ops.mjs: no {phase!r} within {timeout}s; stderr: {''.join(self.stderr)}"
                ) from None
            if message is None or "error" in message:
                raise AssertionError(
                    f"ops.mjs ended before {phase!r}: {message} {''.join(self.stderr)}"
                )
            if message.get("phase") == phase:
                return message

    def command(self, **command):
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def insert(self, client, text, wait=True):
        self.command(insert={"client": client, "text": text})
        return self.wait("inserted") if wait else None

    def quit(self):
        self.command(quit=True)
        result = self.wait("done")
        self.proc.wait(10)
        return result

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def closes_once_closed(p, client, timeout=10):
    """Every client's closes (tests/node/ops.mjs) once the provider `client` reported its
    socket closed, at most `timeout` seconds on: a server's close reaches the provider
    only after the closing handshake, which a quit sent as soon as the admin API answered
    can overtake (the provider then records no close)."""
    p.command(closed={"client": client, "ms": int(timeout * 1000)})
    return p.wait("closed", timeout=timeout + 5)["closes"]


@pytest.fixture
def providers():
    started = []

    def start(*args, **kwargs):
        p = Providers(*args, **kwargs)
        started.append(p)
        return p

    yield start
    for p in started:
        p.kill()


# --- gunicorn ------------------------------------------------------------------------


class Gunicorn(ServerProcess):
    """The Procfile's command: gunicorn -c python:wsserver.gunicorn_conf 'wsserver:create_app()',
    on loopback. `output` is its stderr (the log); stdout stays empty."""

    def __init__(self, config_path, workers=2, port=None, config_by_env_option=False):
        """`config_by_env_option`: $WSSERVER_CONFIG given with gunicorn's `--env`, not in
        the environment gunicorn starts with."""
        super().__init__(config_path, port=port or free_port())
        env = dict(
            os.environ,
            PORT=str(self.port),
            WEB_CONCURRENCY=str(workers),
            WSSERVER_CONFIG=str(config_path),
            PYTHONUNBUFFERED="1",
        )
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        options = []
        if config_by_env_option:
            options = ["--env", f"WSSERVER_CONFIG={env.pop('WSSERVER_CONFIG')}"]
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                "python:wsserver.gunicorn_conf",
                "--bind",
                f"127.0.0.1:{self.port}",
                *options,
                "wsserver:create_app()",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out = []
        threading.Thread(target=lambda: self.out.extend(self.proc.stdout), daemon=True).start()
        # The log: log() joins it once gunicorn has exited, so every line is there.
        self._drainer = threading.Thread(
            target=lambda: self.output.extend(self.proc.stderr), daemon=True
        )
        self._drainer.start()
        try:
            eventually(
                lambda: self.log().count("Booting worker") >= workers and self._live(),
                timeout=30,
                what="gunicorn workers",
            )
            wait_workers_answering(self.http, workers)
        except AssertionError as e:  # the test never gets the object: end gunicorn here
            self.kill()
            raise AssertionError(f"{e}:\n{self.log()[-4000:]}") from None

    def _live(self):
        try:
            return http("GET", f"{self.http}/livez", timeout=1)[0] == 200
        except OSError:
            return False

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def write_config(tmp_path, name="config.yaml", **overrides):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(base_config(tmp_path, **overrides)))
    return path


# --- /metrics ------------------------------------------------------------------------


def test_metrics_follow_real_traffic(start_server, providers):
    server = start_server()
    before = scrape(server.http)
    room = doc_name("metrics")
    p = providers(server.url, room, ["alice", "bob", "carol"])
    samples = eventually(
        lambda: (lambda s: s if value(s, "wsserver_connections") == 3 else None)(
            scrape(server.http)
        ),
        what="3 connections in /metrics",
    )
    assert value(samples, "wsserver_documents_loaded") == 1

    assert refused_handshake(server.url) == 4001
    samples = eventually(
        lambda: (
            lambda s: s if value(s, "wsserver_handshakes_refused_total", code="4001") == 1 else None
        )(scrape(server.http)),
        what="the 4001 counter",
    )
    assert value(before, "wsserver_handshakes_refused_total", code="4001") == 0

    p.insert(0, "hello")
    samples = scrape(server.http)
    assert value(samples, "wsserver_updates_total") >= 1
    assert value(samples, "wsserver_store_commit_seconds_count") >= 1
    assert value(samples, "wsserver_messages_received_total", type="sync-update") >= 1
    assert value(samples, "wsserver_messages_sent_total", type="sync-update") >= 3  # echo to all
    assert value(samples, "wsserver_initial_sync_seconds_count") == 3
    assert value(samples, "wsserver_connections_accepted_total") == 3

    p.quit()

    def closed(s):
        """0 connections, and their 3 closes counted (counters reach /metrics at the
        next flush, once a second): normal closures (1000, or 1005 without a code)."""
        codes = value(s, "wsserver_closes_total", code="1000") + value(
            s, "wsserver_closes_total", code="1005"
        )
        return s if value(s, "wsserver_connections") == 0 and codes == 3 else None

    samples = eventually(
        lambda: closed(scrape(server.http)), what="0 connections and 3 normal closes"
    )
    # No per-document or per-user label anywhere.
    labels = {label for (_, ls) in samples for label, _ in ls}
    assert not labels & {"doc", "document", "tenant", "app", "user", "sub"}, labels


def test_metrics_token(start_server):
    server = start_server(metrics={"token": METRICS_TOKEN})
    status, body, headers = http("GET", f"{server.http}/metrics")
    assert (status, body["code"]) == (401, 401) and headers["WWW-Authenticate"] == "Bearer"
    status, body, _ = http("GET", f"{server.http}/metrics", token="wrong-token")
    assert (status, body) == (403, {"error": "wrong token", "code": 403})
    for near in near_misses(METRICS_TOKEN):
        assert status_of("GET", f"{server.http}/metrics", near)[0] == 403, near
    assert "wsserver_connections" in {name for name, _ in scrape(server.http, METRICS_TOKEN)}


@pytest.mark.long
def test_gunicorn_keeps_serving_all_but_readyz_during_the_drain(tmp_path):
    """SIGTERM to the master (a platform stopping the dyno): for `shutdown_drain` seconds
    every worker still accepts and serves /livez and /healthz while /readyz answers 503;
    then the worker stops. (gunicorn's own SIGTERM handling closed the listening socket
    within a second: connections were refused for the rest of the drain.) Timed from the
    first 503, by when the worker has the signal (the master passes it on when a loaded
    box lets it): probed until 1.5 s after it, then a new WebSocket client, well inside
    the 4 s drain however long a probe takes."""
    server = Gunicorn(write_config(tmp_path, shutdown_drain=4), workers=1)
    try:
        assert http("GET", f"{server.http}/readyz")[0] == 200
        server.proc.send_signal(signal.SIGTERM)
        seen, draining, deadline = [], None, time.monotonic() + 15
        while draining is None or time.monotonic() < draining + 1.5:
            assert time.monotonic() < deadline, seen
            try:
                seen.append(
                    (
                        http("GET", f"{server.http}/livez", timeout=2)[0],
                        http("GET", f"{server.http}/healthz", timeout=2)[0],
                        http("GET", f"{server.http}/readyz", timeout=2)[:2],
                    )
                )
            except OSError as e:  # refused: the worker stopped accepting
                seen.append(repr(e))
            if draining is None and isinstance(seen[-1], tuple) and seen[-1][2][0] == 503:
                draining = time.monotonic()
            time.sleep(0.2)
        # Every probe served; /readyz 200 until the worker had the signal, 503 from then on.
        assert all(isinstance(s, tuple) and s[:2] == (200, 200) for s in seen), seen
        readyz = [s[2][0] for s in seen]
        first = readyz.index(503)
        assert set(readyz[:first]) <= {200} and set(readyz[first:]) == {503}, seen
        assert seen[-1][2][1]["checks"]["server"] == "shutting down"
        # A new WebSocket client too, 1.5 s into the drain: past the second in which
        # gunicorn's own handling stopped accepting.
        assert handshake_outcome(server, doc_name("drain"))[0] == "served"
        assert server.proc.wait(25) == 0
    finally:
        server.kill()


@pytest.mark.long
def test_gunicorn_two_workers_sum_metrics_and_log_json(tmp_path, providers, redis_url):
    # Two workers need `redis` (gunicorn refuses them without it: tests/test_fanout.py).
    server = Gunicorn(write_config(tmp_path, log_format="json", redis=redis_url), workers=2)
    try:
        p = providers(server.url, doc_name("gunicorn"), ["alice", "bob", "carol"])
        for _ in range(2):
            assert refused_handshake(server.url) == 4001
        # Whichever worker answers the scrape, it reports both workers' values.
        eventually(
            lambda: value(scrape(server.http), "wsserver_connections") == 3, what="3 connections"
        )
        for _ in range(10):
            samples = scrape(server.http)
            assert value(samples, "wsserver_connections") == 3
            assert value(samples, "wsserver_handshakes_refused_total", code="4001") == 2
        # Per-message counts reach the shared files within a second (metrics.FLUSH_INTERVAL),
        # whichever worker sent them: every scrape then has them all.
        p.insert(0, "hello")
        time.sleep(2.5)
        for _ in range(10):
            samples = scrape(server.http)
            assert value(samples, "wsserver_messages_received_total", type="sync-update") >= 1
            assert value(samples, "wsserver_messages_sent_total", type="sync-update") >= 3
        p.quit()
        assert server.stop() == 0
    finally:
        server.kill()
    lines = [line for line in server.output if line.strip()]
    assert any("Starting gunicorn" in line for line in lines)
    for line in lines:  # gunicorn's own lines too
        record = json.loads(line)
        assert {"ts", "level", "logger", "message"} <= set(record), line


@pytest.mark.long
def test_gunicorns_own_lines_follow_a_config_named_by_its_env_option(tmp_path):
    """`gunicorn --env WSSERVER_CONFIG=...`: its own lines (start-up, workers) come out in
    the config's `log_format` too (GunicornLogger reads the config it names)."""
    server = Gunicorn(
        write_config(tmp_path, log_format="json"), workers=1, config_by_env_option=True
    )
    try:
        assert server.stop() == 0
    finally:
        server.kill()
    lines = [line for line in server.output if line.strip()]
    assert any("Starting gunicorn" in line for line in lines)
    for line in lines:
        assert line.startswith("{") and "level" in json.loads(line), line


@pytest.mark.long
def test_gunicorn_sigterm_waits_for_the_flush_and_the_claims_release(tmp_path, providers):
    """Under gunicorn, SIGTERM: the worker's loop ends as soon as its sockets are closed;
    the worker must still wait until every document is flushed (compacted) and its
    region claims released. The storage is held locked for 3 s meanwhile, so the flush
    cannot end before the worker's loop does."""
    db_path = tmp_path / "wsserver.sqlite3"
    port = free_port()
    # Two regions, so documents are claimed in the registry (the `registry` table of
    # the same SQLite file).
    config = write_config(
        tmp_path, region="eu", regions={"eu": f"ws://127.0.0.1:{port}", "us": "ws://127.0.0.1:9"}
    )
    server = Gunicorn(config, workers=1, port=port)
    rooms = [doc_name("term"), doc_name("term")]
    try:
        for room in rooms:
            p = providers(server.url, room, ["alice"])
            p.insert(0, f"kept in {room}")
        db = sqlite3.connect(db_path, timeout=10)
        assert db.execute("SELECT count(*) FROM registry").fetchone()[0] == 2
        db.execute("BEGIN IMMEDIATE")  # no compaction, no claim release until we commit
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(3)
        db.execute("COMMIT")
        assert server.proc.wait(30) == 0
    finally:
        server.kill()
    log = server.log()
    assert "shutdown complete (flushed=True, stored=True)" in log, log
    for room in rooms:
        assert (
            db.execute("SELECT count(*) FROM updates WHERE name=?", (room,)).fetchone()[0] == 0
        ), f"{room} was not compacted before the worker exited:\n{log}"
        snapshot = db.execute("SELECT data FROM snapshots WHERE name=?", (room,)).fetchone()
        assert snapshot is not None
    assert db.execute("SELECT count(*) FROM registry").fetchone()[0] == 0, (
        f"claims left to expire instead of being released:\n{log}"
    )


# --- /livez, /readyz -----------------------------------------------------------------


READY = {"server": "ok", "store": "ok", "hub": "ok"}


@pytest.mark.long
def test_failing_commits_degrade_healthz_not_readyz_and_logs_stay_json(
    start_server, providers, tmp_path
):
    """Another process holding the SQLite file's write lock fails every process's
    commits alike: /healthz says so ("degraded", the reason), /readyz stays 200 (a
    balancer would take every process out); both name the process."""
    server = start_server(log_format="json")
    assert http("GET", f"{server.http}/livez")[:2] == (200, {"status": "alive"})
    status, body, _ = http("GET", f"{server.http}/readyz")
    assert (status, body["status"], body["checks"]) == (200, "ready", READY)
    assert body["pid"] == server.proc.pid and body["host"]
    p = providers(server.url, doc_name("ready"), ["alice"])
    p.insert(0, "before")
    db = sqlite3.connect(tmp_path / "wsserver.sqlite3", timeout=10)
    db.execute("BEGIN IMMEDIATE")  # another process holds the write lock: commits fail
    p.insert(0, " during", wait=False)

    def locked():
        status, body, _ = http("GET", f"{server.http}/healthz")
        return body if "database is locked" in body["store"] else None

    body = eventually(locked, timeout=20, what="/healthz naming the failing commits")
    assert body["status"] == "degraded" and body["pid"] == server.proc.pid
    status, body, _ = http("GET", f"{server.http}/readyz")
    assert (status, body["checks"]) == (200, READY)
    db.execute("COMMIT")
    assert p.wait("inserted")["text"] == "before during"  # the retried commit went through
    eventually(
        lambda: http("GET", f"{server.http}/healthz")[1]["store"] == "ok", what="healthy again"
    )

    records = [json.loads(line) for line in server.log().splitlines() if line.strip()]
    assert all({"ts", "level", "logger", "message"} <= set(r) for r in records)
    failures = [r for r in records if "storage commit" in r["message"]]
    assert failures and "OperationalError" in failures[0]["exc_info"]  # a traceback, as JSON


def test_redis_down_degrades_healthz_not_readyz(start_server, own_redis):
    server = start_server(redis=own_redis.url)
    status, body, _ = http("GET", f"{server.http}/readyz")
    assert (status, body["checks"]) == (200, READY)
    own_redis.stop()
    status, body, _ = http("GET", f"{server.http}/readyz")
    assert (status, body["checks"]) == (200, READY)  # every process shares the outage
    status, body, _ = http("GET", f"{server.http}/healthz")
    assert status == 200 and body["status"] == "degraded", body
    assert any(state != "ok" for state in body["redis"].values()) and body["store"] == "ok"


def test_readyz_hub_check_fails_for_a_while_after_the_event_loop_was_blocked():
    """The `hub` check of /readyz: a blocked event loop is this process's own fault."""
    import gevent

    from wsserver.http.probes import HubWatch

    watch = HubWatch(tick=0.02, late=0.2, window=0.5)
    try:
        gevent.sleep(0.05)
        watch.check()
        time.sleep(0.4)  # not gevent's: the whole loop stands still
        gevent.sleep(0.05)
        with pytest.raises(RuntimeError, match=r"event loop blocked for 0\.\d s"):
            watch.check()
        gevent.sleep(0.6)
        watch.check()  # the window has passed
    finally:
        watch.stop()


def test_readyz_turns_503_as_soon_as_sigterm_arrives(start_server, providers):
    server = start_server(shutdown_drain=2)
    p = providers(server.url, doc_name("drain"), ["alice"])
    server.proc.send_signal(signal.SIGTERM)
    status, body, _ = eventually(
        lambda: (lambda r: r if r[0] == 503 else None)(http("GET", f"{server.http}/readyz")),
        timeout=1.5,
        interval=0.02,
        what="/readyz 503 after SIGTERM",
    )
    assert body["checks"]["server"] == "shutting down"
    assert http("GET", f"{server.http}/livez")[0] == 200  # still serving during the drain
    assert server.proc.wait(20) == 0
    assert p.quit()["closes"][0][0]["code"] == 1012


# --- logs ----------------------------------------------------------------------------


def test_redact_covers_every_way_a_token_travels():
    jwt = make_token()
    for line in [
        f"GET /doc?token={jwt}&x=1",
        f"/doc?access_token={jwt}",
        f"Sec-WebSocket-Protocol: access_token, {jwt}",
        f"Authorization: Bearer {jwt}",
        json.dumps({"message": f"Bearer {jwt}"}),
        f"saw {jwt} here",
        "Authorization: Bearer opaque-admin-token-value",
    ]:
        redacted = redact(line)
        assert jwt not in redacted and "opaque-admin" not in redacted, redacted
        assert "[redacted]" in redacted
    assert json.loads(redact(json.dumps({"m": f"x?token={jwt}"}))) == {"m": "x?token=[redacted]"}


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_no_token_in_any_log_line_at_debug(start_server, providers, log_format):
    server = start_server(
        log_level="debug",
        log_format=log_format,
        unload_after=0.1,
        admin={"token": ADMIN_TOKEN},
        metrics={"token": METRICS_TOKEN},
    )
    room = doc_name("logs")
    tokens = [
        make_token(sub="by-protocol"),
        make_token(sub="by-query"),
        make_token(sub="by-header"),
    ]
    # One provider per way of passing the token (ops.mjs passes it by subprotocol; query
    # and header go through raw sockets below).
    p = providers(server.url, room, ["by-protocol"], via_tokens=tokens[:1])
    for query_token in [tokens[1], make_token(ttl=-100)]:  # valid, then expired (4002)
        ws = websocket.create_connection(f"{server.url}/{room}?token={query_token}", timeout=5)
        ws.close()
    ws = websocket.create_connection(
        f"{server.url}/{room}", timeout=5, header=[f"Authorization: Bearer {tokens[2]}"]
    )
    ws.close()
    assert refused_handshake(server.url, f"{room}?token={make_token(ttl=-100)}") == 4002
    assert (
        refused_handshake(server.url, "bad%20name", subprotocols=["access_token", tokens[0]])
        == 4007
    )
    http("GET", f"{server.http}/discovery?documentName={room}&token={tokens[1]}")
    http("GET", f"{server.http}/admin/api/documents", token=ADMIN_TOKEN)
    http("GET", f"{server.http}/metrics", token=METRICS_TOKEN)
    p.quit()
    eventually(lambda: "connection closed" in server.log(), what="close events")
    time.sleep(0.3)
    log = server.log()
    for secret in tokens + [ADMIN_TOKEN, METRICS_TOKEN]:
        assert secret not in log
    # Signature parts alone must not leak either.
    assert not any(t.rsplit(".", 1)[1] in log for t in tokens)
    if log_format == "json":
        records = [json.loads(line) for line in log.splitlines() if line.strip()]
        for record in records:
            assert {"ts", "level", "logger", "message"} <= set(record), record
            datetime.fromisoformat(record["ts"])
        closes = [r for r in records if r["message"] == "connection closed"]
        assert closes and {"tenant", "app", "doc", "conn", "ip", "code"} <= set(closes[0])
        assert closes[0]["tenant"] == "acme" and closes[0]["doc"] == room
        refusal = [r for r in records if r.get("code") == 4002]
        assert refusal and refusal[0]["ip"] == "127.0.0.1"


# --- admin API -----------------------------------------------------------------------


def test_admin_routes_answer_404_when_not_configured(server):
    for path in ["/admin", "/admin/api/documents", "/admin/api/documents/acme/editor/x"]:
        status, body, _ = http("GET", f"{server.http}{path}", token=ADMIN_TOKEN)
        assert (status, body) == (404, {"error": "not found", "code": 404}), path


def test_admin_api(start_server, providers):
    server = start_server(admin={"token": ADMIN_TOKEN}, unload_after=0.2)
    api = f"{server.http}/admin/api/documents"
    room = doc_name("admin")
    status, body, headers = http("GET", api)
    assert (status, body["code"]) == (401, 401)
    assert http("GET", api, token="not-the-admin-token")[:2] == (
        403,
        {"error": "wrong token", "code": 403},
    )

    p = providers(server.url, room, ["alice", "bob", "alice"], names=["Alice", "Bob", "Alice 2"])
    p.insert(0, "hello")
    status, body, _ = http("GET", api, token=ADMIN_TOKEN)
    assert status == 200, server.log()
    (summary,) = [d for d in body["documents"] if d["name"] == room]
    assert (summary["tenant"], summary["app"], summary["connections"]) == ("acme", "editor", 3)
    assert summary["users"] == ["alice", "bob"]
    assert sorted(s["user"]["name"] for s in summary["awareness"].values()) == [
        "Alice",
        "Alice 2",
        "Bob",
    ]
    assert summary["bytes"] > 0
    assert abs(datetime.fromisoformat(summary["updated"]).timestamp() - time.time()) < 30

    status, detail, _ = http("GET", f"{api}/acme/editor/{room}", token=ADMIN_TOKEN)
    assert status == 200 and detail["content"] == {"content": "hello"}
    assert detail["connections"] == 3

    # Every route of the API, the event stream included, asks for the whole token.
    doc_url = f"{api}/acme/editor/{room}"
    routes = [("GET", api), ("GET", doc_url), ("GET", f"{doc_url}/events"), ("DELETE", doc_url)]
    for method, url in routes:
        assert status_of(method, url) == (
            401,
            {"error": "missing bearer token (Authorization: Bearer ...)", "code": 401},
        ), url
        for wrong in ["not-the-admin-token", *near_misses(ADMIN_TOKEN)]:
            assert status_of(method, url, wrong) == (
                403,
                {"error": "wrong token", "code": 403},
            ), (method, url, wrong)
    assert status_of("GET", f"{doc_url}/events", ADMIN_TOKEN) == (200, None)

    # A stored document that is not live any more.
    p.quit()
    eventually(
        lambda: (
            room not in [d["name"] for d in http("GET", api, token=ADMIN_TOKEN)[1]["documents"]]
        ),
        what="the document to unload",
    )
    status, detail, _ = http("GET", f"{api}/acme/editor/{room}", token=ADMIN_TOKEN)
    assert (status, detail["content"], detail["connections"]) == (200, {"content": "hello"}, 0)
    assert http("GET", f"{api}/acme/editor/no-such-doc", token=ADMIN_TOKEN)[:2] == (
        404,
        {"error": "no such document", "code": 404},
    )
    assert http("GET", f"{api}/globex/editor/{room}", token=ADMIN_TOKEN)[0] == 404  # tenants apart
    assert http("DELETE", f"{api}/acme/editor/{room}")[0] == 401

    # DELETE: connections closed (4404: providers do not come back), storage emptied.
    live = doc_name("admin-delete")
    q = providers(server.url, live, ["carol"])
    q.insert(0, "to be deleted")
    status, body, _ = http("DELETE", f"{api}/acme/editor/{live}", token=ADMIN_TOKEN)
    assert (status, body) == (200, {"deleted": True, "connections_closed": 1})
    assert http("GET", f"{api}/acme/editor/{live}", token=ADMIN_TOKEN)[0] == 404
    time.sleep(1)  # a provider that reconnected would have stored its copy again by now
    assert http("GET", f"{api}/acme/editor/{live}", token=ADMIN_TOKEN)[0] == 404
    assert q.quit()["closes"][0] == [{"code": 4404, "reason": "document deleted"}]


@pytest.mark.long
def test_admin_under_gunicorn_sees_and_deletes_on_every_process(tmp_path, providers, redis_url):
    """Two workers sharing Redis: whichever answers, the list holds every live document
    with every process's connections, and a delete closes them all."""
    server = Gunicorn(
        write_config(tmp_path, admin={"token": ADMIN_TOKEN}, redis=redis_url), workers=2
    )
    api = f"{server.http}/admin/api/documents"
    rooms = [doc_name("everywhere") for _ in range(3)]
    try:
        held = [
            providers(server.url, room, [f"user-{i}", f"other-{i}"]) for i, room in enumerate(rooms)
        ]

        def complete():
            listed = {d["name"]: d for d in http("GET", api, token=ADMIN_TOKEN)[1]["documents"]}
            return all(listed.get(r, {}).get("connections") == 2 for r in rooms) and listed

        eventually(complete, timeout=10, what="every document with its 2 connections")
        # Every worker has published since (the board beats on the process heartbeat).
        time.sleep(2 * TEST_PROCESS["heartbeat_seconds"])
        for _ in range(10):  # every answer, from either worker
            listed = complete()
            assert listed, "a worker answered without the other's documents"
            assert listed[rooms[0]]["users"] == ["other-0", "user-0"]
        status, body, _ = http("DELETE", f"{api}/acme/editor/{rooms[1]}", token=ADMIN_TOKEN)
        assert (status, body) == (200, {"deleted": True, "connections_closed": 2})
        for client in (0, 1):  # their closes, not a quit that overtook them
            closes_once_closed(held[1], client)
        assert held[1].quit()["closes"] == [[{"code": 4404, "reason": "document deleted"}]] * 2
        assert http("GET", f"{api}/acme/editor/{rooms[1]}", token=ADMIN_TOKEN)[0] == 404
        for p in held[::2]:
            p.quit()
        assert server.stop() == 0
    finally:
        server.kill()


def test_admin_console_in_headless_chromium(start_server, providers, browser):
    """Two providers edit; the page open on their document shows each new text within
    a second, and who is present."""
    server = start_server(admin={"token": ADMIN_TOKEN})
    room = doc_name("inspect")
    providers(server.url, doc_name("other"), ["dave"])
    p = providers(server.url, room, ["alice", "bob"], names=["Alice", "Bob"])
    p.insert(0, "Hello")
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        page.goto(f"{server.http}/admin")
        page.fill("#token", ADMIN_TOKEN)
        page.click("#login button")
        page.wait_for_selector(f"tr[data-name='{room}']", timeout=5000)
        page.wait_for_selector("tr[data-name^='other-']", timeout=5000)
        page.fill("#search", "inspect")  # the search box narrows the list
        page.wait_for_selector("tr[data-name^='other-']", state="detached", timeout=5000)
        page.click(f"tr[data-name='{room}']")
        page.wait_for_function(
            "() => [...document.querySelectorAll('pre.content')]"
            ".some(e => e.textContent === 'Hello')",
            timeout=5000,
        )
        for client, text, expected in [
            (0, ", world", "Hello, world"),
            (1, " from Bob", "Hello, world from Bob"),
        ]:
            p.insert(client, text)
            page.wait_for_function(
                "(t) => [...document.querySelectorAll('pre.content')]"
                ".some(e => e.textContent === t)",
                arg=expected,
                timeout=1000,
            )
        people = page.inner_text(".people")
        assert "Alice" in people and "Bob" in people
        shot = os.environ.get("ADMIN_SCREENSHOT")  # README's picture: docs/admin-console.png
        if shot:
            page.fill("#search", "")
            page.wait_for_selector("tr[data-name^='other-']", timeout=5000)
            page.set_viewport_size({"width": 1280, "height": 430})
            page.screenshot(path=shot)
    finally:
        browser.close()


def _hostile_states():
    """Awareness states (raw JSON) a client can send, as {client id: state}: every JSON
    shape, prototype-ish keys, HTML, a huge string, deep nesting within the limit, a
    number past a float's range."""
    deep = '"end"'
    for _ in range(60):
        deep = '{"a":' + deep + "}"
    states = [
        '{"user":{"name":{"toString":"x"}}}',  # issue 22: made the page throw
        '{"user":{"name":"<img src=x onerror=\\"window.pwned=1\\">","color":"red; x: url(/x)"}}',
        '{"__proto__":{"user":{"name":"proto"}},"constructor":{"prototype":{"polluted":1}},'
        '"toString":"x","hasOwnProperty":"x","valueOf":1}',
        '{"user":{"toString":"x","valueOf":"y","name":{"__proto__":{"toString":"z"}}}}',
        '{"user":{"name":["an","array"],"color":{"toString":"red"}}}',
        '{"user":{"name":12345,"color":7}}',
        '{"user":{"name":1e400}}',
        '{"user":{"name":"\\u0000\\u202e\\ud83d\\ude00 mixed"}}',
        '{"user":{"name":"' + "z" * 200_000 + '"}}',
        '{"user":{"name":' + deep + "}}",
        '{"user":"just a string"}',
        '{"user":null}',
        '"a top-level string"',
        "42",
        "false",
        "[1,2,3]",
        "{}",
    ]
    return {1000 + i: state.encode() for i, state in enumerate(states)}


def _hostile_content():
    """A document update holding content a client can write: HTML, a huge string,
    prototype-ish keys, NaN and Infinity, deep nesting within the limit, XML."""
    from pycrdt import Array, Doc, Map, XmlElement, XmlFragment, XmlText

    doc = Doc()
    doc["html"] = Text('<img src=x onerror="window.pwned=2"><script>window.pwned=3</script>')
    doc["huge"] = Text("y" * 200_000)
    doc["keys"] = keys = Map()
    keys["__proto__"] = {"polluted": True}
    keys["constructor"] = {"prototype": {"x": 1}}
    keys["toString"] = "x"
    keys["hasOwnProperty"] = 1
    keys["nan"] = float("nan")
    keys["inf"] = float("-inf")
    deep = "end"
    for _ in range(60):
        deep = {"a": deep}
    keys["deep"] = deep
    doc["list"] = Array([None, True, 1.5, "<b>s</b>", [1, [2]], {"k": None}])
    doc["xml"] = XmlFragment([XmlElement("p", {"class": "<b>"}, [XmlText("<i>hi</i>")])])
    return doc.get_update()


def test_admin_console_renders_hostile_presence_and_content_as_text(start_server, browser):
    """Read-only viewers announce every awareness state a client can send, and a writer
    stores content a client can write; the console lists both documents and shows each
    one's content and every presence entry, as text, with no page error."""
    server = start_server(admin={"token": ADMIN_TOKEN})
    presence, content = doc_name("hostile-presence"), doc_name("hostile-content")
    states = _hostile_states()
    viewers = []
    for name in (presence, content):
        writer = Client(server, name, make_token(sub="writer"))
        writer.recv()
        if name == content:
            update = _hostile_content()
        else:
            plain = Doc()
            plain["text"] = Text("still shown")
            update = plain.get_update()
        message = codec.sync_update(update)
        writer.send(message)
        writer.wait_for(message)  # echoed: stored
        viewers.append(writer)
        for client_id, state in states.items():
            viewer = Client(server, name, make_token(sub=f"viewer-{client_id}", access="read"))
            viewer.recv()
            viewer.send(
                codec.awareness(
                    codec.encode_awareness_entries([codec.AwarenessEntry(client_id, 1, state)])
                )
            )
            viewers.append(viewer)
    errors = []
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{server.http}/admin")
        page.fill("#token", ADMIN_TOKEN)
        page.click("#login button")
        for name in (presence, content):
            page.wait_for_selector(f"tr[data-name='{name}']", timeout=5000)
        for name in (presence, content):
            page.click(f"tr[data-name='{name}']")
            page.wait_for_function(
                "([name, count]) => document.querySelector('#detail h3')?.textContent === name"
                " && document.querySelectorAll('.people .person').length === count",
                arg=[name, len(states)],
                timeout=5000,
            )
            chips = page.eval_on_selector_all(
                ".people .person", "cs => cs.map(c => [c.dataset.client, c.textContent])"
            )
            labels = {int(client): label for client, label in chips}
            assert set(labels) == set(states)
            # each chip's tooltip is its whole state (clipped), as text
            title = page.get_attribute(".person[data-client='1000']", "title")
            assert title == states[1000].decode()
            assert labels[1000] == '{"toString":"x"}'
            assert labels[1001] == '<img src=x onerror="window.pwned=1">'
            assert labels[1002] == "client 1002"
            assert labels[1006] == "client 1006"  # 1e400: no number JSON can hold
            assert labels[1008] == "z" * 120 + "…"
            assert labels[1010] == "client 1010"
            roots = page.eval_on_selector_all(
                ".root",
                "rs => rs.map(r => [r.querySelector('b').textContent,"
                " r.querySelector('pre').textContent])",
            )
            roots = dict(roots)
            if name == presence:
                assert roots == {"text": "still shown"}
                continue
            assert roots["html"] == (
                '<img src=x onerror="window.pwned=2"><script>window.pwned=3</script>'
            )
            assert roots["huge"] == "y" * 200_000
            keys = json.loads(roots["keys"])
            assert keys["__proto__"] == {"polluted": True} and keys["toString"] == "x"
            assert keys["nan"] is None and keys["inf"] is None
            assert json.loads(roots["list"]) == [
                None,
                True,
                1.5,
                "<b>s</b>",
                [1, [2]],
                {"k": None},
            ]
            # The XML string form, escaped (issue 25): shown as text, never markup.
            assert roots["xml"] == '<p class="&lt;b&gt;">&lt;i&gt;hi&lt;/i&gt;</p>'
        # Nothing a client sent became markup or ran.
        assert page.evaluate("document.querySelectorAll('#detail img, #detail script').length") == 0
        assert page.evaluate("window.pwned") is None
        assert page.evaluate("({}).polluted") is None
    finally:
        browser.close()
    for viewer in viewers:
        viewer.close()
    assert errors == []
    assert "Traceback" not in server.log()


# --- check-config --------------------------------------------------------------------


def test_check_config_prints_masked_config_and_names_a_bad_key(tmp_path):
    secret_redis = "redis://:hunter2-redis-password@127.0.0.1:6379/0"
    good = write_config(tmp_path, admin={"token": ADMIN_TOKEN}, redis=secret_redis)
    run = subprocess.run(
        [sys.executable, "-m", "wsserver", "check-config", "--config", str(good)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    effective = yaml.safe_load(run.stdout)
    assert effective["admin"] == {"token": "********"}
    assert effective["auth"]["tenants"]["acme"]["keys"][0]["secret"] == "********"
    assert effective["redis"] == "redis://:********@127.0.0.1:6379/0"
    assert effective["max_message_size"] == 16 * 1024 * 1024  # defaults shown
    for secret in [ADMIN_TOKEN, "hunter2", "test-secret"]:
        assert secret not in run.stdout

    bad = write_config(tmp_path, "bad.yaml", admin={"token": "short"})
    run = subprocess.run(
        [sys.executable, "-m", "wsserver", "check-config", "--config", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 1
    assert "admin.token" in run.stderr and run.stdout == ""


def test_admin_delete_is_not_undone_by_a_client_joining_meanwhile(start_server):
    """A delete waits (up to 5 s) for the closed connections to leave; a client that
    opens the document meanwhile (another tab, a viewer) must not keep it alive: once
    the DELETE answers, the document is gone, live and stored."""
    server = start_server(admin={"token": ADMIN_TOKEN})
    name = doc_name("admin-race")
    writer = Client(server, name)
    writer.recv()  # step 1
    doc = Doc()
    doc["content"] = Text("to be deleted")
    writer.send(codec.sync_update(doc.get_update()))
    writer.recv()  # the echo: stored
    # A client that never reads: it does not answer the close frame, so the delete
    # waits for it (CLOSE_TIMEOUT).
    silent = websocket.create_connection(
        f"{server.url}/{name}", subprotocols=["access_token", make_token()], timeout=5
    )
    answer = {}
    deleting = threading.Thread(
        target=lambda: answer.update(
            r=http("DELETE", f"{server.http}/admin/api/documents/acme/editor/{name}", ADMIN_TOKEN)
        )
    )
    deleting.start()
    time.sleep(0.5)
    late = Client(server, name)  # joins while the delete waits for the silent client
    assert late.wait_close()[0] == 4404
    deleting.join(15)
    assert answer["r"][:2] == (200, {"deleted": True, "connections_closed": 2}), answer
    api = f"{server.http}/admin/api/documents/acme/editor/{name}"
    assert http("GET", api, token=ADMIN_TOKEN)[0] == 404, http("GET", api, token=ADMIN_TOKEN)
    for c in (writer, late):
        c.ws.close()
    silent.close()
    assert "Traceback" not in server.log()
