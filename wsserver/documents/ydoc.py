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

Cost: one state-vector read and one diff per applied update (a few microseconds on a
document of 100 client ids, both in Yrs and O(clients): about 0.5 ms at 10,000). An
update that deletes costs about as much: its delete set is checked against the clocks
of the clients it names by asking Yrs (`_Clocks`), not by reading the state vector
into Python (about 1 µs a client), and an update of deletions only needs no diff
unless some of it is pending. Only checks of more than PROBES delete sets against one
state (a build, or that many pending parts) read the state vector, once.
`build` (a load, a rebuild, a fold) checks once, after applying everything; a lone
snapshot that re-encodes to itself is not checked (nothing of it can be pending).
"""

import os
from collections.abc import Callable, Iterable, Iterator

from pycrdt import Doc, get_update, merge_updates, write_var_uint

from ..protocol.codec import read_var_uint
from ..protocol.update import MAX_CLOCK

EMPTY_UPDATE = b"\x00\x00"
EMPTY_STATE = b"\x00"  # the state vector of an empty document
# How many delete sets `_Clocks` asks Yrs about before it reads the state vector into a
# dict instead: a question costs about 1/80 of a read on a large document, so a build
# asking many pays at most about 1.4 reads.
PROBES = 32
# `build` merges runs of up to RUN small updates (each under RUN_BYTES) and applies each
# run as one. Yrs recounts the length of the item a typed character is squashed into at
# every commit, so 100,000 typed updates applied one by one cost seconds (quadratic in a
# session's text); merged in runs of 20 about 10x less. Longer runs cost more again:
# merging is quadratic in the number of updates merged.
RUN = 20
RUN_BYTES = 64 * 1024
# `build` calls `pause()` (when given) after about this many updates: yrs holds the GIL,
# so this bounds how long a large load stalls every other greenlet (a few ms).
PAUSE_EVERY = 2000


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


def _delete_ends(data: bytes, pos: int) -> dict[int, int]:
    """{client: the end of the last clock it deletes} of the delete set at `data[pos:]`.
    A range deletes a clock the state does not cover exactly when its end is beyond
    the client's clock, so the largest end per client decides for all its ranges."""
    ends: dict[int, int] = {}
    for client, clock, length in delete_ranges(data, pos):
        if clock + length > ends.get(client, 0):
            ends[client] = clock + length
    return ends


def _probe(ends: dict[int, int]) -> bytes:
    """An update of one GC struct per client, covering clocks 0 to its end: its diff
    against a state vector is empty exactly when the state covers every end."""
    parts = [write_var_uint(len(ends))]
    for client, end in ends.items():
        # 1 struct of `client` from clock 0: a GC (info byte 0) of length `end`
        parts += (b"\x01", write_var_uint(client), b"\x00\x00", write_var_uint(end))
    parts.append(b"\x00")  # an empty delete set
    return b"".join(parts)


class _Clocks:
    """An encoded state vector, asked whether it covers the clocks a delete set deletes.

    The first PROBES questions go to Yrs (`_probe`): Python handles only the clients
    the delete set names, and Yrs decodes the state vector, about 13 ns a client on
    the 2-core development VM. From then on the state is read into {client: clock}
    once (`read`), about 1 µs a client of Python: 0.6-1.1 ms a deletion on a document
    of 1,000 client ids, read per update, and 266 of the 355 ms of CPU that building
    100,000 rows of one typed character each took (100 sessions, 1 row in 30 a
    deletion). A live update is one question (or a few, with pending parts); a build
    asks once per run that deletes, so a long log reads the state once."""

    __slots__ = ("encoded", "_read", "_probes")

    def __init__(self, encoded: bytes) -> None:
        self.encoded = encoded
        self._read: dict[int, int] | None = None
        self._probes = 0

    def read(self) -> dict[int, int]:
        if self._read is None:
            self._read = _state_vector(self.encoded)
        return self._read

    def deletes_beyond(self, data: bytes, pos: int) -> bool:
        """True when the delete set at `data[pos:]` deletes a clock the state does not
        cover."""
        ends = _delete_ends(data, pos)
        if not ends:
            return False
        if self._read is None and self._probes < PROBES:
            self._probes += 1
            if max(ends.values()) > MAX_CLOCK:
                return True  # beyond any state; Yrs would wrap such a length (u32)
            return get_update(_probe(ends), self.encoded) != EMPTY_UPDATE
        state = self.read()
        return any(end > state.get(client, 0) for client, end in ends.items())


def missing_part(doc: Doc, update: bytes, clocks: _Clocks | None = None) -> bytes | None:
    """The part of `update` (already applied to `doc`) that `doc` has not integrated,
    as an update; None when it integrated completely. `clocks`: `doc`'s state vector,
    shared by the checks of many updates against one state."""
    clocks = _Clocks(doc.get_state()) if clocks is None else clocks
    encoded_state = clocks.encoded
    structs, pos = read_var_uint(update, 0)
    if not structs:
        # Deletions only: the diff would be the update's own delete set, so ask about
        # that and make the diff only when something of it is pending.
        if clocks.deletes_beyond(update, pos):
            return get_update(update, encoded_state)
        return None
    diff = get_update(update, encoded_state)
    if diff == EMPTY_UPDATE:
        return None
    structs, pos = read_var_uint(diff, 0)
    if structs:
        return diff  # structs the state vector does not cover: pending
    if clocks.deletes_beyond(diff, pos):
        return diff
    return None


