"""Where a Yjs update (v1 encoding) ends: an update must be exactly one update.

Yrs, like JS Yjs, reads an update from its start and ignores whatever follows its
delete set, so a valid update with junk behind it was applied, stored with the junk,
and sent on to every client. `check_one_update` walks the layout without decoding
anything (lengths and counts only; yrs checks the content when it applies it) and
refuses bytes left over, or an update cut short, with InvalidPayload (1007 on a socket,
400 over HTTP).

    update     = varUint(clients) { varUint(structs) varUint(client) varUint(clock)
                                    struct* }  deleteSet
    struct     = info:uint8, then by info & 0x1f: 0 GC / 10 Skip: varUint(length);
                 else an item: [origin id] [right origin id] [parent] [parentSub] content
    deleteSet  = varUint(clients) { varUint(client) varUint(ranges) {varUint varUint} }

Cost: one pass of Python over the structs' headers (a string's text is skipped by its
length), in one function for what most updates hold (numbers read inline: a varUint is
almost always one byte, taken there, read_var_uint beyond; an id's client and clock
are stepped over, and read only when long enough to be out of bounds, below): a call
per number and per struct made the walk of a typed character twice as slow, so only
ids, rare contents and a non-empty delete set cost a call. About 1 µs for a typed
character and about 1.3 µs per struct beyond (1,000 items with origins: 1.3 ms; best of
7 on the development VM; the bounds below added 15 % and 30 %). Updates from storage or from
other processes were checked where they came in and are not checked again
(documents/room.py).

Numbers that Yrs and JS Yjs would read differently are refused too (InvalidPayload): a
client id of 2^53 or more (Yrs masks it to 53 bits, JS Yjs reads a number beyond its
safe integers) and a clock or length of 2^32 or more (Yrs wraps it to 32 bits). The
server would hold another document than its clients: client 2^53 + X is client X to
Yrs. Only a number long enough to be one is read (8 bytes for an id, 5 for a clock);
no Yjs client writes them (its ids are 32-bit, a clock counts one client's edits).

Checked against every struct and content class JS Yjs writes and what pycrdt writes
(tests/test_update_check.py). Two things Yjs writes that yrs reads otherwise, where
this walk follows Yjs: an XmlHook's name after its type ref (yrs does not read it) and
a legacy ContentJSON's count (yrs reads one string more).
"""

from __future__ import annotations

from ..errors import InvalidPayload, ProtocolViolation
from .codec import read_var_uint

# The largest client id and clock both Yrs and JS Yjs read as written (module doc).
MAX_CLIENT = 2**53 - 1
MAX_CLOCK = 2**32 - 1
# An id's numbers: (bytes a varUint may take and be in bounds for sure, the bound).
_ID = ((7, MAX_CLIENT), (4, MAX_CLOCK))
# Item content refs (info & 0x1f), numbered as JS Yjs's `contentRefs`.
_DELETED, _JSON, _BINARY, _STRING, _EMBED, _FORMAT, _TYPE, _ANY, _DOC = range(1, 10)
_GC, _SKIP = 0, 10
# Type refs whose content carries a name (an XML element's node name, a hook's name).
_NAMED_TYPES = (3, 5)
# lib0 `writeAny` tags.
_ANY_FIXED = {127: 0, 126: 0, 121: 0, 120: 0, 124: 4, 123: 8, 122: 8}
_ANY_INT, _ANY_STRING, _ANY_OBJECT, _ANY_ARRAY, _ANY_BYTES = 125, 119, 118, 117, 116


def check_one_update(update: bytes) -> None:
    """InvalidPayload unless `update` is one whole v1 update and nothing more."""
    try:
        end = update_end(update)
    except (ProtocolViolation, IndexError):
        raise InvalidPayload("invalid update: cut short or malformed") from None
    if end != len(update):
        raise InvalidPayload("invalid update: trailing bytes after the update")


def update_end(data: bytes, pos: int = 0) -> int:
    """The position right after the v1 update starting at `pos`. Raises
    ProtocolViolation or IndexError for data that ends inside it, InvalidPayload for a
    content type Yjs does not have. Inlined on purpose: see "Cost" in the module doc."""
    clients = data[pos]
    pos += 1
    if clients > 0x7F:
        clients, pos = read_var_uint(data, pos - 1)
    for _ in range(clients):
        structs = data[pos]
        pos += 1
        if structs > 0x7F:
            structs, pos = read_var_uint(data, pos - 1)
        pos = _id_end(data, pos)  # the first struct's (client, clock)
        for _ in range(structs):
            info = data[pos]
            pos += 1
            ref = info & 0x1F
            if ref == _GC or ref == _SKIP:
                pos = _at_most(data, pos, MAX_CLOCK)  # its length
                continue
            if info & 0xC0:  # origin, right origin
                ids = (info >> 7) + (info >> 6 & 1)
            else:  # no origin to take the parent from: it is written out
                named = data[pos]
                pos += 1
                if named > 0x7F:
                    named, pos = read_var_uint(data, pos - 1)
                ids = named != 1  # a root type's name, else the parent's id
                if not ids:
                    pos = _skip_bytes(data, pos)
            for _ in range(ids):
                pos = _id_end(data, pos)
            if info & 0x20 and not info & 0xC0:
                pos = _skip_bytes(data, pos)  # parentSub: the key in a map
            if ref == _STRING or ref == _BINARY or ref == _EMBED:
                pos = _skip_bytes(data, pos)
            elif ref == _ANY:
                pos = _any_end(data, pos)
            elif ref == _FORMAT:
                pos = _skip_bytes(data, _skip_bytes(data, pos))  # key, JSON value
            else:
                pos = _content_end(data, pos, ref)
    if data[pos] == 0:  # an empty delete set (what an insertion carries): no call
        return pos + 1
    return _delete_set_end(data, pos)


