"""Restarts nobody notices (issue 27, wsserver/restarts.py): the clients of a stopping
process are closed with 1012 only once its successor accepts on the same port, they
sync again within a second, no connection attempt fails meanwhile, nothing is lost.
Real y-websocket providers (tests/node/ystorm.mjs: providers on a few documents, and a
prober opening a fresh connection every 10 ms throughout)."""

import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest
import websocket
import yaml
from conftest import CLI, ROOT, NodeProcess, ServerProcess, base_config, free_port, make_token

from wsserver.protocol import codec
from wsserver.restarts import BACKLOG, SETTLE, SETTLE_MAX

DOCS, CLIENTS = 3, 3


def _providers(url):
    spec = {
        "url": url,
        "token": make_token(),
        "docs": DOCS,
        "clients": CLIENTS,
        "docBytes": 3000,
        "probeEveryMs": 10,
        "stdin": False,
        "expectClosed": DOCS * CLIENTS,
    }
    node = NodeProcess("ystorm.mjs", spec)
    node.wait_phase("ready", timeout=30)
    return node


def _assert_nobody_noticed(report):
    assert report["closed"] == DOCS * CLIENTS
    assert report["closeCodes"] == {"1012": DOCS * CLIENTS}
    assert report["notResynced"] == 0
    assert report["resyncMs"]["max"] <= 1000, report
    assert report["probes"]["tried"] > 20
    assert report["probes"]["failed"] == 0, report["probes"]
    assert report["lost"] == 0


@pytest.mark.long  # two server starts and a restart under providers: about 8 s
def test_serve_replace_hands_the_port_over_without_refusing_anyone(start_server, tmp_path):
    old = start_server()
    node = _providers(old.url)
    try:
        new = ServerProcess(old.config_path, port=old.port, args=["--replace"]).start()
        try:
            report = node.result(timeout=40)
            assert old.proc.wait(20) == 0
            _assert_nobody_noticed(report)
            assert "handing the clients over" in old.log()
        finally:
            new.stop()
    finally:
        node.kill()


def test_a_handshake_under_way_at_the_handover_gets_its_sync_before_the_1012(start_server):
    """A client whose connection the old process accepted just before the handover, and
    whose sync step 1 comes after the fixed settle (a loaded machine, a slow client),
    still gets its step 2 before the 1012 (restarts.SETTLE_MAX): the old process waits
    for every handshake under way, not a fixed time."""
    old = start_server()
    ws = websocket.create_connection(
        f"{old.url}/settle", subprotocols=["access_token", make_token()], timeout=10
    )
    assert ws.recv()[:2] == b"\x00\x00"  # admitted: the server's step 1
    new = ServerProcess(old.config_path, port=old.port, args=["--replace"]).start()
    try:
        old.wait_log("handing the clients over")
        time.sleep(SETTLE + 0.3)  # the fixed settle is over
        assert SETTLE + 0.3 < SETTLE_MAX
        ws.send_binary(codec.sync_step1(b"\x00"))
        received = []
        while True:
            opcode, data = ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                break
            received.append(data[:2])
        assert b"\x00\x01" in received, received  # the step 2, then
        assert struct.unpack("!H", data[:2])[0] == 1012
        assert old.proc.wait(20) == 0
    finally:
        ws.close()
        new.stop()


def _connected_while_stopped(server, count):
    """How many of `count` TCP connections opened at once complete their handshake while
    the server process is stopped (SIGSTOP): the kernel queues them for it, up to the
    listen backlog, and drops the SYNs beyond (their clients retry a second later)."""
    os.kill(server.proc.pid, signal.SIGSTOP)
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", server.port))
            sockets.append(s)
        poll = select.poll()
        for s in sockets:
            poll.register(s, select.POLLOUT)
        deadline, ready = time.monotonic() + 2, set()
        while len(ready) < count and time.monotonic() < deadline:
            ready.update(fd for fd, _ in poll.poll(100))
        return sum(
            1
            for s in sockets
            if s.fileno() in ready and not s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        )
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
        for s in sockets:
            s.close()


@pytest.mark.skipif(
    int(open("/proc/sys/net/core/somaxconn").read()) < 600, reason="net.core.somaxconn < 600"
)
def test_a_reconnect_burst_waits_in_the_listen_queue_of_serve_and_of_its_successor(
    start_server,
):
    """Every client of a restarted process comes back within tens of milliseconds: the
    ones the busy new process has not accepted yet wait in the listen queue
    (restarts.BACKLOG), of a fresh `serve` and of a `--replace` successor's taken-over
    socket alike, instead of losing a second to a dropped SYN."""
    assert BACKLOG >= 600
    old = start_server()
    assert _connected_while_stopped(old, 600) == 600
    new = ServerProcess(old.config_path, port=old.port, args=["--replace"]).start()
    try:
        assert old.proc.wait(20) == 0
        assert _connected_while_stopped(new, 600) == 600
    finally:
        new.stop()


