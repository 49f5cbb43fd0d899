"""Slowloris (issue 8 item 7): sockets that send half a request and stall are dropped
once `header_timeout` passes, under `wsserver serve` and under gunicorn (the Procfile's
command), while a normal client is served."""

import os
import re
import shlex
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import websocket
import yaml
from conftest import ROOT, base_config, free_port, make_token

STALLED = 500
HEADER_TIMEOUT = 1.5
HALF_REQUEST = (
    b"GET /doc HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
)  # no blank line


def stall(port, count):
    sockets = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(HALF_REQUEST)
        sockets.append(s)
    return sockets


def wait_dropped(sockets, deadline):
    """How many of `sockets` the server closed (EOF or reset) before `deadline`; what
    each received first."""
    answers = []
    for s in sockets:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        received = b""
        try:
            while True:
                data = s.recv(4096)
                if not data:
                    break
                received += data
        except (ConnectionResetError, BrokenPipeError):
            pass  # dropped with a reset: dropped all the same
        except TimeoutError:
            answers.append(None)  # still held
            continue
        answers.append(received)
    return answers


def served(url):
    """A normal client: upgraded, and the server's sync step 1 arrives."""
    ws = websocket.create_connection(
        f"{url}/ok-{uuid.uuid4().hex[:8]}", timeout=5, subprotocols=["access_token", make_token()]
    )
    try:
        opcode, frame = ws.recv_data_frame(True)
        return opcode == websocket.ABNF.OPCODE_BINARY and frame.data[:2] == b"\x00\x00"
    finally:
        ws.close()


def check_slowloris(port, log):
    started = time.monotonic()
    sockets = stall(port, STALLED)
    try:
        assert served(f"ws://127.0.0.1:{port}")  # while 500 sockets stall
        answers = wait_dropped(sockets, started + HEADER_TIMEOUT + 8)
        held = answers.count(None)
        assert held == 0, f"{held} of {STALLED} stalled sockets still held"
        assert all(a.startswith(b"HTTP/1.1 408") for a in answers if a), {a[:20] for a in answers}
        assert served(f"ws://127.0.0.1:{port}")
    finally:
        for s in sockets:
            s.close()
    text = log()
    assert "Traceback" not in text, text
    assert "refused 408 request headers not complete within 1.5 s: ip=127.0.0.1" in text, text


def test_half_sent_requests_are_dropped_under_serve(start_server):
    server = start_server(header_timeout=HEADER_TIMEOUT)
    check_slowloris(server.port, server.log)


def test_a_keep_alive_connection_that_idles_is_dropped_too(start_server):
    server = start_server(header_timeout=HEADER_TIMEOUT)
    s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(HEADER_TIMEOUT + 0.5)
    received = b""
    while chunk := s.recv(65536):  # ends: the server closed the idle connection
        received += chunk
    assert received.startswith(b"HTTP/1.1 200") and b"HTTP/1.1 408" in received, received
    s.close()


@pytest.fixture
def gunicorn_server(tmp_path):
    """The Procfile's command (bound to loopback), with a test config."""
    procfile = (ROOT / "Procfile").read_text()
    command = shlex.split(re.match(r"web:\s*(.*)", procfile).group(1))
    assert command[0] == "gunicorn"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(base_config(tmp_path, header_timeout=HEADER_TIMEOUT)))
    port = free_port()
    env = dict(os.environ, WSSERVER_CONFIG=str(config), PORT=str(port), PYTHONUNBUFFERED="1")
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    proc = subprocess.Popen(
        [gunicorn, *command[1:], "--bind", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = []
    threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True).start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert proc.poll() is None, "".join(output)
            time.sleep(0.1)
    yield port, lambda: "".join(output)
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_half_sent_requests_are_dropped_under_gunicorn(gunicorn_server):
    port, log = gunicorn_server
    time.sleep(0.5)  # the worker is up once it accepts: give it its logging set-up
    check_slowloris(port, log)


STALLED_BODIES = [
    # No token needed: the answer comes before the body, then the rest is discarded.
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
    # The document API reads the body before answering.
    b"POST /v1/documents/stalled/update HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
    b"Content-Length: 1000\r\n\r\nab",
]


def test_a_request_body_that_stalls_is_dropped_too(start_server):
    """The headers in time, then a body that never comes: the connection must not be
    held for ever (unauthenticated, it would bypass the header deadline)."""
    server = start_server(header_timeout=HEADER_TIMEOUT)
    sockets = []
    for request in STALLED_BODIES:
        if b"%s" in request:
            request = request % make_token().encode()
        s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        s.sendall(request)
        sockets.append(s)
    try:
        answers = wait_dropped(sockets, time.monotonic() + 2 * HEADER_TIMEOUT + 3)
        assert answers.count(None) == 0, answers
        # The document API never got its body: 408, nothing stored.
        assert answers[2].startswith(b"HTTP/1.1 408"), answers[2]
        assert served(server.url)
    finally:
        for s in sockets:
            s.close()
    assert "Traceback" not in server.log(), server.log()
