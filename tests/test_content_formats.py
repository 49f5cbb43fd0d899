"""The content formats without a server (wsserver/documents/formats/, issue 25): the XML
string form is escaped (a Hypothesis property: parsing it back gives the same tree),
ProseMirror JSON and Markdown both ways, plain text.
"""

import copy
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Text, XmlElement, XmlFragment, XmlText

from wsserver.documents.content import document_json
from wsserver.documents.formats import fields
from wsserver.documents.formats import prosemirror as pm
from wsserver.documents.formats.fields import read_field
from wsserver.documents.formats.markdown import doc_markdown
from wsserver.documents.formats.markdown_read import markdown_doc
from wsserver.documents.formats.text import doc_text, replace_text
from wsserver.documents.formats.xml import MAX_DEPTH, to_xml
from wsserver.errors import MessageTooBig, NestedTooDeep

# The issue's examples: typed text that looks like markup, and a link's href.
TYPED = 'if a < b && c > "d" then </paragraph><script>x</script>'
HREF = 'https://e.com/?a=1&b="2"'


def parse_back(form):
    """The tree of an XML string form: [(tag, attributes, [children])] and strings."""
    return _tree(ET.fromstring(f"<root>{form}</root>"))


def _tree(element):
    items = [element.text] if element.text else []
    for child in element:
        items.append((child.tag, dict(child.attrib), _tree(child)))
        if child.tail:
            items.append(child.tail)
    return items


def fragment_of(tree):
    """A Yjs fragment built from the same [(tag, attributes, children)] and strings."""
    doc = Doc()
    fragment = doc.get("f", type=XmlFragment)
    _fill(fragment, tree)
    return doc, fragment


def _fill(parent, tree):
    for item in tree:
        if isinstance(item, str):
            parent.children.append(XmlText()).insert(0, item)
        else:
            tag, attributes, children = item
            _fill(parent.children.append(XmlElement(tag, attributes)), children)


def merged(tree):
    """Adjacent strings as one (two XmlTexts side by side print as one text)."""
    out = []
    for item in tree:
        if isinstance(item, str) and out and isinstance(out[-1], str):
            out[-1] += item
        elif isinstance(item, str):
            out.append(item)
        else:
            out.append((item[0], item[1], merged(item[2])))
    return out


def test_the_issues_examples_are_escaped_and_parse_back():
    doc, fragment = fragment_of([("paragraph", {}, [TYPED])])
    link = fragment.children.append(XmlElement("paragraph")).children.append(XmlText())
    link.insert(0, "e", {"link": {"href": HREF}})
    form = to_xml(fragment)
    assert "<script>" not in form and "</paragraph><script>" not in form
    assert parse_back(form) == [
        ("paragraph", {}, [TYPED]),
        ("paragraph", {}, [("link", {"href": HREF}, ["e"])]),
    ]
    # ?format=json and the admin API's content use this form.
    assert document_json(doc.get_update()) == {"f": form}


# Any text XML 1.0 can carry (the others become U+FFFD: test below).
_markup = st.text(st.sampled_from("<>&\"'\t\n\r ;#/=x"), min_size=1)  # what markup is made of
_any_text = st.text(
    st.characters(
        blacklist_categories=("Cs",),
        blacklist_characters="".join(map(chr, [*range(9), 11, 12, *range(14, 32)]))
        + "\ufffe\uffff",
    ),
    min_size=1,
)
xml_text = st.one_of(_markup, _any_text, st.builds(str.__add__, _any_text, _markup))
names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,8}", fullmatch=True)
trees = st.recursive(
    st.lists(xml_text, max_size=2),
    lambda children: st.lists(
        st.one_of(
            xml_text,
            st.tuples(names, st.dictionaries(names, xml_text, max_size=3), children),
        ),
        max_size=4,
    ),
    max_leaves=12,
)


