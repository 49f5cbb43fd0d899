"""Restore as a forward update (wsserver/documents/restore.py), property-tested: random
documents (text with formatting and embeds, maps, arrays, XML fragments, elements and
text, nested), random edits, then the restore update applied to the edited document
must give the version's content exactly; and it must be new operations only (a replica
that never saw the restore's scratch copy applies it the same way)."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Array, Doc, Map, Text, XmlElement, XmlFragment, XmlText

from wsserver.documents.restore import document_content, restore_update
from wsserver.documents.ydoc import _state_vector

ATTRS = [None, {}, {"bold": True}, {"italic": True}, {"link": {"href": "https://x.test"}}]
CHARS = "ab é😀\n"
TAGS = ["p", "h1", "li"]

op = st.tuples(
    st.integers(0, 1000),  # which container
    st.integers(0, 5),  # which action
    st.integers(0, 1000),  # a position
    st.integers(0, 6),  # a length
    st.text(CHARS, min_size=1, max_size=6),
    st.integers(0, len(ATTRS) - 1),
    st.integers(0, 4),  # which value
)
ops = st.lists(op, max_size=25)


def containers(doc):
    roots = [
        doc.get("t", type=Text),
        doc.get("m", type=Map),
        doc.get("a", type=Array),
        doc.get("f", type=XmlFragment),
    ]
    found = []

    def walk(value):
        found.append(value)
        if isinstance(value, Map):
            children = list(value.values())
        elif isinstance(value, Array):
            children = list(value)
        elif isinstance(value, (XmlFragment, XmlElement)):
            children = list(value.children)
        else:
            children = []
        for child in children:
            if isinstance(child, (Map, Array, Text, XmlFragment, XmlElement, XmlText)):
                walk(child)

    for root in roots:
        walk(root)
    return found


def value_of(which, text, depth_ok):
    if not depth_ok:
        return [1, 2.5, "s", None, True][which]
    return [7, text, Map({"k": text}), Array([1, text]), Text(text)][which]


def sizes(text_type):
    """pycrdt's offset size of each character and embed (UTF-8 bytes; an embed is 1)."""
    return [
        size
        for insert, _ in text_type.diff()
        for size in ([len(ch.encode()) for ch in insert] if isinstance(insert, str) else [1])
    ]


def byte_offset(text_type, index):
    return sum(sizes(text_type)[:index])


def apply_ops(doc, ops):
    for which, action, pos, length, text, attrs_i, value_i in ops:
        found = containers(doc)
        target = found[which % len(found)]
        attrs = ATTRS[attrs_i]
        depth_ok = len(found) < 30
        if isinstance(target, (Text, XmlText)):
            n = len(sizes(target))
            if action <= 1 or n == 0:
                at = byte_offset(target, pos % (n + 1))
                target.insert(at, text, attrs)
            elif action == 2:
                target.insert_embed(byte_offset(target, pos % (n + 1)), {"img": text}, attrs)
            elif action == 3:
                start = pos % n
                end = min(n, start + length)
                target.format(
                    byte_offset(target, start),
                    byte_offset(target, end) - byte_offset(target, start),
                    attrs or {"bold": None},
                )
            else:
                start = pos % n
                end = min(n, start + max(1, length))
                a, b = byte_offset(target, start), byte_offset(target, end)
                if b > a:
                    del target[a:b]
        elif isinstance(target, Map):
            key = "abcd"[pos % 4]
            if action == 0 and key in target:
                del target[key]
            else:
                target[key] = value_of(value_i, text, depth_ok)
        elif isinstance(target, Array):
            n = len(target)
            if action == 0 and n:
                start = pos % n
                del target[start : min(n, start + max(1, length))]
            else:
                target.insert(pos % (n + 1), value_of(value_i, text, depth_ok))
        else:  # XmlFragment, XmlElement
            children = target.children
            n = len(children)
            if action == 0 and n:
                del children[pos % n]
            elif action == 1 and isinstance(target, XmlElement):
                target.attributes["abc"[pos % 3]] = text
            elif action == 2 and depth_ok:
                children.insert(pos % (n + 1), XmlElement(TAGS[value_i % 3], {"k": text}))
            else:
                children.insert(pos % (n + 1), XmlText(text))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(before=ops, after=ops)
def test_restore_makes_the_content_equal_the_versions(before, after):
    doc = Doc()
    apply_ops(doc, before)
    version = doc.get_update()
    apply_ops(doc, after)
    current = doc.get_update()
    update = restore_update(current, version)
    restored = Doc()
    restored.apply_update(current)
    if update:
        restored.apply_update(update)
    assert document_content(restored.get_update()) == document_content(version)
    # Forward only: new items of one client nobody had seen (and deletions), no
    # item of an existing client.
    before_sv = _state_vector(Doc().get_state() if not current else _doc_state(current))
    after_sv = _state_vector(restored.get_state())
    assert {c: k for c, k in after_sv.items() if c in before_sv} == before_sv
    assert len(set(after_sv) - set(before_sv)) <= 1


def _doc_state(update):
    doc = Doc()
    doc.apply_update(update)
    return doc.get_state()


def test_restore_of_an_equal_document_is_empty():
    doc = Doc()
    apply_ops(doc, [(0, 0, 0, 0, "hello", 2, 0), (1, 1, 0, 0, "x", 0, 2)])
    assert restore_update(doc.get_update(), doc.get_update()) == b""


def test_restore_keeps_editing_converging():
    """A client that edits concurrently with the restore converges with the others."""
    doc = Doc()
    text = doc.get("t", type=Text)
    text.insert(0, "version one", {"bold": True})
    version = doc.get_update()
    text.insert(0, "draft: ")
    other = Doc()
    other.apply_update(doc.get_update())
    restore = restore_update(doc.get_update(), version)
    other.get("t", type=Text).insert(0, "!")  # typed while the restore was made
    doc.apply_update(restore)
    doc.apply_update(other.get_update())
    other.apply_update(restore)
    assert str(doc.get("t", type=Text)) == str(other.get("t", type=Text)) == "!version one"


def test_restored_text_does_not_inherit_the_formatting_before_it():
    doc = Doc()
    text = doc.get("t", type=Text)
    text.insert(0, "a", {"bold": True})
    text.insert(1, "b", {})
    version = doc.get_update()
    del text[1:2]
    restored = Doc()
    restored.apply_update(doc.get_update())
    restored.apply_update(restore_update(doc.get_update(), version))
    assert restored.get("t", type=Text).diff() == [("a", {"bold": True}), ("b", None)]
