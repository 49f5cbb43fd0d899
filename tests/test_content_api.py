"""Content without Yjs over real HTTP (issue 25): GET ?format=prosemirror|text|markdown,
PUT/POST .../content, PATCH .../map/FIELD against one real `wsserver serve`, with a real
y-websocket provider where a write must reach a live client.
"""

import json
import uuid

import pytest
import yaml
from conftest import ROOT, NodeProcess, ServerProcess, base_config, make_token
from pycrdt import Doc, Map, Text
from test_content_formats import DOC, TYPED
from test_document_api import assert_error, request
from test_webhooks import HOOK_SECRET, Receiver

from wsserver.errors import ConfigError
from wsserver.webhooks import content
from wsserver.webhooks.settings import parse_hooks


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    directory = tmp_path_factory.mktemp("content")
    config = base_config(
        directory, max_message_size=8192, rate_limit={"handshakes_per_ip": "1000/minute"}
    )
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    server = ServerProcess(path).start()
    yield server
    server.proc.kill()
    server.proc.wait()


def name():
    return f"content-{uuid.uuid4().hex[:10]}"


def get(api, doc, form, field=None, token=None):
    query = f"?format={form}" + (f"&field={field}" if field else "")
    status, headers, body = request(
        api, "GET", f"/v1/documents/{doc}{query}", token or make_token()
    )
    assert status == 200, body
    if form in ("json", "prosemirror"):
        return json.loads(body)
    return body.decode()


def write(api, method, doc, body, token=None, path="content", **query):
    q = "&".join(f"{k}={v}" for k, v in query.items())
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body.encode()
    return request(api, method, f"/v1/documents/{doc}/{path}?{q}", token or make_token(), data)


def ok(answer, stored=True):
    status, _, body = answer
    assert (status, json.loads(body)) == (200, {"stored": stored}), body


def test_prosemirror_put_then_get_gives_the_same_json_and_every_format(api):
    doc = name()
    ok(write(api, "PUT", doc, DOC, format="prosemirror"))
    assert get(api, doc, "prosemirror") == DOC
    ok(write(api, "PUT", doc, DOC, format="prosemirror"), stored=False)  # no change
    assert get(api, doc, "text") == f"Title\n{TYPED} bold link 😀\nafter\none\na < b\n\n"
    markdown = get(api, doc, "markdown")
    assert markdown.startswith("## Title\n\n") and "\\<script>" in markdown
    status, headers, _ = request(api, "GET", f"/v1/documents/{doc}?format=markdown", make_token())
    assert headers["Content-Type"] == "text/markdown; charset=utf-8"
    # ?format=json: the escaped XML string form.
    form = get(api, doc, "json")["default"]
    assert (
        "&lt;/paragraph&gt;&lt;script&gt;" in form
        and 'href="https://e.com/?a=1&amp;b=&quot;2&quot;"' in form
    )


def test_markdown_put_get_is_stable_after_one_round_and_post_appends(api):
    doc = name()
    source = "# Notes\n\n* one\n* two **bold**\n\nA [link](https://x.org) and `code`.\n"
    ok(write(api, "PUT", doc, source, format="markdown", field="notes"))
    first = get(api, doc, "markdown", "notes")
    ok(write(api, "PUT", doc, first, format="markdown", field="notes"), stored=False)
    assert get(api, doc, "markdown", "notes") == first
    ok(
        write(
            api, "POST", doc, "Appended *here*.", format="markdown", field="notes", position="end"
        )
    )
    assert get(api, doc, "markdown", "notes") == first + "\nAppended *here*.\n"
    ok(write(api, "POST", doc, "first line", format="text", field="notes", position="start"))
    assert get(api, doc, "text", "notes").startswith("first line\nNotes\none\n")


def test_text_fields_and_map_patches(api):
    doc = name()
    ok(write(api, "PUT", doc, "hello world", format="text", field="code"))
    ok(write(api, "POST", doc, "!", format="text", field="code"))
    assert get(api, doc, "text", "code") == "hello world!"
    # Markdown into a text field (a Markdown editor's source) is written as it is.
    ok(write(api, "PUT", doc, "draft", format="text", field="md"))
    ok(write(api, "PUT", doc, "# *src*\n", format="markdown", field="md"))
    ok(write(api, "POST", doc, "more\n", format="markdown", field="md"))
    assert get(api, doc, "markdown", "md") == get(api, doc, "text", "md") == "# *src*\nmore\n"
    ok(write(api, "PATCH", doc, {"title": "T", "n": 3, "tags": ["a"]}, path="map/meta"))
    ok(write(api, "PATCH", doc, {"n": None, "ok": True}, path="map/meta"))
    assert get(api, doc, "json") == {
        "code": "hello world!",
        "md": "# *src*\nmore\n",
        "meta": {"title": "T", "tags": ["a"], "ok": True},
    }