@settings(max_examples=100, deadline=None)
@given(tree=trees)
def test_parsing_the_xml_string_form_back_gives_the_same_tree(tree):
    _, fragment = fragment_of(tree)
    assert parse_back(to_xml(fragment)) == merged(tree)


def test_what_xml_cannot_carry_is_replaced_and_names_cannot_open_tags():
    _, fragment = fragment_of(
        [("p><script", {'a"b': "x\x00y", "ok": "tab\there"}, ["nul\x00 \x1b"])]
    )
    form = to_xml(fragment)
    assert parse_back(form) == [
        ("p__script", {"a_b": "x\ufffdy", "ok": "tab\there"}, ["nul\ufffd \ufffd"])
    ]


# --- ProseMirror JSON -----------------------------------------------------------------

DOC = {
    "type": "doc",
    "content": [
        {"type": "heading", "attrs": {"level": 2}, "content": [{"type": "text", "text": "Title"}]},
        {
            "type": "paragraph",
            "content": [
                {"type": "text", "text": TYPED + " "},
                {"type": "text", "text": "bold", "marks": [{"type": "bold"}]},
                {
                    "type": "text",
                    "text": " link 😀",
                    "marks": [{"type": "link", "attrs": {"href": HREF}}, {"type": "italic"}],
                },
                {"type": "hardBreak"},
                {"type": "text", "text": "after"},
            ],
        },
        {
            "type": "orderedList",
            "attrs": {"start": 1},
            "content": [
                {
                    "type": "listItem",
                    "content": [
                        {"type": "paragraph", "content": [{"type": "text", "text": "one"}]}
                    ],
                }
            ],
        },
        {
            "type": "codeBlock",
            "attrs": {"language": "js"},
            "content": [{"type": "text", "text": "a < b"}],
        },
        {"type": "horizontalRule"},
        {"type": "paragraph"},
    ],
}


def written(nodes):
    doc = Doc()
    fragment = doc.get("default", type=XmlFragment)
    pm.replace(fragment, pm.parse_doc({"type": "doc", "content": nodes}))
    return doc, fragment


def test_prosemirror_json_round_trips_and_a_replace_rewrites_only_what_changed():
    doc, fragment = written(DOC["content"])
    assert pm.fragment_json(fragment) == DOC
    # Null attributes are left out; empty attrs objects too.
    extra = copy.deepcopy(DOC)
    extra["content"][0]["attrs"]["id"] = None
    extra["content"][1]["attrs"] = {}
    # Marks on a node other than text (a hard break in bold) are not kept (y-prosemirror).
    extra["content"][1]["content"][3]["marks"] = [{"type": "bold"}]
    before = doc.get_state()
    pm.replace(fragment, pm.parse_doc(extra))
    assert doc.get_update(before) == b"\x00\x00"  # nothing changed, nothing written
    # One word changed: the other blocks' items stay (a small update, same elements).
    heading = fragment.children[0]
    changed = copy.deepcopy(DOC)
    changed["content"][1]["content"][-1]["text"] = "after all"
    pm.replace(fragment, pm.parse_doc(changed))
    assert pm.fragment_json(fragment) == changed
    assert fragment.children[0] == heading
    assert len(doc.get_update(before)) < 60


def test_text_and_markdown_of_a_prosemirror_document():
    assert doc_text(DOC) == f"Title\n{TYPED} bold link 😀\nafter\none\na < b\n\n"
    assert doc_markdown(DOC) == (
        "## Title\n\n"
        r'if a \< b && c > "d" then \</paragraph>\<script>x\</script> **bold**'
        '[ *link 😀*](https://e.com/?a=1&b="2")\\\nafter\n\n'
        "1. one\n\n```js\na < b\n```\n\n---\n"
    )


