"""The y-websocket codec (wsserver/codec.py) against golden bytes.

The golden byte strings below were produced by the JavaScript reference
implementation (yjs 13.6.33, y-protocols 1.0.7, lib0 0.2.120 from tests/node) for
the same inputs (`writeSyncStep1`, `writeSyncStep2`, `writeUpdate`,
`encodeAwarenessUpdate` behind `writeVarUint(messageType)`), and they follow lib0's
format by hand: varUint = 7 bits per byte, little end first, high bit = "more".
"""

import pytest
from pycrdt import Doc, Map, Text, XmlElement, XmlFragment, XmlText, write_var_uint

from wsserver.errors import InvalidPayload, ProtocolViolation
from wsserver.protocol import codec
from wsserver.protocol.update import check_one_update, update_end


def h(text):
    return bytes.fromhex(text)


# A Y.Doc with clientID 1 after `doc.getText('t').insert(0, 'hello')`.
UPDATE_HELLO = h("01010100040101740568656c6c6f00")
SV_HELLO = h("010105")  # one client: id 1, clock 5
# A Y.Doc with clientID 7 after inserting 200 'x': its update is 211 bytes, so the
# length prefix needs two varUint bytes (211 = 0xd3 0x01).
UPDATE_200 = h("0101070004010174c801") + b"x" * 200 + b"\x00"
# awarenessProtocol.encodeAwarenessUpdate for clientID 5, clock 1, {user: {name: 'ann'}}
AWARENESS_ANN = h("01050117") + b'{"user":{"name":"ann"}}'
# the same client after setLocalState(null): clock 2, state "null"
AWARENESS_REMOVE = h("010502046e756c6c")

GOLDEN = {
    # (encoder, argument) -> bytes y-protocols produces
    "step1-empty": (codec.sync_step1, b"\x00", h("00000100")),
    "step1-hello": (codec.sync_step1, SV_HELLO, h("000003010105")),
    "step2-empty": (codec.sync_step2, b"\x00\x00", h("0001020000")),
    "step2-hello": (codec.sync_step2, UPDATE_HELLO, h("00010f") + UPDATE_HELLO),
    "update-hello": (codec.sync_update, UPDATE_HELLO, h("00020f") + UPDATE_HELLO),
    "update-200": (codec.sync_update, UPDATE_200, h("0002d301") + UPDATE_200),
    "awareness": (codec.awareness, AWARENESS_ANN, h("011b") + AWARENESS_ANN),
    "awareness-remove": (codec.awareness, AWARENESS_REMOVE, h("0108") + AWARENESS_REMOVE),
}


def test_golden_inputs_are_what_pycrdt_produces():
    # The same edit made with pycrdt gives the same update and state vector as yjs,
    # so the golden inputs are realistic, not hand-made.
    doc = Doc(client_id=1)
    updates = []
    doc.observe(lambda event: updates.append(event.update))
    doc.get("t", type=Text).insert(0, "hello")
    assert updates == [UPDATE_HELLO]
    assert doc.get_state() == SV_HELLO
    assert len(UPDATE_200) == 211


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_encode_matches_y_protocols(name):
    encode, arg, expected = GOLDEN[name]
    assert encode(arg) == expected


@pytest.mark.parametrize(
    "name,kind,data",
    [
        ("step1-empty", codec.KIND_STEP1, b"\x00"),
        ("step1-hello", codec.KIND_STEP1, SV_HELLO),
        ("step2-empty", codec.KIND_STEP2, b"\x00\x00"),
        ("step2-hello", codec.KIND_STEP2, UPDATE_HELLO),
        ("update-hello", codec.KIND_UPDATE, UPDATE_HELLO),
        ("update-200", codec.KIND_UPDATE, UPDATE_200),
        ("awareness", codec.KIND_AWARENESS, AWARENESS_ANN),
        ("awareness-remove", codec.KIND_AWARENESS, AWARENESS_REMOVE),
    ],
)
def test_decode_golden(name, kind, data):
    message = codec.decode(GOLDEN[name][2])
    assert message.kind == kind
    assert message.data == data
    assert type(message.data) is bytes


def test_decode_accepts_bytearray():
    # gevent-websocket and our FrameReader may hand over bytearrays; pycrdt wants bytes.
    message = codec.decode(bytearray(h("00020f") + UPDATE_HELLO))
    assert message.kind == codec.KIND_UPDATE
    assert message.data == UPDATE_HELLO
    assert type(message.data) is bytes


def test_decode_query_awareness():
    message = codec.decode(b"\x03")
    assert message.kind == codec.KIND_QUERY_AWARENESS
    assert message.data == b""


def test_read_var_uint():
    assert codec.read_var_uint(b"\x00", 0) == (0, 1)
    assert codec.read_var_uint(b"\x7f", 0) == (127, 1)
    assert codec.read_var_uint(b"\x80\x01", 0) == (128, 2)
    assert codec.read_var_uint(b"\xd3\x01", 0) == (211, 2)
    assert codec.read_var_uint(b"\xff\xff\x03", 0) == (65535, 3)
    assert codec.read_var_uint(b"\x01\xac\x02\x05", 1) == (300, 3)
    # the largest an 8-byte varUint holds: 56 bits
    assert codec.read_var_uint(b"\xff" * 7 + b"\x7f", 0) == (2**56 - 1, 8)