@pytest.mark.parametrize(
    "method, path, body, query, error",
    [
        (
            "PUT",
            "content",
            {"type": "paragraph"},
            {"format": "prosemirror"},
            "not a ProseMirror document",
        ),
        (
            "PUT",
            "content",
            {"type": "doc", "content": [{"type": "p", "content": [{"type": "text"}]}]},
            {"format": "prosemirror"},
            "content[0].content[0]: a text node needs a non-empty text",
        ),
        ("PUT", "content", "not json", {"format": "prosemirror"}, "not JSON"),
        ("PATCH", "map/meta", {"k": "\ud800"}, {}, "lone surrogate"),
        ("PATCH", "map/meta", '{"k": 1e400}', {}, "too large"),
        (
            "PUT",
            "content",
            {
                "type": "doc",
                "content": [{"type": "p", "content": [{"type": "text", "text": "\udc00"}]}],
            },
            {"format": "prosemirror"},
            "lone surrogate",
        ),
        ("PUT", "content", "x", {"format": "html"}, "format must be one of"),
        (
            "POST",
            "content",
            "x",
            {"format": "text", "position": "middle"},
            "position must be one of",
        ),
        (
            "PUT",
            "content",
            DOC,
            {"format": "prosemirror", "field": "code"},
            "field 'code' is a text",
        ),
        ("PUT", "content", "x", {"format": "markdown", "field": "meta"}, "field 'meta' is a map"),
        ("POST", "content", "x", {"format": "text", "field": "meta"}, "field 'meta' is a map"),
        ("PATCH", "map/code", {"a": 1}, {}, "field 'code' is a text"),
        ("PATCH", "map/meta", [1], {}, "must be a JSON object"),
    ],
)
def test_invalid_writes_are_400_and_change_nothing(api, method, path, body, query, error):
    doc = name()
    seed = Doc()
    seed["code"] = Text("kept")
    seed["meta"] = Map({"k": "v"})
    status, _, _ = request(
        api, "POST", f"/v1/documents/{doc}/update", make_token(), seed.get_update()
    )
    assert status == 200
    before = request(api, "GET", f"/v1/documents/{doc}", make_token())[2]
    data = assert_error(write(api, method, doc, body, path=path, **query), 400, 400)
    assert error in data["error"], data
    assert request(api, "GET", f"/v1/documents/{doc}", make_token())[2] == before


def test_integers_past_64_bits_are_written_as_javascript_reads_them(api):
    """pycrdt panics on an int past 64 bits, and the panic took the process down."""
    doc = name()
    heading = {"type": "heading", "attrs": {"level": 10**30}}
    ok(write(api, "PUT", doc, {"type": "doc", "content": [heading]}, format="prosemirror"))
    ok(write(api, "PATCH", doc, {"big": -(10**20), "safe": 2**53}, path="map/meta"))
    assert get(api, doc, "prosemirror")["content"] == [
        {"type": "heading", "attrs": {"level": 1e30}}
    ]
    assert get(api, doc, "json")["meta"] == {"big": -1e20, "safe": 2**53}


def test_read_only_tokens_cannot_write_and_reads_of_other_kinds_are_400(api):
    doc = name()
    ok(write(api, "PUT", doc, "x", format="text", field="code"))
    reader = make_token(access="read")
    assert_error(write(api, "PUT", doc, "y", reader, format="text", field="code"), 403, 4003)
    assert_error(write(api, "PATCH", doc, {"a": 1}, reader, path="map/m"), 403, 4003)
    assert get(api, doc, "text", "code", reader) == "x"
    status, _, body = request(
        api, "GET", f"/v1/documents/{doc}?format=prosemirror&field=code", reader
    )
    assert status == 400 and "field 'code' is a text" in json.loads(body)["error"]
    assert get(api, doc, "prosemirror", "absent") == {"type": "doc", "content": []}


def test_a_put_reaches_a_live_provider_as_a_forward_update(api):
    """A provider on the document sees the PUT live, on the connection it had."""
    doc, token = name(), make_token()
    ok(write(api, "PUT", doc, "line one\nline two", format="text", field="code"))
    node = NodeProcess(
        "content_watch.mjs", {"url": api.url, "token": token, "room": doc, "field": "code"}
    )
    try:
        assert node.wait_phase("synced", 20)["text"] == "line one\nline two"
        ok(write(api, "PUT", doc, "line 1\nline two", format="text", field="code"))
        seen = node.wait_phase("changed", 10)
        assert seen == {"phase": "changed", "text": "line 1\nline two", "connects": 1}
    finally:
        node.kill()