def test_markdown_reads_back_the_same_and_is_stable_after_one_round():
    source = (
        '# Title\n\nText with **bold**, _italic_, ~~strike~~, `code`, [a link](https://x.org "T")'
        " and \\*not emphasis\\*.\nSoft break.\n\n+ one\n+ two\n    - nested\n\n7) seven\n\n"
        "> quote\n\n```python\nprint('x')\n```\n\n***\n\n- [ ] todo\n- [x] done\n"
    )
    first = doc_markdown(markdown_doc(source))
    assert doc_markdown(markdown_doc(first)) == first
    assert markdown_doc(first) == markdown_doc(source)
    tasks = markdown_doc("- [ ] todo\n- [x] done\n")["content"][0]
    assert tasks["type"] == "taskList"
    assert [i["attrs"]["checked"] for i in tasks["content"]] == [False, True]
    # Text that looks like Markdown stays text.
    tricky = "# no *emphasis* [x](y) <b> 1. &amp; `tick` ~~no~~ _u_"
    paragraph = {"type": "paragraph", "content": [{"type": "text", "text": tricky}]}
    assert markdown_doc(doc_markdown({"type": "doc", "content": [paragraph]}))["content"] == [
        paragraph
    ]


@pytest.mark.parametrize("typed", [" # a", " - a", " 1. a", " > a", " ---", "\t- a", "\ta"])
def test_text_after_leading_whitespace_stays_text_in_markdown(typed):
    """The block's leading whitespace is trimmed: ` # a` must not come back a heading."""
    paragraph = {"type": "paragraph", "content": [{"type": "text", "text": typed}]}
    read = markdown_doc(doc_markdown({"type": "doc", "content": [paragraph]}))["content"]
    assert read == [{"type": "paragraph", "content": [{"type": "text", "text": typed.strip()}]}]


def test_many_blocks_and_runs_are_inserted_where_yrs_need_not_walk(monkeypatch):
    """Yrs walks from the start to an index: writing each node after the one before was
    quadratic (100 kB of `*a* ` as Markdown: minutes on the event loop). Each node is
    inserted at the same place instead, and the content reads back the same."""
    import pycrdt._xml as xml

    places = []
    for cls in (xml.XmlText, xml.XmlChildrenView):
        monkeypatch.setattr(cls, "insert", _recording(cls.insert, places))
    bold = [{"type": "bold"}]
    runs = [{"type": "text", "text": f"r{i}", "marks": bold[: i % 2]} for i in range(150)]
    blocks = [{"type": "paragraph", "content": runs}] * 150
    content = pm.normalized(blocks)
    assert content[0]["content"] == [
        {"type": "text", "text": r["text"], **({"marks": r["marks"]} if r["marks"] else {})}
        for r in runs
    ]
    assert content == [content[0]] * 150
    assert set(places) == {0}


def _recording(insert, places):
    def recorded(self, index, *args, **kwargs):
        places.append(index)
        return insert(self, index, *args, **kwargs)

    return recorded


@pytest.mark.parametrize(
    "form, content",
    [("text", "a\n" * 11), ("markdown", "a\n\n" * 40), ("prosemirror", [{"type": "p"}] * 11)],
)
def test_writes_into_an_xml_field_past_the_caps_are_413(monkeypatch, form, content):
    """100 kB of Markdown held the event loop for seconds: bounded by bytes and nodes."""
    monkeypatch.setattr(fields, "MAX_NODES", 10)
    monkeypatch.setattr(fields, "MAX_MARKDOWN_BYTES", 100)
    doc = Doc()
    pm.insert(doc.get("default", type=XmlFragment), 0, [{"type": "p"}])  # an XML field
    before = doc.get_update()
    with pytest.raises(MessageTooBig):
        fields.write_field(doc, before, "default", form, content, None)
    assert doc.get_update() == before


def _text(text):
    return {"type": "text", "text": text}


def _item(text):
    return {"type": "listItem", "content": [{"type": "paragraph", "content": [_text(text)]}]}


def _para(text, **mark):
    return {"type": "paragraph", "content": [{"type": "text", "text": text, **mark}]}


