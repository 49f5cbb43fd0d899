"""`check_one_update` (wsserver/protocol/update.py) against real updates.

It runs on every update a client sends and every document API POST: refusing a valid
update some real client writes would lose that client's edits (closed with 1007, it
reconnects and re-sends the same update, refused again). So every update of a large
corpus written by the real encoders must pass, and each must be refused with a byte
after it or cut short:

- JS Yjs 13.6 (tests/node/update_corpus.mjs, generated once per run, under a second):
  every shared type, every lib0 `any` value kind, subdocuments, huge client ids and
  clocks, GC'd content, diffs, merges with Skip structs, pending structs, y-prosemirror
  documents, a seeded random session. Yjs's own decoder lists the struct and content
  classes it holds, and the test checks that none is missing.
- pycrdt (yrs): a fixed set below, and Hypothesis edit sequences.

No proper prefix of a valid update is a valid update: the v1 layout is prefix-free
(every count and length comes before what it counts, and the walk reads left to right),
so the walk of a prefix takes the same steps as the walk of the whole and runs out of
bytes before its end. The tests refuse every prefix, with no exception.
"""

import base64
import random

import pytest
from conftest import run_node
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import (
    Array,
    Doc,
    Map,
    Text,
    UndoManager,
    XmlElement,
    XmlFragment,
    XmlText,
    get_state,
    get_update,
    merge_updates,
    write_var_uint,
)

from wsserver.errors import InvalidPayload
from wsserver.protocol.update import check_one_update

# Every struct and content class of Yjs's v1 encoding (content refs 1-9, GC 0, Skip 10).
EVERY_STRUCT = {
    "GC", "Skip", "ContentDeleted", "ContentJSON", "ContentBinary", "ContentString",
    "ContentEmbed", "ContentFormat", "ContentType", "ContentAny", "ContentDoc",
}  # fmt: skip
# Valid Yjs that yrs cannot read (see tests/node/update_corpus.mjs): pycrdt is not asked
# to apply these, but the check must still take them.
YRS_INCOMPATIBLE = "yrs-incompatible/"
# Updates of the corpus with clocks past 2^32: JS Yjs reads them, yrs wraps them to 32
# bits (the server would hold another document than its clients): refused.
READ_OTHERWISE = "bigclock/crafted"


@pytest.fixture(scope="module")
def js_corpus():
    out = run_node("update_corpus.mjs")
    assert EVERY_STRUCT <= set(out["structs"]), out["structs"]
    return [(kind, base64.b64decode(update)) for kind, update in out["updates"]]


def _cuts(update, rng):
    """Where to cut `update` short: everywhere in a small one; in a large one, its first
    and last 24 positions and 24 more at random (every cut of the corpus's megabyte and a
    half would take minutes)."""
    if len(update) <= 200:
        return range(len(update))
    ends = set(range(24)) | set(range(len(update) - 24, len(update)))
    return sorted(ends | set(rng.sample(range(len(update)), 24)))


def _assert_one_whole_update(kind, update, rng):
    try:
        check_one_update(update)
    except InvalidPayload as e:
        raise AssertionError(f"{kind}: a valid update refused ({e}): {update.hex()}") from None
    for junk in (b"\x00", b"\x80", update):
        with pytest.raises(InvalidPayload, match="trailing bytes"):
            check_one_update(update + junk)
    for cut in _cuts(update, rng):
        with pytest.raises(InvalidPayload, match="cut short or malformed"):
            check_one_update(update[:cut])


