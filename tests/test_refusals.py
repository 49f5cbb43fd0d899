"""Refused clients that hammer (issue 8 item 9).

A refused handshake (4001/4002/4003/4007) is answered `refusal_delay` seconds late, on
a socket that costs nothing while it waits (no connection greenlet: /healthz shows 0
connections), at most `max_delayed_refusals` at a time; refusals are logged once per
IP and code, then as one summary line.
"""

import json
import threading
import time
import urllib.request
import uuid

import pytest
import websocket
from conftest import base_config, make_token, run_node

from wsserver.transport import frames


def refused_close(server, token, doc="doc", timeout=10):
    """Connect with `token`; return the server's (code, reason) close."""
    ws = websocket.create_connection(
        f"{server.url}/{doc}",
        timeout=timeout,
        subprotocols=["access_token", token] if token else None,
    )
    try:
        while True:
            opcode, frame = ws.recv_data_frame(True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return frames.parse_close(frame.data)
    finally:
        ws.shutdown()


def healthz(server):
    with urllib.request.urlopen(f"{server.http}/healthz", timeout=5) as response:
        return json.load(response)


@pytest.mark.long
def test_a_client_reconnecting_at_once_is_slowed_to_one_attempt_per_delay(start_server, tmp_path):
    """What y-websocket 1.x/2.x do after every close: reconnect at once, for ever. With
    the shipped `refusal_delay` (2 s): the other tests run with 0."""
    config = base_config(tmp_path)
    del config["refusal_delay"]
    server = start_server(config=config)
    bad = make_token(secret="wrong-secret-0123456789abcdef012345")
    attempts = []
    started = time.monotonic()
    while time.monotonic() - started < 4.5:
        attempts.append(refused_close(server, bad))
    assert set(attempts) == {(4002, "bad signature")}
    # One per 2 s (without the delay: hundreds).
    assert len(attempts) <= 3, len(attempts)


def test_waiting_refusals_hold_no_connection_and_are_bounded(start_server):
    server = start_server(refusal_delay=3.0, max_delayed_refusals=20)
    results = []

    def attempt():
        began = time.monotonic()
        code = refused_close(server, None)  # 4001
        results.append((code, time.monotonic() - began))

    threads = [threading.Thread(target=attempt) for _ in range(30)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    during = healthz(server)
    for t in threads:
        t.join(15)
    assert all(code == (4001, "missing token") for code, _ in results) and len(results) == 30
    late = sorted(t for _, t in results)
    # 20 waited (the bound), 10 were answered at once
    assert sum(t >= 2.5 for t in late) == 20 and sum(t < 1.5 for t in late) == 10, late
    # while 20 refused sockets waited, no connection (greenlet, reader) was held for them
    assert during["connections"] == 0, during
    # ... and a good client is served meanwhile and after
    ws = websocket.create_connection(
        f"{server.url}/ok-{uuid.uuid4().hex[:6]}",
        timeout=5,
        subprotocols=["access_token", make_token()],
    )
    assert ws.recv_data_frame(True)[0] == websocket.ABNF.OPCODE_BINARY  # sync step 1
    ws.close()
    assert "Traceback" not in server.log()


def test_refusals_are_logged_once_per_ip_and_code_then_summarized(start_server):
    server = start_server(refusal_delay=0)
    bad = make_token(tenant="initech")
    for _ in range(25):
        assert refused_close(server, bad)[0] == 4002
    for _ in range(5):
        assert refused_close(server, None)[0] == 4001
    for _ in range(3):
        assert refused_close(server, make_token(), doc=".hidden")[0] == 4007
    time.sleep(0.3)
    log = server.log()
    assert log.count("refused 4002") == 1 and log.count("refused 4001") == 1, log
    assert "refused 4002 bad signature (unknown tenant): ip=127.0.0.1" in log
    assert "closing 127.0.0.1" not in log
    server.stop()  # the summary of the window is logged at shutdown at the latest
    log = server.log()
    assert "refused 4002 x24 more: ip=127.0.0.1 in the last 60 s" in log, log
    assert "refused 4001 x4 more: ip=127.0.0.1" in log
    assert "refused 4007 x2 more: ip=127.0.0.1" in log
    assert "Traceback" not in log


def test_a_refused_provider_sees_the_code_after_the_delay(start_server):
    """The client still gets a clean close frame (not 1006) although its socket was
    handed over: the real provider reports the code and reason."""
    server = start_server(refusal_delay=1.0)
    results = run_node(
        "cases.mjs",
        json.dumps(
            {
                "url": server.url,
                "cases": [
                    {"id": "bad", "room": "doc", "token": make_token(ttl=-60), "expect": "close"},
                    {
                        "id": "raw",
                        "room": "doc",
                        "raw": True,
                        "protocols": ["access_token", "x.y.z"],
                        "expect": "close",
                    },
                ],
            }
        ),
    )["results"]
    assert results["bad"]["close"] == {"code": 4002, "reason": "token expired"}, results
    assert results["raw"]["close"] == {"code": 4002, "reason": "malformed token"}, results
    assert results["raw"]["opened"] and results["raw"]["error"] is None, results
