"""A restore seen live by real editors (issue 24): a Tiptap 3 page in Chromium (the
bundle of tests/test_content_browser.py) and a y-websocket client in Node
(tests/node/history_editor.mjs) on one document; a named version of the page's rich
text is restored while both edit on, and both show it without reloading, then keep
editing and converge."""

import base64
import json
import queue
import subprocess
import threading
import time

import pytest
import test_browser_closes
import test_content_browser
from conftest import NODE_DIR, NodeProcess, make_token
from test_content_browser import open_editor, page_json, prosemirror, wait_equal
from test_history import call

from wsserver.documents.formats.fields import read_field

browser = test_browser_closes.browser  # the fixtures: one Chromium and one bundle per module
bundle = test_content_browser.bundle

SEEN_WITHIN = 1.0  # the issue: editors show the restored content within a second
FIELD = "body"


class NodeEditor(NodeProcess):
    """tests/node/history_editor.mjs: a NodeProcess told what to do on its stdin."""

    def __init__(self, spec):
        self.script = "history_editor.mjs"
        self.proc = subprocess.Popen(
            ["node", str(NODE_DIR / self.script), json.dumps(spec)],
            cwd=NODE_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines = queue.Queue()
        self.stdout, self.stderr = [], []
        for stream, sink, queued in (
            (self.proc.stdout, self.stdout, True),
            (self.proc.stderr, self.stderr, False),
        ):
            threading.Thread(target=self._read, args=(stream, sink, queued), daemon=True).start()

    def ask(self, phase, **command):
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self.wait_phase(phase, 10)

    def state(self):
        """(its field as ProseMirror JSON, as the server renders it; sockets opened)."""
        state = self.ask("state", state=True)
        return read_field(base64.b64decode(state["update"]), FIELD, "prosemirror"), state["sockets"]

    def prosemirror(self):
        return self.state()[0]


def type_rich_text(page):
    """A heading, a paragraph with bold, a bullet list, typed as a user does (input
    rules and shortcuts)."""
    page.click("#editor")
    keys = page.keyboard
    keys.type("# Minutes")
    keys.press("Enter")
    keys.type("We agreed on ")
    keys.press("Control+b")
    keys.type("three")
    keys.press("Control+b")
    keys.type(" points:")
    keys.press("Enter")
    keys.type("- ship it")
    keys.press("Enter")
    keys.type("test it")
    keys.press("Enter")
    keys.press("Enter")
    keys.type("Signed.")


@pytest.mark.long  # (Chromium and the bundle: 3-4 s of set-up)
def test_a_restore_is_live_in_a_tiptap_page_and_a_node_client(start_server, browser, bundle):
    server, room, page = open_editor(start_server, browser, bundle, "startTiptap", FIELD)
    node = NodeEditor(
        {"url": server.url, "room": room, "token": make_token(sub="node"), "field": FIELD}
    )
    versions = f"/v1/documents/{room}/versions"
    try:
        node.wait_phase("synced", 10)
        type_rich_text(page)
        typed = page_json(page)
        # (Tiptap's TrailingNode may add an empty paragraph at the end)
        assert [n["type"] for n in typed["content"]][:4] == [
            "heading",
            "paragraph",
            "bulletList",
            "paragraph",
        ], typed
        assert {"type": "bold"} in typed["content"][1]["content"][1]["marks"], typed
        # Everyone holds what the page typed: the named version is of that.
        wait_equal(lambda: prosemirror(server, room, FIELD), lambda: typed)
        wait_equal(node.prosemirror, lambda: typed)
        status, version = call(server, "POST", versions, body={"label": "minutes"})
        assert status == 201 and version["label"] == "minutes", version
        status, binary = call(server, "GET", f"{versions}/{version['id']}")
        assert status == 200 and read_field(binary, FIELD, "prosemirror") == typed

        # Both edit on: the page rewrites the heading, drops the bold, adds to the list;
        # the Node client adds a paragraph.
        page.keyboard.press("Control+Home")
        page.keyboard.type("Draft ")
        page.evaluate("editor.chain().focus().selectAll().unsetBold().run()")
        page.evaluate("editor.commands.focus('end')")
        page.keyboard.press("Enter")
        page.keyboard.type("- and more")
        node.ask("appended", append="From Node.")
        edited = wait_equal(lambda: page_json(page), node.prosemirror)
        wait_equal(lambda: prosemirror(server, room, FIELD), lambda: edited)
        assert edited != typed and "From Node." in json.dumps(edited)

        # The restore: both show the version, live, on the connections they had.
        status, answer = call(server, "POST", f"{versions}/{version['id']}/restore")
        answered = time.monotonic()
        assert status == 200 and answer["changed"] is True, answer
        wait_equal(lambda: page_json(page), lambda: typed, timeout=SEEN_WITHIN)
        wait_equal(
            node.prosemirror, lambda: typed, timeout=SEEN_WITHIN - (time.monotonic() - answered)
        )
        assert time.monotonic() - answered < SEEN_WITHIN
        assert page.evaluate("provider.sockets") == 1 and node.state()[1] == 1  # no reload

        # They keep editing on top of it and converge.
        page.evaluate("editor.commands.focus('end')")
        page.keyboard.type(" Then restored.")
        node.ask("appended", append="Node again.")
        final = wait_equal(lambda: page_json(page), node.prosemirror)
        wait_equal(lambda: prosemirror(server, room, FIELD), lambda: final)
        assert final["content"][:3] == typed["content"][:3]
        texts = json.dumps(final)
        assert "Then restored." in texts and "Node again." in texts
        assert "Draft" not in texts and "and more" not in texts and "From Node." not in texts
    finally:
        node.kill()
        page.close()