def test_every_js_yjs_update_is_taken_and_applies_in_pycrdt(js_corpus):
    """Taken by the check; and valid for the server's own decoder too (but for what yrs
    cannot read). One test, not two: each xdist worker running one makes the corpus again."""
    assert len(js_corpus) > 1000
    for kind, update in js_corpus:
        if kind.startswith(READ_OTHERWISE):
            with pytest.raises(InvalidPayload, match="a clock Yjs clients cannot read"):
                check_one_update(update)
            continue
        try:
            check_one_update(update)
        except InvalidPayload as e:
            raise AssertionError(f"{kind}: a valid update refused ({e}): {update.hex()}") from None
    for kind, update in js_corpus:
        if not kind.startswith((YRS_INCOMPATIBLE, READ_OTHERWISE)):
            Doc().apply_update(update)


def test_a_js_yjs_update_with_a_byte_after_it_or_cut_short_is_refused(js_corpus):
    rng = random.Random(7)
    for kind, update in js_corpus:
        if not kind.startswith(READ_OTHERWISE):  # refused whole (above)
            _assert_one_whole_update(kind, update, rng)


def _pycrdt_updates():
    """Updates yrs writes (through pycrdt), of every kind it exposes."""
    updates = []

    def record(doc):
        doc.observe(lambda event: updates.append(event.update))
        return doc

    doc = record(Doc(client_id=2**53 - 1))
    text = doc.get("t", type=Text)
    text.insert(0, "hello world 😀𝄞")
    text.insert(5, " bold", attrs={"bold": True, "color": "#f00", "n": None})
    text.format(1, 8, {"italic": True, "link": {"href": "https://x.test"}})
    text.format(2, 4, {"italic": None})
    text.insert_embed(3, {"image": "i.png", "alt": "ä"})
    text.insert_embed(0, b"\x00\x01", attrs={"x": 1})
    del text[4:9]
    values = doc.get("m", type=Map)
    for i, value in enumerate(
        [None, True, False, 0, -1, 63, 64, -65, 2**31, -(2**31) - 1, 2**53 + 1, 2**63 - 1,
         -(2**63), 1.5, 0.1, -0.0, float("nan"), float("inf"), "", "é😀", "x" * 20000, b"",
         b"\x80" * 300, [], {}, [None, [{"a": [1.25, b"x"]}]], {"": {"": [True]}}]
    ):  # fmt: skip
        values[f"v{i}"] = value
    values["map"] = Map({"a": Array([1, Text("in array"), Map({"deep": Array()})])})
    values["sub"] = Doc()
    values["sub2"] = Doc(guid="a-guid-😀")
    del values["v1"]
    values["v2"] = "overwritten"
    array = doc.get("a", type=Array)
    array.extend([1, "two", Map({"k": "v"}), Text("t"), Array([Array([])]), b"bytes", None])
    array.insert(2, XmlFragment())
    del array[3:5]
    fragment = doc.get("x", type=XmlFragment)
    paragraph = fragment.children.append(XmlElement("paragraph", {"class": "c", "id": "ü"}))
    paragraph.children.append(XmlText("plain "))
    paragraph.children.append(XmlElement("hard_break"))
    heading = fragment.children.insert(0, XmlElement("heading", {"level": "2"}))
    xml_text = heading.children.append(XmlText())
    xml_text.insert(0, "bold", attrs={"bold": {}})
    xml_text.insert_embed(0, {"img": 1})
    xml_text.attributes["lang"] = "fr"
    xml_text.format(0, 2, {"italic": {}})
    del paragraph.attributes["class"]
    del fragment.children[1]

    undo = UndoManager(scopes=[text, array], capture_timeout_millis=0)
    text.insert(0, "undo me")
    array.append("undo me")
    undo.undo()
    undo.redo()
    undo.undo()

    state = doc.get_update()
    updates.append(state)
    updates.append(doc.get_update(b"\x01\xff\xff\xff\xff\xff\xff\xff\x0f\x0a"))  # mid-item
    updates.append(get_update(state, get_state(updates[3])))

    # Many clients and their delete sets; no GC (skip_gc) and GC'd nested content.
    docs = [Doc(client_id=i, skip_gc=i % 2 == 0) for i in (0, 1, 127, 128, 2**32 - 1, 2**40)]
    for i, each in enumerate(docs):
        each.get("t", type=Text).insert(0, f"client {i} " * 5)
        nested = each.get("a", type=Array)
        nested.append(Map({"inner": Array(["x", "y"])}))
        del nested[0]
    merged = merge_updates(*(each.get_update() for each in docs))
    for each in docs:
        each.apply_update(merged)
        shared = each.get("t", type=Text)
        for index in range(len(shared) - 2, 0, -9):
            del shared[index]
        updates.append(each.get_update())
    updates.append(merged)
    own = updates[:12]
    updates.append(merge_updates(*own[::3]))  # gaps in one client's clocks: Skip structs
    updates.append(merge_updates(*own[::-1]))
    pending = Doc()
    for update in own[1::2]:
        pending.apply_update(update)  # missing dependencies: held as pending
    updates.append(pending.get_update())
    return updates


