"""What a live Yjs document holds but has not integrated yet, and snapshots that keep it.

A Yjs update can arrive before an update it depends on (an offline client, several tabs
of one user, a dependency sent on another connection). Yrs keeps such structs, and
deletions of items it has not seen, *pending* inside the document until the missing
part arrives. But pycrdt's `Doc.get_update()` leaves pending structs and pending
deletions out (JS Yjs's `encodeStateAsUpdate` keeps them), so a snapshot taken from it
would silently drop an update the server already confirmed.

`Unintegrated` keeps, beside a document, the part of each update that the document has
not integrated (the update's diff against the document's state: its structs beyond the
state vector, plus its delete set), and forgets it once the state vector covers it.
Every snapshot, fold and sync step 2 that must hold the whole document merges these
parts back in (`full_update`), so pending content survives compaction, unloading,
restarts and rebuilds until its dependency arrives and it integrates.

Cost: one state-vector read and one diff per applied update (a few microseconds);
checking the delete set is skipped for updates without one (their last byte is 0).
"""

from collections.abc import Iterable, Iterator

from pycrdt import Doc, get_update, merge_updates

from ..protocol.codec import read_var_uint

EMPTY_UPDATE = b"\x00\x00"


def _state_vector(encoded: bytes) -> dict[int, int]:
    """{client: clock} of an encoded state vector."""
    count, pos = read_var_uint(encoded, 0)
    state = {}
    for _ in range(count):
        client, pos = read_var_uint(encoded, pos)
        clock, pos = read_var_uint(encoded, pos)
        state[client] = clock
    return state


def delete_ranges(data: bytes, pos: int) -> Iterator[tuple[int, int, int]]:
    """The ranges of the lib0 v1 delete set at `data[pos:]`: (client, clock, length)."""
    clients, pos = read_var_uint(data, pos)
    for _ in range(clients):
        client, pos = read_var_uint(data, pos)
        ranges, pos = read_var_uint(data, pos)
        for _ in range(ranges):
            clock, pos = read_var_uint(data, pos)
            length, pos = read_var_uint(data, pos)
            yield client, clock, length


def _deletes_beyond(diff: bytes, pos: int, state: dict[int, int]) -> bool:
    """True when the delete set at `diff[pos:]` deletes a clock the state does not cover."""
    return any(
        clock + length > state.get(client, 0) for client, clock, length in delete_ranges(diff, pos)
    )


def missing_part(doc: Doc, update: bytes, encoded_state: bytes | None = None) -> bytes | None:
    """The part of `update` (already applied to `doc`) that `doc` has not integrated,
    as an update; None when it integrated completely."""
    encoded_state = doc.get_state() if encoded_state is None else encoded_state
    diff = get_update(update, encoded_state)
    if diff == EMPTY_UPDATE:
        return None
    structs, pos = read_var_uint(diff, 0)
    if structs:
        return diff  # structs the state vector does not cover: pending
    if diff[-1] == 0:
        return None  # no structs and an empty delete set
    if _deletes_beyond(diff, pos, _state_vector(encoded_state)):
        return diff
    return None


class Unintegrated:
    """The parts of applied updates that a document holds pending (see module doc)."""

    __slots__ = ("parts",)

    def __init__(self):
        self.parts = []

    def __bool__(self):
        return bool(self.parts)

    def __len__(self):
        return len(self.parts)

    def after_apply(self, doc: Doc, update: bytes) -> bytes | None:
        """Record what `doc` did not integrate of `update`, just applied, and forget the
        earlier parts it now covers. Returns the part of `update` left pending, or None."""
        state = doc.get_state()
        if self.parts:
            self.parts = [
                p for p in (missing_part(doc, part, state) for part in self.parts) if p is not None
            ]
        part = missing_part(doc, update, state)
        if part is not None:
            self.parts.append(part)
        return part

    def full_update(self, doc: Doc, state: bytes | None = None) -> bytes:
        """`doc.get_update(state)` plus every pending part: what JS Yjs's
        `encodeStateAsUpdate` gives. A client applying it ends with the same pending
        structs, which integrate once it has (or later gets) their dependency."""
        update = doc.get_update() if state is None else doc.get_update(state)
        if not self.parts:
            return update
        return merge_updates(update, *self.parts)


def build(updates: Iterable[bytes]) -> tuple[Doc, Unintegrated]:
    """(Doc, Unintegrated) of `updates` applied in order. Raises what `apply_update`
    raises for an invalid update."""
    doc = Doc()
    pending = Unintegrated()
    for update in updates:
        doc.apply_update(update)
        pending.after_apply(doc, update)
    return doc, pending


def fold(updates: Iterable[bytes]) -> bytes:
    """One update equal to applying `updates` in order (a snapshot): deleted content
    garbage-collected as a Yjs document does, pending structs and deletes kept."""
    doc, pending = build(updates)
    return pending.full_update(doc)