class Unintegrated:
    """The parts of applied updates that a document holds pending (see module doc)."""

    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def __bool__(self) -> bool:
        return bool(self.parts)

    def __len__(self) -> int:
        return len(self.parts)

    def after_apply(self, doc: Doc, update: bytes) -> bytes | None:
        """Record what `doc` did not integrate of `update`, just applied, and forget the
        earlier parts it now covers. Returns the part of `update` left pending, or None."""
        parts = self.after_apply_all(doc, [update])
        return parts[0] if parts else None

    def after_apply_all(self, doc: Doc, updates: Iterable[bytes]) -> list[bytes]:
        """`after_apply` of several updates, all applied already: one state-vector read.
        Returns the parts of `updates` left pending."""
        clocks = _Clocks(doc.get_state())
        if self.parts:
            self.parts = [
                p for p in (missing_part(doc, part, clocks) for part in self.parts) if p is not None
            ]
        parts = [p for p in (missing_part(doc, u, clocks) for u in updates) if p is not None]
        self.parts.extend(parts)
        return parts

    def full_update(self, doc: Doc, state: bytes | None = None) -> bytes:
        """`doc.get_update(state)` plus every pending part: what JS Yjs's
        `encodeStateAsUpdate` gives. A client applying it ends with the same pending
        structs, which integrate once it has (or later gets) their dependency."""
        update = doc.get_update() if state is None else doc.get_update(state)
        if not self.parts:
            return update
        return merge_updates(update, *self.parts)


def is_panic(error: BaseException) -> bool:
    """Whether `error` is a Rust panic in pycrdt (pyo3's PanicException, a BaseException
    that no `except Exception` catches)."""
    return type(error).__name__ == "PanicException"


def no_panic_backtraces() -> None:
    """Turn off the backtrace Rust prints on a panic, for the panics of this process
    from now on (Rust reads RUST_BACKTRACE at the first panic).

    With RUST_BACKTRACE=1 (or `full`) in the environment, a pycrdt panic in a greenlet
    killed the process (SIGSEGV, about a second after the panic, once the symbols were
    read): the backtrace walker follows the greenlet's stack past its base, into
    memory gevent's stack switching has reused. The panic itself is survivable
    (is_panic; errors.CrdtPanic); its message and the Python traceback are still logged.
    """
    os.environ["RUST_BACKTRACE"] = "0"


def warm_up() -> None:
    """Make and drop one Doc, so that the first document a client opens does not pay for
    pycrdt's first: anyio's lock in every Doc looks for a running event loop, which
    imports asyncio the first time (7 ms on the development VM with bytecode cached,
    more on a cold dyno), a stall of the whole process in the middle of a connect burst."""
    Doc()


def _runs(updates: Iterable[bytes]) -> Iterator[list[bytes]]:
    """`updates` in order, cut into runs of at most RUN updates under RUN_BYTES each; a
    larger update (a snapshot) is a run of its own."""
    run: list[bytes] = []
    for update in updates:
        if len(update) >= RUN_BYTES:
            if run:
                yield run
                run = []
            yield [update]
            continue
        run.append(update)
        if len(run) == RUN:
            yield run
            run = []
    if run:
        yield run


def build(
    updates: Iterable[bytes],
    doc: Doc | None = None,
    pending: Unintegrated | None = None,
    pause: Callable[[], object] | None = None,
) -> tuple[Doc, Unintegrated]:
    """(Doc, Unintegrated) of `updates` applied in order, to `doc` and `pending` when
    given (a room's, which may hold updates already), else to new ones.

    Runs of small updates are merged and applied as one (see RUN); what is left pending
    is checked once at the end, which gives the same parts as checking every update.
    `pause()` runs every PAUSE_EVERY updates or so. Raises ValueError (undecodable) or
    RuntimeError (a Rust error or panic) for an invalid update; `doc` may then hold
    part of `updates`.
    """
    doc = Doc() if doc is None else doc
    pending = Unintegrated() if pending is None else pending
    fresh = not pending and doc.get_state() == EMPTY_STATE
    applied = []
    since_pause = 0
    try:
        for run in _runs(updates):
            update = run[0] if len(run) == 1 else merge_updates(*run)
            doc.apply_update(update)
            applied.append(update)
            since_pause += len(run)
            if pause is not None and since_pause >= PAUSE_EVERY:
                since_pause = 0
                pause()
    except BaseException as e:
        if is_panic(e):
            raise RuntimeError("pycrdt panicked applying an update") from e
        raise
    if fresh and len(applied) == 1 and doc.get_update() == applied[0]:
        # A lone snapshot this server wrote, into an empty document: re-encoded, the copy
        # is that snapshot byte for byte, so nothing of it is pending. Encoding costs a
        # third of the diff below (18 against ~60 ms for a 4.2 MB snapshot), which
        # decodes the whole snapshot again.
        return doc, pending
    pending.after_apply_all(doc, applied)
    return doc, pending


def fold(updates: Iterable[bytes]) -> bytes:
    """One update equal to applying `updates` in order (a snapshot): deleted content
    garbage-collected as a Yjs document does, pending structs and deletes kept."""
    doc, pending = build(updates)
    return pending.full_update(doc)
