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
`build` (a load, a rebuild, a fold) checks once, after applying everything; a lone
snapshot that re-encodes to itself is not checked (nothing of it can be pending).
"""

import os
from collections.abc import Callable, Iterable, Iterator

from pycrdt import Doc, get_update, merge_updates

from ..protocol.codec import read_var_uint

EMPTY_UPDATE = b"\x00\x00"
EMPTY_STATE = b"\x00"  # the state vector of an empty document
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


def _deletes_beyond(diff: bytes, pos: int, state: dict[int, int]) -> bool:
    """True when the delete set at `diff[pos:]` deletes a clock the state does not cover."""
    return any(
        clock + length > state.get(client, 0) for client, clock, length in delete_ranges(diff, pos)
    )


class _Clocks:
    """An encoded state vector read into {client: clock} once, when first needed: only
    an update that deletes needs it, and `after_apply_all` checks many updates against
    one state. Read per update that deletes, it cost O(clients) of Python each time:
    266 of the 355 ms of CPU that building 100,000 rows of one typed character each
    took on the 2-core development VM (100 sessions, 1 row in 30 a deletion)."""

    __slots__ = ("encoded", "_read")

    def __init__(self, encoded: bytes) -> None:
        self.encoded = encoded
        self._read: dict[int, int] | None = None

    def read(self) -> dict[int, int]:
        if self._read is None:
            self._read = _state_vector(self.encoded)
        return self._read


def missing_part(
    doc: Doc, update: bytes, encoded_state: bytes | None = None, clocks: _Clocks | None = None
) -> bytes | None:
    """The part of `update` (already applied to `doc`) that `doc` has not integrated,
    as an update; None when it integrated completely. `clocks`: `encoded_state` as
    `_Clocks`, shared by the checks of many updates against one state."""
    encoded_state = doc.get_state() if encoded_state is None else encoded_state
    diff = get_update(update, encoded_state)
    if diff == EMPTY_UPDATE:
        return None
    structs, pos = read_var_uint(diff, 0)
    if structs:
        return diff  # structs the state vector does not cover: pending
    if diff[-1] == 0:
        return None  # no structs and an empty delete set
    clocks = _Clocks(encoded_state) if clocks is None else clocks
    if _deletes_beyond(diff, pos, clocks.read()):
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
        state = doc.get_state()
        clocks = _Clocks(state)
        if self.parts:
            self.parts = [
                p
                for p in (missing_part(doc, part, state, clocks) for part in self.parts)
                if p is not None
            ]
        parts = [p for p in (missing_part(doc, u, state, clocks) for u in updates) if p is not None]
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
