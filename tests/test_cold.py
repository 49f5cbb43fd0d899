"""A cold document (issue 27, documents/cold.py): a client joining while the room's copy
is still being built from storage gets its step 2 from storage's state, and only what it
lacks; once built, the room greets it and sends what the copy got meanwhile; a new
client gets the encoded state kept until the document changes. In-process rooms on a
memory store; the build is held on a gate to be "still building"."""

import gevent
import pytest
from gevent.event import Event
from pycrdt import Doc, Text
from test_pending import offline_edits
from test_store import KEY, FakeConnection, content, doc_from, edits, rooms_config

from wsserver.documents import cold, ydoc
from wsserver.documents.manager import DocumentManager
from wsserver.documents.room import STORAGE
from wsserver.documents.storage.memory import MemoryStore
from wsserver.errors import InternalError
from wsserver.protocol import codec


class Conn(FakeConnection):
    def __init__(self, name="c"):
        super().__init__(name)
        self.closed_with = None

    def close(self, error=None):
        self.closed_with = error


def step1(state=cold.EMPTY_STATE):
    return codec.decode(codec.sync_step1(state))


def payload(message, kind):
    decoded = codec.decode(message)
    assert decoded.kind == kind
    return decoded.data


@pytest.fixture
def stored():
    """A memory store holding a snapshot of 200 edits and 2 log rows after it; the
    updates of all 202 edits."""
    store = MemoryStore().start()
    doc, updates = edits(202)
    store.snapshots[KEY] = ydoc.fold(updates[:200])
    for update in updates[200:]:
        store.append(KEY, update, lambda row_id: None)
    assert store.flush(timeout=5)
    yield store, doc, updates
    store.close(timeout=2)


@pytest.fixture
def held_build(monkeypatch):
    """The rooms' builds wait until the returned gate is set."""
    gate = Event()
    build = ydoc.build

    def held(*args, **kwargs):
        gate.wait(10)
        return build(*args, **kwargs)

    monkeypatch.setattr(ydoc, "build", held)
    return gate


def test_a_client_joining_while_the_copy_is_built_is_answered_from_storage(stored, held_build):
    store, doc, updates = stored
    rooms = DocumentManager(store, rooms_config())
    fresh, holder = Conn("fresh"), Conn("holder")
    room = rooms.join(KEY, fresh, early=True)
    assert room.cold.building and not room.ready.ready()
    assert fresh.messages == []  # no step 1 from an empty copy

    room.receive(fresh, step1())
    whole = payload(fresh.messages[-1], codec.KIND_STEP2)
    assert content(doc_from([whole])) == content(doc)

    # A client that holds all but the last edit gets that edit (and the delete set,
    # which Yjs always sends), not the document.
    rooms.join(KEY, holder, early=True)
    has = doc_from(updates[:-1])
    room.receive(holder, step1(has.get_state()))
    lacks = payload(holder.messages[-1], codec.KIND_STEP2)
    assert len(lacks) < len(whole) / 10
    has.apply_update(lacks)
    assert content(has) == content(doc)

    held_build.set()
    room.ready.get(timeout=5)
    assert not room.cold.building
    for conn in (fresh, holder):
        assert conn.messages[-1] == codec.sync_step1(room.doc.get_state())
    assert content(room.doc) == content(doc)


def test_what_the_copy_got_while_built_reaches_those_who_joined_meanwhile(stored, held_build):
    store, doc, _ = stored
    rooms = DocumentManager(store, rooms_config())
    first, later = Conn("first"), Conn("later")
    room = rooms.join(KEY, first, early=True)
    # Another process's update arrives (wsserver/fanout) before `later` joins.
    other = Doc(client_id=999)
    other.apply_update(doc.get_update())
    before = other.get_state()
    other.get("t", type=Text).insert(0, "remote ")
    remote = other.get_update(before)
    room.apply_update(remote, STORAGE)
    rooms.join(KEY, later, early=True)
    room.receive(later, step1())
    seen = doc_from([payload(later.messages[-1], codec.KIND_STEP2)])
    assert content(seen) != content(other)  # storage's state: without the remote edit

    held_build.set()
    room.ready.get(timeout=5)
    for message in later.messages:
        if codec.decode(message).kind == codec.KIND_UPDATE:
            seen.apply_update(codec.decode(message).data)
    assert content(seen) == content(other) == content(room.doc)