def test_document_changed_carries_the_changed_fields_content(tmp_path):
    """A hook with `include_content: markdown` gets, in each document.changed, the
    fields that changed since its last event, as Markdown (other kinds as JSON); the
    events a SIGTERM sends at once say the content was not read."""
    receiver = Receiver()
    config = base_config(tmp_path)
    config["auth"]["tenants"]["acme"]["apps"]["editor"]["webhooks"] = [
        {
            "url": f"{receiver.url}/ok",
            "secret": HOOK_SECRET,
            "events": ["document.changed"],
            "debounce_seconds": 0.1,
            "include_content": "markdown",
        },
        {  # a window still open at SIGTERM
            "url": f"{receiver.url}/slow",
            "secret": HOOK_SECRET,
            "events": ["document.changed"],
            "debounce_seconds": 10,
            "include_content": "text",
        },
    ]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    server = ServerProcess(path).start()
    try:
        doc = name()
        ok(write(server, "PUT", doc, "# Title\n\nText.\n", format="markdown", field="notes"))
        receiver.wait(lambda: receiver.events("/ok", doc), 5, "the first document.changed")
        assert receiver.events("/ok", doc)[0][1]["content"] == {"notes": "# Title\n\nText.\n"}
        ok(write(server, "PATCH", doc, {"n": 1}, path="map/meta"))
        receiver.wait(lambda: len(receiver.events("/ok", doc)) == 2, 5, "a second event")
        assert receiver.events("/ok", doc)[1][1]["content"] == {"meta": {"n": 1}}  # only it
        # SIGTERM sends the open window's event at once, without reading the document.
        assert not receiver.events("/slow", doc)
        server.proc.terminate()
        assert server.proc.wait(10) == 0
        (_, event), *_ = receiver.events("/slow", doc)
        assert "content" not in event and event["content_error"].startswith("server shutting")
    finally:
        server.proc.kill()
        server.proc.wait()
        receiver.close()


def test_a_document_too_large_to_convert_on_each_window_gets_a_content_error(monkeypatch):
    """Markdown of 20,000 paragraphs took 5 s, on the event loop, every debounce window."""
    monkeypatch.setattr(content, "MAX_DOCUMENT", 100)
    doc = Doc()
    doc["code"] = Text("x" * 101)
    update = doc.get_update()
    answer = content.content_fields(
        lambda key: update, ("t", "a", "d"), "text", content.ChangedFields()
    )
    assert "over 100 bytes" in answer["content_error"]


def test_include_content_must_be_a_format():
    with pytest.raises(ConfigError) as error:
        parse_hooks(
            "hooks", [{"url": "https://x.org", "secret": HOOK_SECRET, "include_content": "html"}]
        )
    assert "hooks[0].include_content" in str(error.value)


def test_the_readmes_python_backend_snippet_reads_markdown_and_appends(api, capsys):
    """The README's snippet ("Content without Yjs"), run as written against the server."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Content without Yjs") :]
    code = section[section.index("```python\n") + len("```python\n") :]
    code = code[: code.index("```")]
    doc = name()
    for placeholder, value in (
        ("https://sync.example.com", api.http),
        ("a JWT your backend signs, as for the socket", make_token()),
        ("my-doc", doc),
    ):
        assert placeholder in code, f"the README snippet no longer has {placeholder}"
        code = code.replace(placeholder, value)
    ok(write(api, "PUT", doc, "# Notes\n", format="markdown"))
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out == "# Notes\n\n"
    assert get(api, doc, "markdown") == "# Notes\n\nReviewed by the **backend**.\n"


@pytest.mark.long
def test_a_write_on_one_process_reaches_a_client_of_another(start_server, tmp_path, redis_url):
    """Two processes (one database, one Redis): a PUT answered by one is live at once
    in a provider connected to the other, as any update is."""
    config = base_config(tmp_path, redis=redis_url)
    a, b = start_server(config), start_server(config)
    doc, token = name(), make_token()
    node = NodeProcess(
        "content_watch.mjs", {"url": b.url, "token": token, "room": doc, "field": "t"}
    )
    try:
        assert node.wait_phase("synced", 20)["text"] == ""
        ok(write(a, "PUT", doc, "from process a", format="text", field="t"))
        assert node.wait_phase("changed", 10)["text"] == "from process a"
    finally:
        node.kill()


def test_content_writes_are_authored_by_the_tokens_sub(api):
    doc = name()
    ok(write(api, "PUT", doc, "draft", make_token(sub="ann"), format="text", field="t"))
    ok(write(api, "POST", doc, "!", make_token(sub="bob"), format="text", field="t"))
    ok(write(api, "PATCH", doc, {"k": 1}, make_token(sub="cy"), path="map/meta"))
    status, _, body = request(api, "POST", f"/v1/documents/{doc}/versions", make_token())
    assert status == 201, body
    made = json.loads(body)
    assert made["authors"] == ["ann", "bob", "cy"]
    # A restore is a write by the token that asks for it.
    ok(write(api, "PUT", doc, "later", make_token(sub="ann"), format="text", field="t"))
    restore = f"/v1/documents/{doc}/versions/{made['id']}/restore"
    assert request(api, "POST", restore, make_token(sub="dee"))[0] == 200
    status, _, body = request(api, "POST", f"/v1/documents/{doc}/versions", make_token())
    assert (status, json.loads(body)["authors"]) == (201, ["dee"])


def test_preflights_of_the_write_routes_allow_their_methods(api):
    for path in ("/v1/documents/d/content", "/v1/documents/d/map/meta"):
        status, headers, _ = request(
            api, "OPTIONS", path, headers={"Origin": "https://app.example.com"}
        )
        assert status == 204 and "PATCH" in headers["Access-Control-Allow-Methods"], headers