def test_every_pycrdt_update_is_taken_and_one_byte_more_or_less_is_refused():
    rng = random.Random(8)
    updates = _pycrdt_updates()
    assert len(updates) > 50
    for update in updates:
        Doc().apply_update(update)
        _assert_one_whole_update("pycrdt", update, rng)


# --- Hypothesis: random pycrdt edit sequences --------------------------------------------

_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
_attrs = st.none() | st.dictionaries(st.sampled_from(["bold", "link", "c"]), _values, max_size=2)
_at = st.integers(0, 1000)  # an index, taken modulo the length at the time
_key = st.sampled_from("abc")
# Text that deletions and formats index: ASCII, as pycrdt 0.14 counts a Text's length in
# UTF-8 bytes but removes by characters (a delete over "😀" panics in yrs). Non-ASCII text
# is in the fixed pycrdt set and in the JS corpus.
_ascii = st.text(st.characters(max_codepoint=127), min_size=1, max_size=30)
_edits = st.lists(
    st.one_of(
        st.tuples(st.just("insert"), _at, _ascii, _attrs),
        st.tuples(st.just("delete"), _at, st.integers(1, 10)),
        st.tuples(st.just("format"), _at, st.integers(1, 10), _attrs),
        st.tuples(st.just("embed"), _at, _values),
        st.tuples(st.just("set"), _key, _values),
        st.tuples(st.just("nest"), _key, st.sampled_from([Map, Array, Text, Doc])),
        st.tuples(st.just("unset"), _key),
        st.tuples(st.just("push"), _at, _values),
        st.tuples(st.just("pop"), _at),
        st.tuples(st.just("xml"), _at, st.text(min_size=1, max_size=10), _attrs),
        st.just(("sync",)),
    ),
    max_size=25,
)


def _edit(doc, edit):
    text, values = doc.get("t", type=Text), doc.get("m", type=Map)
    array, fragment = doc.get("a", type=Array), doc.get("x", type=XmlFragment)
    op, *args = edit
    if op == "insert":
        text.insert(args[0] % (len(text) + 1), args[1], attrs=args[2])
    elif op == "delete" and len(text):
        start = args[0] % len(text)
        del text[start : min(len(text), start + args[1])]
    elif op == "format" and len(text) and args[2]:
        start = args[0] % len(text)
        text.format(start, min(len(text), start + args[1]), args[2])
    elif op == "embed":
        text.insert_embed(args[0] % (len(text) + 1), args[1])
    elif op == "set":
        values[args[0]] = args[1]
    elif op == "nest":
        values[args[0]] = args[1]()  # an empty shared type or subdocument
    elif op == "unset" and args[0] in values:
        del values[args[0]]
    elif op == "push":
        array.insert(args[0] % (len(array) + 1), args[1])
    elif op == "pop" and len(array):
        del array[args[0] % len(array)]
    elif op == "xml":
        element = fragment.children.insert(
            args[0] % (len(fragment.children) + 1), XmlElement("p", {"k": args[1]})
        )
        element.children.append(XmlText()).insert(0, args[1], attrs=args[2])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=_edits, client_ids=st.tuples(st.integers(0, 2**53 - 1), st.integers(0, 2**53 - 1)))