@pytest.mark.parametrize(
    "block, read",
    [  # attributes and text a writer chose must not open Markdown structure
        (
            {"type": "codeBlock", "attrs": {"language": "py`\n# h"}, "content": [_text("x")]},
            {"type": "codeBlock", "attrs": {"language": "py"}, "content": [_text("x")]},
        ),
        (
            {"type": "heading", "attrs": {"level": 2}, "content": [_text("a\n# b")]},
            {"type": "heading", "attrs": {"level": 2}, "content": [_text("a # b")]},
        ),
        (
            {"type": "orderedList", "attrs": {"start": 10**9}, "content": [_item("x")]},
            {"type": "orderedList", "attrs": {"start": 1}, "content": [_item("x")]},
        ),
        (
            _para("x", marks=[{"type": "link", "attrs": {"href": "javascript:alert(1)"}}]),
            _para("x"),
        ),
        (
            {"type": "heading", "attrs": {"level": 1}, "content": [_text("C #")]},
            {"type": "heading", "attrs": {"level": 1}, "content": [_text("C #")]},
        ),
    ],
)
def test_markdown_of_hostile_attributes_and_text_keeps_the_block(block, read):
    assert markdown_doc(doc_markdown({"type": "doc", "content": [block]}))["content"] == [read]


@pytest.mark.parametrize("form", ["prosemirror", "markdown", "text"])
def test_a_read_of_a_large_document_lets_other_greenlets_run(monkeypatch, form):
    """Markdown of 20,000 paragraphs held every client of the process 5.5 s."""
    import gevent

    yields = []
    monkeypatch.setattr(gevent, "sleep", lambda seconds=0: yields.append(seconds))
    doc = Doc()
    pm.insert(doc.get("default", type=XmlFragment), 0, [_para("p")] * 200)
    read_field(doc.get_update(), "default", form)
    assert len(yields) >= 3 and set(yields) == {0}


def test_replace_text_rewrites_only_the_middle():
    doc = Doc()
    text = doc.get("t", type=Text)
    text += "héllo 😀 world"
    before = doc.get_state()
    replace_text(text, "héllo 😀 big world")
    assert str(text) == "héllo 😀 big world"
    update = doc.get_update(before)
    assert b"big " in update and b"world" not in update and "héllo".encode() not in update
    assert update.endswith(b"\x00")  # an empty delete set: nothing deleted


def test_elements_nested_too_deep_are_422_not_a_recursion_error():
    doc = Doc()
    element = doc.get("default", type=XmlFragment).children.append(XmlElement("p"))
    for _ in range(MAX_DEPTH + 5):
        element = element.children.append(XmlElement("p"))
    update = doc.get_update()
    for form in ("prosemirror", "markdown", "text"):
        with pytest.raises(NestedTooDeep):
            read_field(update, "default", form)
    with pytest.raises(NestedTooDeep):
        document_json(update)


_words = st.sampled_from(["a", "b c", "x.", "*", "1", " ", "_", "ok", " d", "e ", "`", "#", "]("])
_marks = st.lists(
    st.sampled_from(
        [
            {"type": "bold"},
            {"type": "italic"},
            {"type": "strike"},
            {"type": "code"},
            {"type": "link", "attrs": {"href": "https://x.org/a b"}},
        ]
    ),
    unique_by=lambda m: m["type"],
    max_size=2,
)


@settings(max_examples=150, deadline=None)
@given(runs=st.lists(st.tuples(_words, _marks), min_size=1, max_size=4))
def test_markdown_of_any_marked_runs_is_stable_after_one_round(runs):
    """Marks CommonMark cannot place (`a**~~b~~**`) must not make each round differ."""
    content = [{"type": "text", "text": t, **({"marks": m} if m else {})} for t, m in runs]
    first = doc_markdown({"type": "doc", "content": [{"type": "paragraph", "content": content}]})
    second = doc_markdown(markdown_doc(first))
    assert doc_markdown(markdown_doc(second)) == second
