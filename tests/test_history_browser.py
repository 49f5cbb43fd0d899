"""A restore seen live by real editors (issue 24): a Tiptap 3 page in Chromium (the
bundle of tests/test_content_browser.py) and a y-websocket client in Node
(tests/node/history_editor.mjs) on one document; a named version of the page's rich
text is restored while both edit on, and both show it without reloading, then keep
editing and converge."""

import base64
import json
import time

import pytest
import test_content_browser
from conftest import NodeProcess, make_token
from test_content_browser import open_editor, page_json, prosemirror, wait_equal
from test_history import call

from wsserver.documents.formats.fields import read_field

bundle = test_content_browser.bundle  # the fixture: one bundle per module

SEEN_WITHIN = 1.0  # the issue: editors show the restored content within a second
FIELD = "body"


def ask(node, phase, **command):
    """Tell tests/node/history_editor.mjs `command`; its answer."""
    node.send(command)
    return node.wait_phase(phase, 10)


def node_json(node):
    """The Node client's field as ProseMirror JSON, as the server renders it."""
    state = ask(node, "state", state=True)
    return read_field(base64.b64decode(state["update"]), FIELD, "prosemirror")


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


@pytest.mark.long  # (Chromium, the bundle, the typing: 4-5 s here, more in the suite)
def test_a_restore_is_live_in_a_tiptap_page_and_a_node_client(start_server, browser, bundle):
    server, room, page = open_editor(start_server, browser, bundle, "startTiptap", FIELD)
    spec = {"url": server.url, "room": room, "token": make_token(sub="node"), "field": FIELD}
    node = NodeProcess("history_editor.mjs", spec, stdin=True)
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
        wait_equal(lambda: node_json(node), lambda: typed)
        status, version = call(server, "POST", versions, body={"label": "minutes"})
        assert status == 201 and version["label"] == "minutes", version
        status, binary = call(server, "GET", f"{versions}/{version['id']}")
        assert status == 200 and read_field(binary, FIELD, "prosemirror") == typed

        # Both edit on: the page rewrites the heading, drops the bold, starts another list;
        # the Node client adds a paragraph.
        page.keyboard.press("Control+Home")
        page.keyboard.type("Draft ")
        page.evaluate("editor.chain().focus().selectAll().unsetBold().run()")
        page.evaluate("editor.commands.focus('end')")
        page.keyboard.press("Enter")
        page.keyboard.type("- and more")
        ask(node, "appended", append="From Node.")
        edited = wait_equal(lambda: page_json(page), lambda: node_json(node))
        wait_equal(lambda: prosemirror(server, room, FIELD), lambda: edited)
        assert edited != typed and "From Node." in json.dumps(edited)

        # The restore: both show the version, live, on the connections they had.
        status, answer = call(server, "POST", f"{versions}/{version['id']}/restore")
        answered = time.monotonic()
        assert status == 200 and answer["changed"] is True, answer
        wait_equal(lambda: page_json(page), lambda: typed, timeout=SEEN_WITHIN)
        wait_equal(
            lambda: node_json(node),
            lambda: typed,
            timeout=SEEN_WITHIN - (time.monotonic() - answered),
        )
        assert time.monotonic() - answered < SEEN_WITHIN
        assert page.evaluate("provider.sockets") == 1  # the same connections: no reload
        assert ask(node, "state", state=True)["sockets"] == 1

        # They keep editing on top of it and converge.
        page.evaluate("editor.commands.focus('end')")
        page.keyboard.type(" Then restored.")
        ask(node, "appended", append="Node again.")
        final = wait_equal(lambda: page_json(page), lambda: node_json(node))
        wait_equal(lambda: prosemirror(server, room, FIELD), lambda: final)
        assert final["content"][:3] == typed["content"][:3]
        texts = json.dumps(final)
        assert "Then restored." in texts and "Node again." in texts
        assert "Draft" not in texts and "and more" not in texts and "From Node." not in texts
    finally:
        node.kill()
        page.close()