def test_every_update_pycrdt_emits_is_taken(edits, client_ids):
    if client_ids[0] == client_ids[1]:
        client_ids = (client_ids[0], client_ids[0] ^ 1)
    docs = [Doc(client_id=client_id, skip_gc=i == 1) for i, client_id in enumerate(client_ids)]
    emitted = []
    for doc in docs:
        doc.observe(lambda event: emitted.append(event.update))
    for i, edit in enumerate(edits):
        doc = docs[i % 2]
        if edit[0] == "sync":
            other = docs[(i + 1) % 2]
            doc.apply_update(other.get_update(doc.get_state()))
        else:
            with doc.transaction():
                _edit(doc, edit)
    emitted += [doc.get_update() for doc in docs]
    emitted.append(docs[0].get_update(docs[1].get_state()))
    emitted.append(merge_updates(*emitted[::2]))
    for update in emitted:
        check_one_update(update)
        with pytest.raises(InvalidPayload):
            check_one_update(update + b"\x00")
        with pytest.raises(InvalidPayload):
            check_one_update(update[:-1])


# --- numbers Yrs and JS Yjs read differently (protocol/update.py, MAX_CLIENT, MAX_CLOCK) ---


def one_item(client=5, clock=0):
    """One item 'x' of `client` at `clock` in the root text 't'."""
    return b"\x01\x01" + write_var_uint(client) + write_var_uint(clock) + b"\x04\x01\x01t\x01x\x00"


def _insert_after(origin_client, origin_clock=0):
    """Client 5's item 'y' at clock 1, whose origin is (origin_client, origin_clock)."""
    return (
        b"\x01\x01\x05\x01\x84"
        + write_var_uint(origin_client)
        + write_var_uint(origin_clock)
        + b"\x01y\x00"
    )


def _delete(client=5, clock=0, length=1):
    return (
        b"\x00\x01"
        + write_var_uint(client)
        + b"\x01"
        + write_var_uint(clock)
        + (write_var_uint(length))
    )


@pytest.mark.parametrize(
    "update",
    [
        one_item(client=2**53),
        one_item(client=2**53 + 5),  # client 5 to Yrs (masked to 53 bits)
        one_item(client=2**56),
        one_item(client=2**63 + 7),
        one_item(clock=2**32),
        _insert_after(2**53 + 5),
        _insert_after(5, 2**32),
        _delete(client=2**53),
        _delete(clock=2**32),
        _delete(length=2**32),
    ],
    ids=[
        "client-2^53",
        "client-2^53+5",
        "client-2^56",
        "client-2^63",
        "clock-2^32",
        "origin-client",
        "origin-clock",
        "deleted-client",
        "deleted-clock",
        "deleted-length",
    ],
)
def test_a_number_yrs_and_yjs_read_differently_is_refused(update):
    """Yrs masks a client id to 53 bits and wraps a clock to 32: the server would hold
    another document than its clients (client 2^53 + 5 is client 5 to Yrs)."""
    with pytest.raises(InvalidPayload):
        check_one_update(update)


def test_the_largest_numbers_both_read_alike_are_taken():
    largest = [
        one_item(client=2**53 - 1),
        one_item(clock=2**32 - 1),
        _insert_after(2**53 - 1, 2**32 - 1),
        _delete(client=2**53 - 1, clock=2**32 - 1, length=2**32 - 1),
    ]
    for update in largest:
        check_one_update(update)
    doc = Doc()
    doc.apply_update(one_item(client=2**53 - 1))
    assert str(doc.get("t", type=Text)) == "x"
    assert get_state(one_item(client=2**53 - 1)) == b"\x01" + write_var_uint(2**53 - 1) + b"\x01"
