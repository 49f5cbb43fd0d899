"""A Rust panic in pycrdt (pyo3's PanicException, a BaseException) answered like any
internal error (errors.CrdtPanic): a JSON 500 on HTTP, a 1011 close with a reason on a
WebSocket, the room rebuilt from storage, the process serving on, one traceback logged.

The panics are real ones, from pycrdt, in a server patched at start-up (`PATCHED`):
the HTTP one by the input that first found the bug (an int past 64 bits, which the
content API now reads as a float: the patch takes that fix out), the WebSocket one from
inside the room, after an update was integrated and before it was stored.
"""

import json
import sys
import uuid

import pytest
import yaml
from conftest import ServerProcess, base_config, make_token
from test_bad_input import Client, Editor, text_of
from test_document_api import request

from wsserver.errors import CrdtPanic
from wsserver.protocol import codec
from wsserver.support.wait import wait_until

PATCHED = """
import sys

from gevent import monkey

monkey.patch_all()  # as `wsserver serve` does, before anything

from pycrdt import Doc, Map

from wsserver.documents import ydoc
from wsserver.documents.formats import fields
from wsserver.cli import main

fields._number = int  # JSON integers past 64 bits reach pycrdt again


def panic():
    doc = Doc()
    doc["m"] = values = Map()
    values["n"] = 10**30  # pycrdt panics: no i64


after_apply = ydoc.Unintegrated.after_apply


def after_apply_or_panic(self, doc, update):
    if b"PANIC" in update:  # an update typed with PANIC: integrated, not stored yet
        panic()
    return after_apply(self, doc, update)


ydoc.Unintegrated.after_apply = after_apply_or_panic
sys.exit(main(sys.argv[1:]))
"""

REASON = CrdtPanic.reason


@pytest.fixture
def server(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(base_config(tmp_path)))
    # A panic's Rust backtrace crashed the process (SIGSEGV): ask for one.
    env = {"RUST_BACKTRACE": "1"}
    server = ServerProcess(path, env=env, command=[sys.executable, "-c", PATCHED]).start()
    yield server
    server.proc.kill()
    server.proc.wait()


def tracebacks(server):
    """How many tracebacks the server logged, once the first has been read from its
    output (a thread drains it: the answer can come first)."""
    wait_until(lambda: "Traceback (most recent call last)" in server.log(), 5, interval=0.05)
    return server.log().count("Traceback (most recent call last)")


def seeded(server, doc):
    """A bystander client on `doc`, which holds "hello " (stored: it reached the
    bystander, which the server does once the update is durable)."""
    bystander = Client(server, doc)
    writer = Editor(client_id=11)
    update = writer.insert("hello ")
    Client(server, doc).send(codec.sync_update(update))
    bystander.wait_for(codec.sync_update(update))
    return bystander, writer


def still_serving(server, doc, bystander, writer, expected):
    """The process lives, the bystander hears a later update from a third client, and a
    fresh client syncs exactly `expected` (nothing of what the panic interrupted)."""
    assert server.proc.poll() is None
    third = Client(server, doc)
    update = writer.insert("world")
    third.send(codec.sync_update(update))
    bystander.wait_for(codec.sync_update(update))
    fresh = Client(server, doc)
    assert text_of(fresh.sync()) == expected
    for client in (third, fresh, bystander):
        client.close()


def test_a_panic_in_a_request_is_a_json_500_and_the_process_serves_on(server):
    doc = f"panic-{uuid.uuid4().hex[:8]}"
    bystander, writer = seeded(server, doc)
    body = json.dumps({"type": "doc", "content": [{"type": "heading", "attrs": {"level": 10**30}}]})
    status, headers, answer = request(
        server,
        "PUT",
        f"/v1/documents/{doc}/content?format=prosemirror",
        make_token(),
        body.encode(),
    )
    assert status == 500, answer
    assert headers["Content-Type"] == "application/json"
    assert json.loads(answer) == {"error": REASON, "code": 1011}
    still_serving(server, doc, bystander, writer, "hello world")
    assert tracebacks(server) == 1 and "PUT /v1/documents/" in server.log(), server.log()
    assert server.proc.poll() is None  # (the crash came about a second after the panic)


def test_a_panic_on_a_websocket_closes_it_1011_and_the_room_is_rebuilt(server):
    """The panic comes after the update was integrated into the room's document and
    before it was stored: the rebuild from storage takes it out again."""
    doc = f"panic-{uuid.uuid4().hex[:8]}"
    bystander, writer = seeded(server, doc)
    offender = Client(server, doc)
    offender.send(codec.sync_update(Editor(client_id=12).insert("PANIC")))
    assert offender.wait_close() == (1011, REASON)
    still_serving(server, doc, bystander, writer, "hello world")
    assert tracebacks(server) == 1, server.log()
    server.wait_log("rebuilding from storage")
    assert server.proc.poll() is None