def _content_end(data: bytes, pos: int, ref: int) -> int:
    """The end of an item's content of kind `ref`, for the kinds fewer structs carry
    (deleted, a type, legacy JSON, a subdocument) than `update_end` walks itself."""
    if ref == _DELETED or ref == _TYPE:
        kind = data[pos]
        pos += 1
        if kind > 0x7F:
            kind, pos = read_var_uint(data, pos - 1)
        if ref == _TYPE and kind in _NAMED_TYPES:
            pos = _skip_bytes(data, pos)
    elif ref == _JSON:
        count, pos = read_var_uint(data, pos)
        for _ in range(count):
            pos = _skip_bytes(data, pos)
    elif ref == _DOC:
        pos = _any_end(data, _skip_bytes(data, pos), 1)  # guid, options
    else:
        raise InvalidPayload(f"invalid update: unknown content type {ref}")
    return pos


def _delete_set_end(data: bytes, pos: int) -> int:
    """The end of the delete set at `pos`. Its count is read inline as in `update_end`:
    a deletion then costs no more calls than when this walk was one function."""
    clients = data[pos]
    pos += 1
    if clients > 0x7F:
        clients, pos = read_var_uint(data, pos - 1)
    for _ in range(clients):
        pos = _at_most(data, pos, MAX_CLIENT)
        ranges, pos = read_var_uint(data, pos)
        for _ in range(2 * ranges):
            pos = _at_most(data, pos, MAX_CLOCK)  # a clock, a length
    return pos


def _id_end(data: bytes, pos: int) -> int:
    """The end of the (client, clock) id at `pos`, both within bounds (module doc): a
    number is read only when it is long enough to be out of them."""
    for long, largest in _ID:  # client, clock
        start = pos
        while data[pos] > 0x7F:
            pos += 1
        pos += 1
        if pos - start > long:
            _at_most(data, start, largest)
    return pos


def _at_most(data: bytes, pos: int, largest: int) -> int:
    """The end of the varUint at `pos`; InvalidPayload when it is over `largest`
    (MAX_CLIENT for a client id, MAX_CLOCK for a clock or a length; module doc)."""
    number, pos = read_var_uint(data, pos)
    if number > largest:
        what = "client id" if largest == MAX_CLIENT else "clock"
        raise InvalidPayload(f"invalid update: a {what} Yjs clients cannot read")
    return pos


def _skip_bytes(data, pos):
    length = data[pos]
    if length < 0x80:  # the usual one-byte length, without a call
        pos += 1 + length
    else:
        length, pos = read_var_uint(data, pos)
        pos += length
    if pos > len(data):
        raise IndexError("cut short")
    return pos


def _any_end(data: bytes, pos: int, count: int = -1) -> int:
    """The end of `count` lib0 `any` values from `pos` (by default, of a ContentAny:
    its count, then the values). Iterative: nesting depth costs no recursion."""
    if count < 0:
        count = data[pos]
        pos += 1
        if count > 0x7F:
            count, pos = read_var_uint(data, pos - 1)
    stack = [[False, count]]  # [inside an object (keys before values), values left]
    while stack:
        top = stack[-1]
        if not top[1]:
            stack.pop()
            continue
        top[1] -= 1
        if top[0]:
            pos = _skip_bytes(data, pos)  # the key
        tag = data[pos]
        pos += 1
        if tag in _ANY_FIXED:
            pos += _ANY_FIXED[tag]
        elif tag == _ANY_INT:  # lib0 varInt: ends at a byte below 0x80
            while data[pos] & 0x80:
                pos += 1
            pos += 1
        elif tag in (_ANY_STRING, _ANY_BYTES):
            pos = _skip_bytes(data, pos)
        elif tag in (_ANY_OBJECT, _ANY_ARRAY):
            length, pos = read_var_uint(data, pos)
            stack.append([tag == _ANY_OBJECT, length])
        else:
            raise InvalidPayload(f"invalid update: unknown value tag {tag}")
    if pos > len(data):
        raise IndexError("cut short")
    return pos