def test_read_var_bytes():
    assert codec.read_var_bytes(b"\x03abcX", 0) == (b"abc", 4)
    assert codec.read_var_bytes(b"\x00", 0) == (b"", 1)


BAD = {
    "empty": b"",
    "truncated type varint": b"\x80",
    "truncated sync type varint": b"\x00\x81",
    "truncated length varint": b"\x00\x02\x80",
    "missing length": b"\x00\x02",
    "varint too long": b"\x00\x02" + b"\x80" * 8 + b"\x01" + b"x",
    "type varint too long": b"\xff" * 9,
    "truncated payload": h("00020f") + UPDATE_HELLO[:-1],
    "truncated awareness payload": h("011b") + AWARENESS_ANN[:-3],
    "length far past the end": b"\x00\x00\xff\xff\xff\x7f\x00",
    "trailing bytes after sync": h("00000100") + b"\x00",
    "trailing bytes after awareness": h("0108") + AWARENESS_REMOVE + b"\x01",
    "trailing bytes after query-awareness": b"\x03\x00",
    "unknown message type 4": b"\x04\x00",
    "auth message from a client": b"\x02\x00\x00",
    "unknown message type 200": b"\xc8\x01\x00",
    "unknown sync type": b"\x00\x03\x01\x00",
    "unknown sync type 128": b"\x00\x80\x01\x01\x00",
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_decode_rejects(name):
    with pytest.raises(ProtocolViolation) as info:
        codec.decode(BAD[name])
    assert info.value.close_code == 1002


def test_decode_error_reasons():
    def reason(buf):
        with pytest.raises(ProtocolViolation) as info:
            codec.decode(buf)
        return info.value.reason

    assert reason(b"\x00\x02\x80") == "truncated varint"
    assert reason(b"\x00\x02" + b"\x80" * 8 + b"\x01") == "varint too long"
    assert reason(h("00020f") + UPDATE_HELLO[:-1]) == "truncated message"
    assert reason(h("00000100") + b"\x00") == "trailing bytes after message"
    assert reason(b"\x04\x00") == "unexpected message type 4"
    assert reason(b"\x00\x03\x01\x00") == "unknown sync message type 3"


def test_every_truncation_of_valid_messages_is_rejected():
    for _, _, message in GOLDEN.values():
        for cut in range(len(message)):
            with pytest.raises(ProtocolViolation):
                codec.decode(message[:cut])


def check_awareness_update(data):
    return [entry.client_id for entry in codec.parse_awareness_update(data)]


def test_check_awareness_update_returns_client_ids():
    assert check_awareness_update(AWARENESS_ANN) == [5]
    assert check_awareness_update(AWARENESS_REMOVE) == [5]
    assert check_awareness_update(b"\x00") == []
    two = b"\x02" + b"\x05\x01\x02{}" + b"\xac\x02\x03\x04null"
    assert check_awareness_update(two) == [5, 300]
    # an empty state string is allowed (nothing to parse)
    assert check_awareness_update(b"\x01\x09\x01\x00") == [9]


def test_parse_awareness_update_round_trips():
    two = b"\x02" + b"\x05\x01\x02{}" + b"\xac\x02\x03\x04null"
    entries = codec.parse_awareness_update(two)
    assert entries == [(5, 1, b"{}", False), (300, 3, b"null", True)]
    assert codec.encode_awareness_entries(entries) == two
    assert codec.encode_awareness_entries(entries[1:]) == b"\x01\xac\x02\x03\x04null"


def _state(text):
    data = text.encode()
    return b"\x01\x05\x01" + write_var_uint(len(data)) + data


@pytest.mark.parametrize(
    "state,reason",
    [
        ("[" * 100_000 + "]" * 100_000, "awareness state nested too deeply"),
        ('{"a":' * 100_000 + "1" + "}" * 100_000, "awareness state nested too deeply"),
        ("[" * 65 + "]" * 65, "awareness state nested too deeply"),
        ('{"x": NaN}', "awareness state is not JSON"),
        ('{"x": -Infinity}', "awareness state is not JSON"),
    ],
)
def test_hostile_awareness_states_are_protocol_violations(state, reason):
    """Issue 8 item 4: 100,000 levels raised RecursionError (1011 and a traceback)."""
    with pytest.raises(ProtocolViolation) as info:
        codec.parse_awareness_update(_state(state))
    assert (info.value.reason, info.value.close_code) == (reason, 1002)


@pytest.mark.parametrize(
    "state",
    [
        '{"user": "a"}'.encode("utf-16"),  # json.loads(bytes) would detect UTF-16
        '{"user": "a"}'.encode("utf-32-le"),
        b'\xef\xbb\xbf{"user": "a"}',  # a UTF-8 BOM
        b'{"user": "\xed\xa0\x80"}',  # an encoded surrogate
    ],
)
def test_awareness_states_that_are_not_utf8_are_protocol_violations(state):
    """The server keeps and relays states as sent (documents/awareness.py): one that a
    client's readVarString + JSON.parse rejects must not get in, nor reach other clients."""
    data = b"\x01\x05\x01" + write_var_uint(len(state)) + state
    with pytest.raises(ProtocolViolation) as info:
        codec.parse_awareness_update(data)
    assert (info.value.reason, info.value.close_code) == ("awareness state is not JSON", 1002)


def test_an_awareness_state_64_levels_deep_is_accepted():
    assert check_awareness_update(_state("[" * 64 + "]" * 64)) == [5]


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "truncated varint"),
        (b"\x01", "truncated varint"),  # count 1, no entry
        (b"\x01\x05\x01", "truncated varint"),  # no state length
        (AWARENESS_ANN[:-1], "truncated message"),
        (b"\x02" + AWARENESS_ANN[1:], "truncated varint"),  # claims two entries
        (AWARENESS_ANN + b"\x00", "trailing bytes in awareness update"),
        (b"\x01\x05\x01\x03{x}", "awareness state is not JSON"),
        (b"\x01\x05\x01\x02\xff\xfe", "awareness state is not JSON"),
    ],
)
def test_check_awareness_update_rejects(data, reason):
    with pytest.raises(ProtocolViolation) as info:
        codec.parse_awareness_update(data)
    assert info.value.reason == reason
    assert info.value.close_code == 1002