def test_a_new_client_gets_the_state_kept_until_the_document_changes(stored, monkeypatch):
    store, doc, updates = stored
    encoded = []
    full_update = ydoc.Unintegrated.full_update

    def counted(self, doc, state=None):
        encoded.append(state)
        return full_update(self, doc, state)

    monkeypatch.setattr(ydoc.Unintegrated, "full_update", counted)
    rooms = DocumentManager(store, rooms_config())
    conn = Conn()
    room = rooms.join(KEY, conn)
    for _ in range(3):
        room.receive(conn, step1())
        assert content(doc_from([payload(conn.messages[-1], codec.KIND_STEP2)])) == content(doc)
    assert encoded == []  # storage's state, kept since the load

    more = Doc(client_id=77)
    more.apply_update(doc.get_update())
    before = more.get_state()
    more.get("t", type=Text).insert(0, "new ")
    room.apply_update(more.get_update(before), conn)
    for _ in range(3):
        room.receive(conn, step1())
        assert content(doc_from([payload(conn.messages[-1], codec.KIND_STEP2)])) == content(more)
    assert encoded == [None]  # encoded once after the change


class BrokenSnapshotStore(MemoryStore):
    def _load(self, key):
        loaded = super()._load(key)
        return loaded._replace(updates=[b"\x01\x02broken"])


def test_those_who_joined_while_a_failing_build_ran_are_closed_with_1011(held_build):
    store = BrokenSnapshotStore().start()
    try:
        rooms = DocumentManager(store, rooms_config())
        conn = Conn()
        room = rooms.join(KEY, conn, early=True)
        held_build.set()
        with pytest.raises(InternalError):
            room.receive(conn, codec.decode(codec.awareness(b"\x00")))
        gevent.sleep(0)
        assert isinstance(conn.closed_with, InternalError)
        assert conn.closed_with.close_code == 1011
        assert len(rooms) == 0
    finally:
        store.close(timeout=2)


def test_a_lone_snapshot_is_not_decoded_again_to_find_pending_parts(monkeypatch):
    # The cold-open regression: every load decoded the snapshot a second time.
    _, updates = edits(50)
    diffs = []
    missing_part = ydoc.missing_part
    monkeypatch.setattr(ydoc, "missing_part", lambda *a: diffs.append(1) or missing_part(*a))
    snapshot = ydoc.fold(updates)
    diffs.clear()
    doc, pending = ydoc.build([snapshot])
    assert diffs == [] and not pending
    assert doc.get_update() == snapshot
    # A snapshot holding a part still pending (its first edit never arrived) is checked,
    # and the part is kept.
    held = ydoc.fold(updates[1:])
    doc, pending = ydoc.build([held])
    assert diffs and pending
    assert content(doc_from([updates[0], pending.full_update(doc)])) == content(doc_from(updates))


class SlowReadStore(MemoryStore):
    """A store whose read takes a while after it took what it returns."""

    def _load(self, key):
        loaded = super()._load(key)
        gevent.sleep(0.1)
        return loaded


def test_an_update_applied_while_storage_was_read_reaches_those_who_joined_meanwhile():
    # Another process's update, stored after the read began and read from the stream
    # before the read returned, is in the copy but not in storage's state.
    store = SlowReadStore().start()
    try:
        doc, updates = edits(20)
        store.snapshots[KEY] = ydoc.fold(updates[:-1])
        rooms = DocumentManager(store, rooms_config())
        conn = Conn()
        joining = gevent.spawn(rooms.join, KEY, conn, True)
        gevent.sleep(0.02)  # the room exists, storage is being read
        rooms.get(KEY).apply_update(updates[-1], STORAGE)
        room = joining.get(timeout=5)
        room.receive(conn, step1())
        room.ready.get(timeout=5)
        seen = Doc()
        for message in conn.messages:
            decoded = codec.decode(message)
            if decoded.kind in (codec.KIND_STEP2, codec.KIND_UPDATE):
                seen.apply_update(decoded.data)
        assert content(seen) == content(doc)
    finally:
        store.close(timeout=2)


def test_a_long_log_with_deletions_reads_the_state_vector_once(monkeypatch):
    # A build checks every run it applied for pending parts against one state: reading
    # that state per run that deletes cost O(clients) of Python each time, most of the
    # load of 100,000 typed rows with deletions (issue 27). The first PROBES runs that
    # delete are asked of Yrs; past them the state is read, once.
    rows = []
    for session in range(4):  # one client each, each deleting every seventh edit
        rows += edits(60, client_id=100 + session)[1]
    u1, _, u3 = offline_edits()  # u3 deletes what u1 inserts, which never came
    reads, probes = [], []
    state_vector, probe = ydoc._state_vector, ydoc._probe
    monkeypatch.setattr(ydoc, "_state_vector", lambda e: reads.append(1) or state_vector(e))
    monkeypatch.setattr(ydoc, "_probe", lambda ends: probes.append(1) or probe(ends))
    monkeypatch.setattr(ydoc, "PROBES", 4)  # fewer than the 13 runs, all deleting
    doc, pending = ydoc.build(rows + [u3])
    assert len(probes) == 4 and len(reads) == 1
    assert len(pending) == 1  # the run holding the pending deletion
    # What the copy hands on (a snapshot, a step 2) carries it: once u1 comes, "AAA"
    # loses two of its three characters.
    assert str(doc_from([pending.full_update(doc), u1]).get("t", type=Text)).count("A") == 1
