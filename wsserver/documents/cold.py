"""A document's whole state as one encoded update: storage's while its room is still
being built (the answer to a client joining a cold document), then the live copy's,
kept while nothing changes it.

Building a room's copy holds the process: pycrdt keeps the GIL while it applies a
stored snapshot (about 150-200 ms for the 4.2 MB snapshot of 100,000 edits of issue 27
on the 2-core development VM), and the check for pending parts (ydoc.Unintegrated)
then decodes the snapshot once more, about a quarter on top (the cold-open regression
of issue 27: added with the pending parts in a693ffc). A joiner's first step 2 needs
no built copy: storage holds the whole document as one update already (a compacted
snapshot, with a few log rows merged in), and the answer to a state vector is a diff
of that update (`pycrdt.get_update`, nothing integrated). So `Room.load` offers it
here before it builds (`stored`); connections that join meanwhile (`joined`) have their
step 1s answered from it (`receive`); the build starts once those answers have left
(`let_answers_go`); then the room greets them as any joiner and sends them what the
copy got meanwhile besides storage's state (`loaded`).

A snapshot with up to EARLY_ROWS log rows after it (what a crash leaves with the default
compaction threshold) is merged once for the early answers. A longer log (thresholds
raised, then a crash: 100,000 rows in the `cold-log` bench) is not, though merging it
need not cost much: in groups of up to ~100 (`merge_updates` is quadratic in the number
it is given), then the groups' results likewise, the bench's 100,000 typed rows merge in
~90 ms of CPU on the 2-core development VM, against ~135 ms to build the copy. But a
merge keeps every row's item apart, where a document squashes a session's typed
characters into one: 3.2 MB of 100,000 structs against the copy's 2.3 MB of ~100, and
Yjs integrates them one by one (110-175 ms to apply against 1-6 ms). Answered from the
merge, the bench's joiner had its step 2 ~35 ms sooner and its document ~110 ms later
(issue 27, 2026-12-07). So a long log's joiners wait for the build as before.

After the load, the same bytes are the live copy's full state for as long as nothing
is applied to it: an empty state vector (every new joiner) is answered with them, and
`full_update` encodes the document once per change instead of once per joiner.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import gevent
from gevent.event import AsyncResult, Event
from pycrdt import Doc, get_state, get_update, merge_updates

from ..errors import InternalError, ProtocolViolation
from ..protocol import codec
from ..support.wait import wait_until
from .ydoc import EMPTY_STATE, EMPTY_UPDATE, Unintegrated

if TYPE_CHECKING:
    from ..protocol.codec import Message
    from ..transport.connection import Connection

# At most this many log rows are merged with the snapshot for the early answers: more
# than a crash leaves with the default compaction threshold (500 rows). Merging costs
# about one decoding of the snapshot (~60 ms for issue 27's 4.2 MB with 0 to 2,000 rows),
# against ~200 ms to build the copy.
EARLY_ROWS = 1000
# The longest a load waits for the early answers to be written before it builds the
# copy (which holds the process), and of that, for the step 1s of those who joined to
# arrive (a client may send none).
EARLY_WAIT = 0.5
EARLY_STEP1_WAIT = 0.05


class ColdState:
    """See the module doc. One per room."""

    __slots__ = (
        "update",
        "available",
        "early",
        "answered",
        "version",
        "_encoded",
    )

    def __init__(self) -> None:
        # Storage's state of the document while the room is built, else None.
        self.update: bytes | None = None
        # Set once `stored` ran: joiners stop waiting for storage (manager.py).
        self.available = Event()
        # While the copy is built from `update`: who joined meanwhile, and who of them
        # had a step 1 answered.
        self.early: list[Connection] | None = None
        self.answered: set[Connection] = set()
        self.version = 0  # counts the changes applied to the live copy (`changed`)
        self._encoded: tuple[Doc, int, bytes] | None = None  # (doc, version, full update)

    @property
    def building(self) -> bool:
        """The copy is being built and storage's state answers the joiners."""
        return self.early is not None

    def stored(self, updates: list[bytes], rows: int) -> bool:
        """Offer what storage holds (`Loaded.updates`, the last `rows` of them log rows);
        True when step 1s are answered from it (`building`) until `loaded`."""
        if updates and rows <= EARLY_ROWS:
            self.update = updates[0] if len(updates) == 1 else merge_updates(*updates)
            self.early = []
        self.available.set()
        return self.update is not None

    def joined(self, conn: Connection) -> None:
        self.early.append(conn)  # type: ignore[union-attr]

    def receive(self, conn: Connection, message: Message, ready: AsyncResult) -> bool:
        """While `building`: a step 1 is answered from storage's state (True; only what
        the client lacks, ProtocolViolation for an invalid state vector); any other
        message waits until the copy is built (`ready`: False then; InternalError, 1011,
        when the load failed)."""
        if message.kind == codec.KIND_STEP1 and self.update is not None:
            try:
                state = message.data
                update = self.update if state == EMPTY_STATE else get_update(self.update, state)
            except ValueError:
                raise ProtocolViolation("invalid state vector") from None
            conn.send_message(codec.sync_step2(update))
            self.answered.add(conn)
            return True
        try:
            ready.get()
        except Exception as e:
            raise InternalError("document could not be loaded") from e
        return False

    def let_answers_go(self) -> None:
        """Yield to the joiners that were waiting for storage, then until each has had
        its step 1 answered (EARLY_STEP1_WAIT at most) and the answers are written
        (EARLY_WAIT in all at most)."""
        gevent.sleep(0)
        early = self.early or []
        start = time.monotonic()
        wait_until(lambda: all(c in self.answered for c in early), EARLY_STEP1_WAIT, 0.001)
        left = EARLY_WAIT - (time.monotonic() - start)
        wait_until(lambda: not any(c.sending for c in early), left, 0.001)

    def changed(self) -> None:
        """The live copy changed: the encoded state kept is stale."""
        self.version += 1

    def loaded(self, doc: Doc, pending: Unintegrated) -> tuple[list[Connection], bytes | None]:
        """The copy is built: (who joined meanwhile, what was applied to the copy besides
        storage's state meanwhile (another process's updates) or None). Keeps storage's
        state as the copy's encoded state when nothing was."""
        early, self.update = self.update, None
        joined, self.early = self.early or [], None
        self.answered.clear()
        if early is None:
            return joined, None
        # Anything applied since the room was made (another process's updates: its
        # stream is read from before storage is) may be missing from storage's state,
        # which may have been read before it was committed.
        if self.version == 0:
            self._encoded = (doc, self.version, early)
            return joined, None
        missed = pending.full_update(doc, get_state(early))
        return joined, (missed if missed != EMPTY_UPDATE else None)

    def failed(self) -> None:
        """The load failed: those who joined meanwhile are closed (1011)."""
        joined, self.early, self.update = self.early or [], None, None
        self.answered.clear()
        for conn in joined:
            conn.close(InternalError("document could not be loaded"))

    def step2(self, doc: Doc, pending: Unintegrated, state: bytes) -> bytes:
        """Once built: the update a client holding `state` lacks; a new client's is the
        state kept (`full_update`). ValueError for an invalid state vector."""
        if state == EMPTY_STATE:
            return self.full_update(doc, pending)
        return pending.full_update(doc, state)

    def full_update(self, doc: Doc, pending: Unintegrated) -> bytes:
        """`pending.full_update(doc)`, encoded once per change of `doc`."""
        kept = self._encoded
        if kept is not None and kept[0] is doc and kept[1] == self.version:
            return kept[2]
        update = pending.full_update(doc)
        self._encoded = (doc, self.version, update)
        return update
