"""Restarts nobody notices (issue 27, wsserver/restarts.py): the clients of a stopping
process are closed with 1012 only once its successor accepts on the same port, they
sync again within a second, no connection attempt fails meanwhile, nothing is lost.
Real y-websocket providers (tests/node/ystorm.mjs: providers on a few documents, and a
prober opening a fresh connection every 10 ms throughout)."""

import signal
import struct
import time

import pytest
import websocket
from conftest import NodeProcess, ServerProcess, make_token

from wsserver.protocol import codec
from wsserver.restarts import SETTLE, SETTLE_MAX

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