# --- where a Yjs update ends (wsserver/protocol/update.py) ---------------------------

# JS Yjs 13.6 `encodeStateAsUpdate` of a document holding every content type it writes:
# formatted text with an embed and deletions, a map of numbers, a bigint, undefined,
# nested objects, bytes and a subdocument, an XML element with attributes and text, an
# XML hook, an array of mixed values.
UPDATE_EVERY_CONTENT = h(
    "0115ced1f8ed03000601017404626f6c64047472756584ced1f8ed0300016881ced1f8ed03010184ced1f8ed"
    "0302036c6c6f86ced1f8ed030504626f6c64046e756c6cc1ced1f8ed0302ced1f8ed03030346ced1f8ed0300"
    "066974616c6963027b7dc6ced1f8ed0309ced1f8ed0303066974616c6963046e756c6c2801016d0161017d01"
    "2801016d0162017601017875067d017c402000007e77017978740201022801016d03626967017a1000000000"
    "0000002801016d0175017f2801016d036e6567017d452901016d03646f632437653665633638322d64353065"
    "2d346663662d613934312d3931633232616234386136327600070101780301702800ced1f8ed031205636c61"
    "7373017701630700ced1f8ed0312060400ced1f8ed03140374787487ced1f8ed0312050168010101610188ce"
    "d1f8ed031902770374776f76010574687265657d0301ced1f8ed0303020107031901"
)


def _updates_of_every_kind():
    doc = Doc()
    text, attrs = doc.get("t", type=Text), doc.get("m", type=Map)
    text += "hello"
    text.insert(2, "XX", attrs={"bold": True})
    text.insert_embed(1, {"img": "x"})
    attrs.update({"k": 1, "f": 1.5, "n": None, "neg": -12345, "big": 2**40, "b": b"\x00"})
    attrs["nested"] = {"a": [1, {"b": [None, "x" * 300, 3.25]}], "c": {}}
    attrs["sub"], attrs["doc"] = Map({"x": 1}), Doc()
    fragment = doc.get("x", type=XmlFragment)
    fragment.children.append(XmlElement("p", {"class": "c"})).children.append(XmlText("t"))
    updates = [doc.get_update()]
    doc.observe(lambda event: updates.append(event.update))
    del text[0:3]
    attrs["later"] = [1]
    return updates + [UPDATE_EVERY_CONTENT, UPDATE_HELLO, UPDATE_200, codec.EMPTY_UPDATE]


def test_update_end_finds_the_end_of_every_kind_of_update():
    for update in _updates_of_every_kind():
        assert update_end(update) == len(update)
        check_one_update(update)


def test_an_update_with_bytes_after_it_or_cut_short_is_1007():
    for update in _updates_of_every_kind():
        for junk in (b"\x00", b"\x01\x02junk"):
            with pytest.raises(InvalidPayload) as info:
                check_one_update(update + junk)
            assert info.value.reason == "invalid update: trailing bytes after the update"
        for cut in range(len(update)):
            with pytest.raises(InvalidPayload) as info:
                check_one_update(update[:cut])
            assert info.value.close_code == 1007


def test_an_unknown_content_type_is_1007():
    # UPDATE_HELLO with its string item's content ref (4) changed to 11 (yrs' Move)
    with pytest.raises(InvalidPayload):
        check_one_update(UPDATE_HELLO[:4] + b"\x0b" + UPDATE_HELLO[5:])
