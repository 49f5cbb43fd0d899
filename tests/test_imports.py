"""What `wsserver serve` imports: only what its configuration uses (issue 27: a restart
is an outage until the process listens, and most of a start is imports).

A plain SQLite config (the shipped default) loads neither redis-py (with its asyncio
half, ~60 ms) nor markdown-it-py nor the `limits` library nor gunicorn's workers: they
are imported where a configured Redis, a Markdown read or write, a handshake rate or
gunicorn needs them.
"""

import json
import re
import sys
import time
import uuid

import websocket
from conftest import ROOT, SECRET, ServerProcess, make_token
from pycrdt import Doc, Text
from test_document_api import request

from wsserver.protocol import codec

# Runs `wsserver serve` (its arguments follow) and prints a line when one of the
# watched packages is first imported, at start or later, while it serves, and one for
# every module imported (`import NAME`).
WATCHED = ("redis", "markdown_it", "limits", "gunicorn.workers.ggevent")
SERVE_WATCHING_IMPORTS = f"""
import sys

class Watch:
    def find_spec(self, name, path=None, target=None):
        if name in {WATCHED!r}:
            print("imported " + name, flush=True)
        print("import " + name, flush=True)
        return None

sys.meta_path.insert(0, Watch())
from wsserver.cli import main
sys.exit(main())
"""


def imported(lines, pattern=r"imported (\S+)$"):
    return [m[1] for line in lines if (m := re.match(pattern, line.strip()))]


def test_a_plain_sqlite_serve_imports_only_what_it_uses(tmp_path):
    """The shipped default config (its storage moved under tmp_path), served: nothing
    watched is imported at start, nor by a WebSocket client's sync and update, nor by a
    JSON read; a Markdown write then imports markdown-it (the watch works). The first
    client's handshake, sync and update import nothing at all: an import there stalls
    every connection of the process (pycrdt's first Doc imported asyncio, ydoc.warm_up)."""
    shipped = (ROOT / "config" / "dev.yaml").read_text()
    config = tmp_path / "dev.yaml"
    config.write_text(
        shipped.replace("sqlite:///data/wsserver.sqlite3", f"sqlite:///{tmp_path}/wsserver.db")
    )
    assert config.read_text() != shipped
    command = [sys.executable, "-c", SERVE_WATCHING_IMPORTS]
    server = ServerProcess(config, env={"DEV_SECRET": SECRET}, command=command).start()
    try:
        at_start = list(server.output)
        token = make_token(tenant="dev", app="editor", kid="dev")
        name = f"imports-{uuid.uuid4().hex[:8]}"
        ws = websocket.create_connection(
            f"{server.url}/{name}", subprotocols=["access_token", token], timeout=5
        )
        ws.send_binary(codec.sync_step1(b"\x00"))
        ws.recv()  # the server's sync step 1 or 2: the handshake is through
        doc = Doc()
        doc["text"] = text = Text()
        text += "hello"
        ws.send_binary(codec.sync_update(doc.get_update()))
        deadline = time.monotonic() + 5
        while True:
            status, _, body = request(server, "GET", f"/v1/documents/{name}?format=json", token)
            if status == 200 and json.loads(body).get("text") == "hello":
                break
            assert time.monotonic() < deadline, (status, body)
            time.sleep(0.02)
        ws.close()
        assert imported(server.output[len(at_start) :], r"import (\S+)$") == []
        markdown = f"/v1/documents/{name}/content?field=prose&format=markdown"
        status, _, body = request(server, "PUT", markdown, token, b"# Hi")
        assert status == 200, body
        deadline = time.monotonic() + 5
        while "markdown_it" not in imported(server.output):
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.02)
    finally:
        server.proc.kill()
        server.proc.wait()
    assert imported(at_start) == [], server.log()
    assert imported(server.output) == ["markdown_it"], server.log()