# `wsserver serve`, its app factory made to report first whether a TCP client can connect
# to the port the server is given (`--port`) at that moment.
SERVE_PROBING_THE_PORT = """
import socket, sys
from gevent import monkey
monkey.patch_all()  # as `wsserver serve` does first (again there: a no-op)
import wsserver.app

build = wsserver.app.create_app

def create_app(*args, **kwargs):
    port = int(sys.argv[sys.argv.index("--port") + 1])
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        print("before the app: connected", flush=True)
    except OSError as e:
        print(f"before the app: {e.strerror}", flush=True)
    return build(*args, **kwargs)

wsserver.app.create_app = create_app
from wsserver.cli import main
sys.exit(main())
"""


def test_serve_takes_its_port_before_it_builds_its_app(tmp_path):
    """After a plain stop, the clients coming back to the next process wait in its queue
    while it builds its app (imports, storage: about half a second) instead of being
    refused and backing off; a port in use is refused before anything is built."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(base_config(tmp_path)))
    command = [sys.executable, "-c", SERVE_PROBING_THE_PORT]
    server = ServerProcess(config, port=free_port(), command=command).start()
    try:
        assert "before the app: connected" in server.log()
        second = subprocess.run(
            [*CLI, "serve", "--config", str(config), "--port", str(server.port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 2
        assert f"cannot listen on 127.0.0.1:{server.port}: Address already in use" in second.stderr
    finally:
        server.stop()


SERVE_PROBING_AT_PYJWT = """
import socket, sys
RawSocket = socket.socket  # kept from before `serve` patches the module
PORT = int(sys.argv[sys.argv.index("--port") + 1])

class ProbeAtPyJWT:
    def find_spec(self, name, path=None, target=None):
        if name == "jwt":  # the first import of PyJWT: the config's checks begin
            sys.meta_path.remove(self)
            probe = RawSocket()
            probe.settimeout(2)
            try:
                probe.connect(("127.0.0.1", PORT))
                print("before PyJWT: connected", flush=True)
            except OSError as e:
                print(f"before PyJWT: {e.strerror}", flush=True)
            finally:
                probe.close()

sys.meta_path.insert(0, ProbeAtPyJWT())
from wsserver.cli import main
sys.exit(main())
"""


def test_serve_takes_its_port_before_the_config_imports_its_checks(tmp_path):
    """The whole config's checks import PyJWT, pycrdt, werkzeug... (~0.1 s): the address
    is read first (settings/listen.py), so a restarted server's clients are queued, not
    refused, meanwhile. A bad config is still refused with every problem at once."""
    settings = base_config(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(settings))
    command = [sys.executable, "-c", SERVE_PROBING_AT_PYJWT]
    server = ServerProcess(config, port=free_port(), command=command).start()
    try:
        assert "before PyJWT: connected" in server.log()
    finally:
        server.stop()
    config.write_text(yaml.safe_dump(dict(settings, port=70000, storage="nowhere://")))
    bad = subprocess.run(
        [*CLI, "serve", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "port: must be" in bad.stderr and "storage: must be memory://" in bad.stderr, bad.stderr


@pytest.mark.parametrize("host", ["a..b", "a" * 64 + ".example"])
def test_a_host_no_resolver_can_encode_is_a_clear_error_not_a_traceback(tmp_path, host):
    """A host name the IDNA codec refuses (an empty label, one over 63 characters): the
    resolver raises UnicodeError, not OSError. Taken early (settings/listen.py), it hid
    the config's other problems behind a traceback; with a good config it was one too."""
    config = tmp_path / "config.yaml"
    for settings, expected in (
        (dict(base_config(tmp_path), host=host, storage="nowhere://"), "storage: must be"),
        (dict(base_config(tmp_path), host=host), f"cannot listen on {host}:"),
    ):
        config.write_text(yaml.safe_dump(settings))
        run = subprocess.run(
            [*CLI, "serve", "--config", str(config), "--port", "0"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
        assert expected in run.stderr, run.stderr


@pytest.mark.long  # gunicorn boots two sets of two workers: about 12 s
def test_gunicorn_hup_replaces_every_worker_without_refusing_anyone(tmp_path, redis_url):
    from test_ops import Gunicorn, write_config

    server = Gunicorn(write_config(tmp_path, redis=redis_url), workers=2)
    try:
        node = _providers(server.url)
        try:
            before = server.log().count("Booting worker")
            server.proc.send_signal(signal.SIGHUP)
            report = node.result(timeout=40)
            _assert_nobody_noticed(report)
            assert server.log().count("Booting worker") == before + 2
        finally:
            node.kill()
    finally:
        server.stop()
