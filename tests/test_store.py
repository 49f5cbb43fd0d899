"""Storage (wsserver/documents/storage) and the room lifecycle on top of it
(wsserver/documents/manager.py): group commits, retries, compaction keeping content
equal, and shared loads. Every store test runs against the in-memory store, SQLite and
a real Postgres (tests/conftest.py starts one)."""

import sqlite3
import threading
import time
from types import SimpleNamespace

import gevent
import pytest
from pycrdt import Doc, Map, Text

from wsserver.documents import DocKey, ydoc
from wsserver.documents.manager import DocumentManager
from wsserver.documents.storage import Loaded, StoreError, open_store
from wsserver.documents.storage.memory import MemoryStore
from wsserver.documents.storage.postgres import PostgresStore
from wsserver.documents.storage.sqlite import SQLiteStore
from wsserver.protocol import codec

KEY = DocKey("acme", "editor", "doc")
OTHER = DocKey("acme", "notes", "doc")


def _stores(request, tmp_path):
    """Makes started stores of the parametrized kind; closes them all at the end. Each
    call opens the same database (SQLite file, Postgres database), as a restarted
    process or a second process sharing it would; `flaky=True`: see `Flaky`."""
    made = []
    target = None
    if request.param == "sqlite":
        target = str(tmp_path / "db.sqlite3")
    elif request.param == "postgres":
        target = request.getfixturevalue("pg_url")

    def make(flaky=False):
        cls = (FLAKY if flaky else PLAIN)[request.param]
        store = cls() if target is None else cls(target)
        made.append(store.start())
        return store

    make.kind = request.param
    yield make
    for store in made:
        store.close(timeout=2)  # a no-op for a store the test closed


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store_factory(request, tmp_path):
    yield from _stores(request, tmp_path)


@pytest.fixture(params=["sqlite", "postgres"])
def durable_factory(request, tmp_path):
    """`store_factory` for the stores that keep data across a reopen."""
    yield from _stores(request, tmp_path)


def stored_rows(store, key):
    """Log rows of `key` as the database itself holds them."""
    if isinstance(store, SQLiteStore):
        return (
            sqlite3.connect(store.path)
            .execute("SELECT count(*) FROM updates WHERE tenant=? AND app=? AND name=?", key)
            .fetchone()[0]
        )
    if isinstance(store, PostgresStore):
        import psycopg

        with psycopg.connect(store.url) as conn:
            return conn.execute(
                "SELECT count(*) FROM wsserver_updates WHERE tenant=%s AND app=%s AND name=%s", key
            ).fetchone()[0]
    return len(store.logs[key])


def edits(n, client_id=11):
    """A pycrdt doc edited `n` times; returns (doc, [update per edit])."""
    doc = Doc(client_id=client_id)
    text = doc.get("t", type=Text)
    meta = doc.get("m", type=Map)
    updates = []
    doc.observe(lambda event: updates.append(event.update))
    for i in range(n):
        if i % 7 == 3 and len(text) > 4:
            del text[1:3]
        else:
            text.insert(len(text) // 2, f"<{i}>")
        if i % 5 == 0:
            meta[f"k{i % 3}"] = i
    return doc, updates


def content(doc):
    return str(doc.get("t", type=Text)), dict(doc.get("m", type=Map).to_py() or {})


def doc_from(updates):
    doc = Doc()
    for update in updates:
        doc.apply_update(update)
    return doc


def append_all(store, key, updates):
    durable = []
    for u in updates:
        store.append(key, u, durable.append)
    assert store.flush(timeout=10)
    return durable


# --- the pipeline ---------------------------------------------------------------------


def test_append_calls_on_durable_with_increasing_ids(store_factory):
    store = store_factory()
    calls = []
    for i in range(20):
        key = KEY if i % 2 else OTHER
        store.append(key, bytes([i]) * 3, lambda row_id, i=i: calls.append((i, row_id)))
    assert calls == []  # nothing is durable before the committer ran
    assert store.flush(timeout=10)
    assert [i for i, _ in calls] == list(range(20))  # in append order, each once
    ids = [row_id for _, row_id in calls]
    assert ids == sorted(ids) and len(set(ids)) == 20


def test_load_returns_updates_in_order_per_document(store_factory):
    store = store_factory()
    _, updates = edits(30)
    _, other = edits(5, client_id=12)
    for i, a in enumerate(updates):
        store.append(KEY, a, lambda _: None)
        if i < len(other):
            store.append(OTHER, other[i], lambda _: None)
    assert store.flush(timeout=10)
    loaded = store.load(KEY)
    assert [bytes(u) for u in loaded.updates] == updates
    assert loaded.log_count == len(updates)
    assert loaded.log_bytes == sum(map(len, updates))
    assert [bytes(u) for u in store.load(OTHER).updates] == other
    assert store.load(DocKey("acme", "editor", "missing")) == Loaded([], 0, 0, 0)


def test_last_id_is_the_last_durable_row(store_factory):
    store = store_factory()
    ids = append_all(store, KEY, [b"a", b"b", b"c"])
    assert store.load(KEY).last_id == ids[-1]


def test_store_compact_keeps_content_and_removes_log_rows(store_factory):
    store = store_factory()
    doc, updates = edits(200)
    ids = append_all(store, KEY, updates[:150])
    # the snapshot covers rows up to ids[-1]; the remaining updates arrive afterwards
    store.compact(KEY, ids[-1])
    later = append_all(store, KEY, updates[150:])
    loaded = store.load(KEY)
    rest = len(updates) - 150
    assert rest > 40
    assert len(loaded.updates) == 1 + rest  # snapshot + the rows after it
    assert loaded.log_count == rest
    assert loaded.last_id == later[-1]
    assert content(doc_from(loaded.updates)) == content(doc)
    assert stored_rows(store, KEY) == rest


def test_compaction_leaves_other_documents_alone(store_factory):
    store = store_factory()
    doc, updates = edits(4)
    _, others = edits(3, client_id=22)
    append_all(store, KEY, updates)
    other_ids = append_all(store, OTHER, others)
    store.compact(KEY, other_ids[-1])  # an upto beyond every row of KEY
    loaded = store.load(KEY)
    assert loaded.log_count == 0 and len(loaded.updates) == 1
    assert content(doc_from(loaded.updates)) == content(doc)
    assert [bytes(u) for u in store.load(OTHER).updates] == others


def test_compaction_folds_rows_another_process_wrote(store_factory):
    """The snapshot comes from storage, not from one process's copy: an update that only
    another process (sharing the store) has seen survives this process's compaction."""
    store = store_factory()
    mine, updates = edits(5)
    theirs = Doc()
    theirs.get("other", type=Text).insert(0, "written elsewhere")
    ids = append_all(store, KEY, updates[:3] + [theirs.get_update()] + updates[3:])
    store.compact(KEY, ids[-1])
    loaded = doc_from(store.load(KEY).updates)
    assert content(loaded) == content(mine)
    assert str(loaded.get("other", type=Text)) == "written elsewhere"


def test_a_compaction_does_not_fold_in_again_the_snapshot_its_copy_holds(
    store_factory, monkeypatch
):
    """A compaction with the live copy merged it with the stored snapshot every time:
    ~265 ms of a 4.2 MB document's decoding with the process held (pycrdt keeps the
    GIL). Not when the snapshot stored is the one the copy was built from, or the copy
    that compaction wrote last (`based_on`, its digest)."""
    from wsserver.documents.storage import stored

    store = store_factory()
    mine, updates = edits(6)
    ids = append_all(store, KEY, updates[:3])
    store.compact(KEY, ids[-1])  # a snapshot, as a previous process left it
    loaded = store.load(KEY)
    assert loaded.snapshot_digest == stored.digest(loaded.updates[0])
    folds = []
    fold = stored.fold
    monkeypatch.setattr(stored, "fold", lambda updates: folds.append(1) or fold(updates))
    for update in updates[3:]:  # a room: its copy, one row at a time, compacted each time
        (row,) = append_all(store, KEY, [update])
        based_on = store.compact(KEY, row, mine.get_update(), (1, row), loaded.snapshot_digest)
        assert based_on == stored.digest(mine.get_update())
        loaded = loaded._replace(snapshot_digest=based_on)
    assert folds == []
    assert content(doc_from(store.load(KEY).updates)) == content(mine)
    # Without the digest (or another one), it folds, as before.
    extra = edits(1, client_id=12)[1][0]
    mine.apply_update(extra)
    (row,) = append_all(store, KEY, [extra])
    assert store.compact(KEY, row, mine.get_update(), (1, row), None) is None
    assert folds == [1]


def test_a_compaction_folds_in_a_snapshot_another_process_wrote_since(store_factory):
    """The copy holds the snapshot it was built from: another process's compaction then
    wrote a new one, with what that process alone had seen. The digest differs, so the
    copy is merged with it, and nothing the other process wrote is lost."""
    store = store_factory()
    _, updates = edits(3)
    ids = append_all(store, KEY, updates[:2])
    store.compact(KEY, ids[-1])
    loaded = store.load(KEY)  # this process's copy: that snapshot
    theirs = Doc()
    theirs.get("other", type=Text).insert(0, "written elsewhere")
    (their_row,) = append_all(store, KEY, [theirs.get_update()])
    store.compact(KEY, their_row)  # the other process folds it: a new snapshot
    (row,) = append_all(store, KEY, updates[2:3])
    copy = doc_from([*loaded.updates, updates[2]])
    assert store.compact(KEY, row, copy.get_update(), (1, row), loaded.snapshot_digest) is None
    after = doc_from(store.load(KEY).updates)
    assert str(after.get("other", type=Text)) == "written elsewhere"
    assert str(after.get("t", type=Text)) == str(copy.get("t", type=Text))


class Flaky:
    """Mixin: the first `failures` commits raise."""

    failures = 3

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.attempts = 0

    def _append_batch(self, items, *args):
        self.attempts += 1
        if self.attempts <= self.failures:
            raise OSError("disk on fire")
        return super()._append_batch(items, *args)


class FlakyMemory(Flaky, MemoryStore):
    pass


class FlakySQLite(Flaky, SQLiteStore):
    pass


class FlakyPostgres(Flaky, PostgresStore):
    pass


PLAIN = {"memory": MemoryStore, "sqlite": SQLiteStore, "postgres": PostgresStore}
FLAKY = {"memory": FlakyMemory, "sqlite": FlakySQLite, "postgres": FlakyPostgres}


def test_failed_commits_are_retried_and_confirmed_once(store_factory, caplog):
    store = store_factory(flaky=True)
    calls = []
    for i in range(5):
        store.append(KEY, bytes([65 + i]), lambda row_id, i=i: calls.append(i))
    gevent.sleep(0.08)  # at least one failure and retry happened
    assert 1 <= store.attempts <= Flaky.failures
    assert calls == []  # not confirmed while failing
    assert store.flush(timeout=10)
    assert store.attempts == Flaky.failures + 1
    assert calls == [0, 1, 2, 3, 4]
    assert [bytes(u) for u in store.load(KEY).updates] == [b"A", b"B", b"C", b"D", b"E"]
    assert "retrying" in caplog.text
    # said once, not once per retry (an outage would otherwise flood the log)
    assert caplog.text.count("storage commit of") == 1


def test_sqlite_creates_directories(tmp_path):
    path = tmp_path / "sub" / "dir" / "db.sqlite3"
    store = SQLiteStore(str(path)).start()
    try:
        append_all(store, KEY, [b"\x00\x00"])
        assert path.exists()
    finally:
        store.close(timeout=5)


def test_a_new_file_opened_by_two_processes_at_once_gets_its_columns_once(tmp_path):
    """gunicorn's workers open a new SQLite file together: the history's columns are
    added by one of them (a worker's start failed with "duplicate column name")."""
    from wsserver.documents.storage import sqlite as backend
    from wsserver.documents.storage import sqlite_history

    path = str(tmp_path / "new.sqlite3")
    other = backend.connect(path)  # another worker, adding the columns right now
    other.executescript(backend.SCHEMA)
    sqlite_history.create_history(other)
    other.execute("BEGIN IMMEDIATE")
    sqlite_history.add_columns(other)
    threading.Timer(0.3, other.execute, ("COMMIT",)).start()
    store = SQLiteStore(path).start()  # meanwhile: it must wait, then find them there
    try:
        key = DocKey("t", "a", "d")
        done = gevent.event.AsyncResult()
        store.append(key, b"\x00\x00", done.set, author="alice")
        assert done.get(timeout=5) == 1
    finally:
        store.close()
        other.close()


def test_a_new_file_another_process_is_creating_is_opened_once_it_is_done(tmp_path):
    """The other worker creating the same new file writes it in rollback mode before it
    turns WAL on: SQLite refused `PRAGMA journal_mode=WAL` meanwhile at once ("database
    is locked"), without its busy timeout, and the worker's start failed (1 start in 20
    of two workers on a new file)."""
    path = str(tmp_path / "new.sqlite3")
    # Rollback mode: not WAL yet.
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE IF NOT EXISTS creating (x)")
    threading.Timer(0.3, other.execute, ("COMMIT",)).start()
    store = SQLiteStore(path).start()  # meanwhile: it must wait, then open it
    try:
        key = DocKey("t", "a", "d")
        done = gevent.event.AsyncResult()
        store.append(key, b"\x00\x00", done.set)
        assert done.get(timeout=5) == 1
    finally:
        store.close()
        other.close()


def test_data_survives_reopening(durable_factory):
    doc, updates = edits(40)
    store = durable_factory()
    ids = append_all(store, KEY, updates[:30])
    store.compact(KEY, ids[-1])
    append_all(store, KEY, updates[30:])
    assert store.close(timeout=5)

    store = durable_factory()
    try:
        loaded = store.load(KEY)
        assert loaded.log_count == len(updates) - 30
        assert content(doc_from(loaded.updates)) == content(doc)
        # ids keep increasing after a reopen
        new_ids = append_all(store, KEY, [b"\x00\x00"])
        assert new_ids[0] > loaded.last_id
    finally:
        store.close(timeout=5)


def test_close_flushes_what_is_queued(durable_factory):
    store = durable_factory()
    calls = []
    for i in range(50):
        store.append(KEY, bytes([i]), calls.append)
    assert store.close(timeout=5)
    assert len(calls) == 50
    reopened = durable_factory()
    try:
        assert len(reopened.load(KEY).updates) == 50
    finally:
        reopened.close(timeout=5)


def test_open_store_urls(tmp_path):
    memory = open_store("memory://")
    sqlite = open_store(f"sqlite:///{tmp_path}/x.sqlite3")
    try:
        assert isinstance(memory, MemoryStore)
        assert isinstance(sqlite, SQLiteStore)
        assert sqlite.path == f"{tmp_path}/x.sqlite3"
    finally:
        memory.close(timeout=2)
        sqlite.close(timeout=2)
    with pytest.raises(ValueError):
        open_store("redis://localhost")


# --- rooms on a store ------------------------------------------------------------------


class FakeConnection:
    """What Room and Rooms use of a Connection."""

    sending = False  # Connection.sending: nothing queued

    def __init__(self, name="c"):
        self.name = name
        self.frames = []
        self.messages = []
        self.awareness_ids, self.awareness_ignored = set(), 0
        self.principal = None  # an anonymous token: no author stored
        self.room = None

    def send(self, frame):
        self.frames.append(frame)

    def send_message(self, message):
        self.messages.append(message)

    def __repr__(self):
        return f"FakeConnection({self.name})"


def rooms_config(**overrides):
    values = dict(unload_after=60.0, compact_after_updates=500, compact_after_bytes=4 << 20)
    values.update(overrides)
    return SimpleNamespace(**values)


class SlowMemoryStore(MemoryStore):
    """A store whose load takes a while (and yields), recording when it finished."""

    def __init__(self):
        super().__init__()
        self.load_started = 0
        self.load_finished = 0

    def _load(self, key):
        self.load_started += 1
        gevent.sleep(0.2)
        result = super()._load(key)
        self.load_finished += 1
        return result


def test_concurrent_joins_share_one_load_and_wait_for_it():
    store = SlowMemoryStore().start()
    try:
        doc, updates = edits(10)
        append_all(store, KEY, updates)
        rooms = DocumentManager(store, rooms_config())
        seen = []

        def join(i):
            conn = FakeConnection(str(i))
            room = rooms.join(KEY, conn)
            # nothing was answered before the load completed...
            seen.append((store.load_finished, room, conn))
            return conn

        greenlets = [gevent.spawn(join, i) for i in range(6)]
        gevent.joinall(greenlets, timeout=5, raise_error=True)
        assert store.load_started == 1
        assert store.loads == 1
        assert len(seen) == 6
        assert all(finished == 1 for finished, _, _ in seen)
        room = seen[0][1]
        assert all(r is room for _, r, _ in seen)
        assert len(room.connections) == 6
        # ...and what each connection got first is the loaded document's state vector
        for _, _, conn in seen:
            assert conn.messages[0] == codec.sync_step1(doc.get_state())
            assert conn.room is room
        assert content(room.doc) == content(doc)
        # a later join does not load again
        rooms.join(KEY, FakeConnection("late"))
        assert store.loads == 1
    finally:
        store.close(timeout=2)


class FailingLoadStore(MemoryStore):
    def __init__(self):
        super().__init__()
        self.fail = True

    def _load(self, key):
        gevent.sleep(0.05)
        if self.fail:
            self.loads += 1
            raise OSError("cannot read")
        return super()._load(key)


def test_failed_load_fails_every_waiting_join_and_is_retried():
    from wsserver.errors import InternalError

    store = FailingLoadStore().start()
    try:
        rooms = DocumentManager(store, rooms_config())
        results = []

        def join():
            try:
                rooms.join(KEY, FakeConnection())
                results.append("joined")
            except InternalError as e:
                results.append(e.close_code)

        gevent.joinall([gevent.spawn(join) for _ in range(3)], timeout=5)
        assert results == [1011, 1011, 1011]
        assert store.loads == 1
        assert len(rooms) == 0
        store.fail = False
        conn = FakeConnection()
        rooms.join(KEY, conn)
        assert len(rooms) == 1 and conn.room is not None
    finally:
        store.close(timeout=2)


def _drive_room(store, updates, compact_after_updates=25, compact_after_bytes=1 << 30):
    """Feed `updates` through a Room as client edits; wait until all are durable."""
    rooms = DocumentManager(
        store,
        rooms_config(
            compact_after_updates=compact_after_updates, compact_after_bytes=compact_after_bytes
        ),
    )
    conn = FakeConnection()
    room = rooms.join(KEY, conn)
    for i, update in enumerate(updates):
        room.apply_update(update, conn)
        if i % 10 == 0:
            gevent.sleep(0)  # let commits (and compactions) interleave with the edits
    deadline = gevent.get_hub().loop.now() + 10
    while (room.pending or room.compacting) and gevent.get_hub().loop.now() < deadline:
        store.flush(timeout=1)
        gevent.sleep(0.01)
    return rooms, room, conn


@pytest.mark.parametrize("by", ["count", "bytes"])
def test_room_compaction_keeps_content_equal(store_factory, by, monkeypatch):
    from wsserver.documents.storage import stored

    folds = []  # of the live copy with the stored snapshot: none, it is the room's own
    fold = stored.fold
    monkeypatch.setattr(stored, "fold", lambda updates: folds.append(1) or fold(updates))
    store = store_factory()
    doc, updates = edits(300)
    if by == "count":
        rooms, room, conn = _drive_room(store, updates, compact_after_updates=25)
    else:
        rooms, room, conn = _drive_room(
            store, updates, compact_after_updates=10**6, compact_after_bytes=400
        )
    assert room.pending == 0
    # every update was confirmed (echoed) exactly once, in order
    assert conn.frames == [frame_of(codec.sync_update(u)) for u in updates]
    loaded = store.load(KEY)
    if by == "count":
        assert loaded.log_count < 25
    else:
        assert loaded.log_bytes < 400 + max(map(len, updates))
    assert len(loaded.updates) == loaded.log_count + 1  # a snapshot plus the recent rows
    assert content(doc_from(loaded.updates)) == content(doc)
    # flushing compacts the rest: a snapshot alone, still equal
    rooms.flush(room)
    loaded = store.load(KEY)
    assert loaded.log_count == 0 and len(loaded.updates) == 1
    assert content(doc_from(loaded.updates)) == content(doc)
    assert content(room.doc) == content(doc)
    assert folds == []


def frame_of(message):
    from wsserver.transport import frames

    return frames.encode_frame(frames.OP_BINARY, message)


def step2_of(room):
    """What the room answers a client that has nothing: its whole document."""
    conn = FakeConnection("reader")
    room.receive(conn, codec.decode(codec.sync_step1(b"\x00")))
    reply = codec.decode(conn.messages[-1])
    assert reply.kind == codec.KIND_STEP2
    return reply.data


def test_room_loaded_from_a_compacted_store_serves_the_same_document(store_factory):
    store = store_factory()
    doc, updates = edits(120)
    rooms, room, conn = _drive_room(store, updates, compact_after_updates=30)
    rooms.flush(room)
    # a second Rooms (a restarted process) loads the compacted document
    fresh = DocumentManager(store, rooms_config())
    conn2 = FakeConnection()
    room2 = fresh.join(KEY, conn2)
    assert content(room2.doc) == content(doc)
    assert conn2.messages[0] == codec.sync_step1(doc.get_state())
    # a client asking for everything gets an update equal to the document
    assert content(doc_from([step2_of(room2)])) == content(doc)


def many_stored_updates():
    """Updates of two clients (inserts, deletes, map keys), one larger than a merged run
    (ydoc.RUN_BYTES), in the order storage keeps them."""
    _, mine = edits(400)
    _, theirs = edits(150, client_id=12)
    updates = [u for pair in zip(mine, theirs) for u in pair] + mine[len(theirs) :]
    big = Doc(client_id=13)
    big.get("m", type=Map)["big"] = "x" * (ydoc.RUN_BYTES + 10)
    updates.insert(301, big.get_update())
    return updates


@pytest.mark.parametrize("snapshot", [False, True])
def test_room_loaded_from_many_stored_updates_equals_applying_them_one_by_one(
    store_factory, snapshot
):
    updates = many_stored_updates()
    store = store_factory()
    if snapshot:  # a snapshot of the first 200 plus a log of the rest
        append_all(store, KEY, updates[:200])
        store.compact(KEY, store.load(KEY).last_id)
        append_all(store, KEY, updates[200:])
    else:
        append_all(store, KEY, updates)
    expected = doc_from(updates)
    room = DocumentManager(store, rooms_config()).join(KEY, FakeConnection())
    assert content(room.doc) == content(expected)
    assert room.doc.get_state() == expected.get_state()
    assert not room.unintegrated
    assert content(doc_from([step2_of(room)])) == content(expected)


def test_room_loaded_with_pending_updates_serves_them(store_factory):
    """Updates stored before their dependency (see test_pending.py), among many others:
    the loaded room holds them pending, a late joiner gets them in its step 2, and the
    dependency completes them, as if every update had been applied one by one."""
    from test_pending import offline_edits

    u1, u2, u3 = offline_edits()
    updates = many_stored_updates()
    updates[57:57] = [u2]
    updates[230:230] = [u3]
    store = store_factory()
    append_all(store, KEY, updates)
    room = DocumentManager(store, rooms_config(compact_after_updates=10**6)).join(
        KEY, FakeConnection()
    )
    assert room.unintegrated
    expected = doc_from(updates + [u1])
    joiner = doc_from([step2_of(room)])
    joiner.apply_update(u1)
    assert content(joiner) == content(expected)
    room.apply_update(u1, FakeConnection("writer"))
    assert content(room.doc) == content(expected)
    assert not room.unintegrated


def test_updates_are_echoed_only_once_durable(store_factory):
    store = store_factory(flaky=True)
    rooms = DocumentManager(store, rooms_config())
    a, b = FakeConnection("a"), FakeConnection("b")
    room = rooms.join(KEY, a)
    rooms.join(KEY, b)
    _, updates = edits(3)
    for u in updates:
        room.apply_update(u, a)
    gevent.sleep(0.08)  # the first commits fail
    assert a.frames == [] and b.frames == []
    assert room.pending == len(updates)
    assert store.flush(timeout=10)
    expected = [frame_of(codec.sync_update(u)) for u in updates]
    assert a.frames == expected and b.frames == expected
    assert room.pending == 0


def test_step2_that_changes_nothing_is_neither_stored_nor_broadcast(store_factory):
    """A reconnecting client's step 2 repeats the delete set: only real changes fan out."""
    store = store_factory()
    rooms = DocumentManager(store, rooms_config())
    a, b = FakeConnection("a"), FakeConnection("b")
    room = rooms.join(KEY, a)
    rooms.join(KEY, b)
    source = Doc()
    text = source.get("t", type=Text)
    text += "hello world"
    del text[0:6]  # a delete set the client will send again in every step 2
    full = source.get_update()
    room.receive(a, codec.decode(codec.sync_update(full)))
    assert store.flush(timeout=10)
    rows = store.load(KEY).log_count
    frames = len(b.frames)

    room.receive(a, codec.decode(codec.sync_step2(full)))  # a reconnect's step 2
    assert store.flush(timeout=10)
    assert store.load(KEY).log_count == rows
    assert len(b.frames) == frames

    text.insert(0, "new ")  # a step 2 with something new: only the change goes out
    room.receive(a, codec.decode(codec.sync_step2(source.get_update())))
    assert store.flush(timeout=10)
    assert store.load(KEY).log_count == rows + 1
    assert len(b.frames) == frames + 1
    assert str(room.doc.get("t", type=Text)) == "new world"


def test_compaction_uses_the_live_copy_only_when_it_holds_every_stored_row(store_factory):
    store = store_factory()
    mine, updates = edits(5)
    ids = append_all(store, KEY, updates)
    # The live copy may be ahead of storage (an update applied, not yet durable): when
    # the stored rows are exactly those it holds, its snapshot is the one written.
    mine.get("t", type=Text).insert(0, "pending ")
    store.compact(KEY, ids[-1], mine.get_update(), (len(ids), sum(ids)))
    assert content(doc_from(store.load(KEY).updates)) == content(mine)
    # A row someone else wrote: this copy lacks it, so the store folds what it holds.
    theirs = Doc()
    theirs.get("other", type=Text).insert(0, "written elsewhere")
    more = append_all(store, KEY, [theirs.get_update()])
    store.compact(KEY, more[-1], mine.get_update(), (0, 0))
    loaded = doc_from(store.load(KEY).updates)
    assert str(loaded.get("other", type=Text)) == "written elsewhere"
    assert content(loaded) == content(mine)


def test_compaction_keeps_a_snapshot_another_process_wrote(store_factory):
    """Process B compacts its rows into a snapshot; process A, which loaded before and
    never saw them, then compacts its own rows with its live copy (it holds exactly the
    stored rows). B's content must survive: A's copy is merged with B's snapshot."""
    store = store_factory()
    a_doc, b_doc = Doc(client_id=1), Doc(client_id=2)
    a_updates, b_updates = [], []
    a_doc.observe(lambda event: a_updates.append(event.update))
    b_doc.observe(lambda event: b_updates.append(event.update))
    for i in range(5):
        b_doc.get("t", type=Text).insert(0, f"b{i} ")
    b_ids = append_all(store, KEY, b_updates)
    store.compact(KEY, b_ids[-1], b_doc.get_update(), (len(b_ids), sum(b_ids)))
    for i in range(5):
        a_doc.get("m", type=Map)[f"a{i}"] = i
    a_ids = append_all(store, KEY, a_updates)
    store.compact(KEY, a_ids[-1], a_doc.get_update(), (len(a_ids), sum(a_ids)))
    loaded = doc_from(store.load(KEY).updates)
    assert str(loaded.get("t", type=Text)) == str(b_doc.get("t", type=Text))
    assert loaded.get("m", type=Map).to_py() == {f"a{i}": i for i in range(5)}


def snapshot_and_log(store, key, n):
    """Document `key` stored as a snapshot of the first half of `n` edits plus the rest
    as log rows."""
    _, updates = edits(n)
    ids = append_all(store, key, updates[: n // 2])
    store.compact(key, ids[-1])
    append_all(store, key, updates[n // 2 :])
    return updates


def test_delete_removes_snapshot_and_log_of_one_document(store_factory):
    store = store_factory()
    updates = snapshot_and_log(store, KEY, 20)
    other = append_all(store, OTHER, updates[:3])
    store.delete(KEY)
    assert store.load(KEY).updates == []
    assert store.documents() == [OTHER]
    assert store.load(OTHER).last_id == other[-1]


def test_size_and_readiness(store_factory):
    store = store_factory()
    snapshot_and_log(store, KEY, 12)
    assert store.size(KEY) == sum(map(len, store.load(KEY).updates))
    assert store.size(DocKey("acme", "editor", "missing")) == 0
    store.check()  # raises when the storage does not answer


def test_sqlite_commits_one_at_a_time_keep_the_wal_bounded(tmp_path):
    """Commits on the hub never checkpoint themselves (documents/storage/sqlite.py); the
    worker thread's checkpoints must keep the WAL file from growing with every commit."""
    path = tmp_path / "db.sqlite3"
    store = SQLiteStore(str(path)).start()
    try:
        for i in range(1500):  # one commit each: every append is flushed before the next
            append_all(store, KEY, [bytes([i % 256]) * 100])
        assert store.flush(timeout=10)
        wal = path.with_name(path.name + "-wal")
        # ~3 WAL pages (4 KB) per commit: 18 MB without checkpoints, ~3.6 MB with them
        assert wal.stat().st_size < 8_000_000, wal.stat().st_size
        assert len(store.load(KEY).updates) == 1500
    finally:
        store.close(timeout=5)


def test_sqlite_commits_wait_for_another_writer_and_lose_nothing(tmp_path):
    """While another connection holds the write lock, appends wait (off the hub) and are
    confirmed, in order, once it is released; other greenlets keep running meanwhile."""
    path = tmp_path / "db.sqlite3"
    store = SQLiteStore(str(path)).start()
    other = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    try:
        other.execute("BEGIN IMMEDIATE")
        durable = []
        for i in range(5):
            store.append(KEY, bytes([65 + i]), durable.append)
        started = time.monotonic()
        for _ in range(20):  # 0.2 s, unless the hub itself waits for the lock (5 s)
            gevent.sleep(0.01)
        assert time.monotonic() - started < 2.0
        assert durable == []
        other.execute("COMMIT")
        assert store.flush(timeout=10)
        assert len(durable) == 5 and durable == sorted(durable)
        assert [bytes(u) for u in store.load(KEY).updates] == [b"A", b"B", b"C", b"D", b"E"]
    finally:
        other.close()
        store.close(timeout=5)


def test_sqlite_confirms_a_commit_before_the_checkpoint_it_triggers(tmp_path, monkeypatch):
    """The checkpoint every CHECKPOINT_EVERY hub commits (~4 ms, in the worker thread)
    runs once the last commit's updates are confirmed: their echo does not wait for it."""
    from wsserver.documents.storage import sqlite as sqlite_store

    monkeypatch.setattr(sqlite_store, "CHECKPOINT_EVERY", 3)
    store = SQLiteStore(str(tmp_path / "db.sqlite3")).start()
    release = threading.Event()  # set by the test, waited for in the worker thread
    checkpoint = store._checkpoint

    def held_checkpoint():
        release.wait(10)
        checkpoint()

    store._checkpoint = held_checkpoint
    durable = []
    try:
        for n, update in enumerate((b"a", b"b", b"c"), 1):  # three commits
            store.append(KEY, update, durable.append)
            deadline = time.monotonic() + 2
            while len(durable) < n and time.monotonic() < deadline:
                gevent.sleep(0.01)
        assert len(durable) == 3  # the third commit's, while its checkpoint is held
        release.set()
        assert store.flush(timeout=10)
        assert [bytes(u) for u in store.load(KEY).updates] == [b"a", b"b", b"c"]
    finally:
        release.set()
        store.close(timeout=5)


def test_sqlite_a_commit_that_lost_its_snapshot_on_the_hub_waits_off_the_hub(tmp_path, caplog):
    """Another connection committing between a hub BEGIN IMMEDIATE's read and its write
    lock gives SQLITE_BUSY_SNAPSHOT (extended code 517, not 5): like a plain SQLITE_BUSY,
    the commit goes to the worker thread at once, not to the retry-with-backoff path
    for failed commits (an error logged, the updates held back)."""
    store = SQLiteStore(str(tmp_path / "db.sqlite3")).start()
    writers = []
    append_batch = store._append_batch

    def racing(items, db=None):
        writers.append(threading.get_ident())
        if db is not None and len(writers) == 1:  # that race can only be staged
            error = sqlite3.OperationalError("database is locked")
            error.sqlite_errorcode, error.sqlite_errorname = 517, "SQLITE_BUSY_SNAPSHOT"
            raise error
        return append_batch(items, db)

    store._append_batch = racing
    try:
        assert len(append_all(store, KEY, [b"u"])) == 1
        assert not [r for r in caplog.records if "commit" in r.getMessage()]
        hub = threading.get_ident()
        assert [ident == hub for ident in writers] == [True, False]
        assert [bytes(u) for u in store.load(KEY).updates] == [b"u"]
    finally:
        store.close(timeout=5)


def test_sqlite_big_commits_are_written_off_the_hub(tmp_path):
    """A group commit over HUB_COMMIT_BYTES is written by the worker thread (the hub
    serves everyone else meanwhile: an 8 MB write held it ~17 ms); smaller ones on the hub."""
    from wsserver.documents.storage import sqlite as sqlite_store

    store = SQLiteStore(str(tmp_path / "db.sqlite3")).start()
    writers = []
    append_batch = store._append_batch

    def recording(items, db=None):
        writers.append((sum(len(item[1]) for item in items), threading.get_ident()))
        return append_batch(items, db)

    store._append_batch = recording
    try:
        small, big = b"s" * 100, b"b" * (sqlite_store.HUB_COMMIT_BYTES + 1)
        for update in (small, big, small):
            append_all(store, KEY, [update])
        assert store.flush(timeout=10)
        hub = threading.get_ident()
        assert [(size, ident == hub) for size, ident in writers] == [
            (len(small), True),
            (len(big), False),
            (len(small), True),
        ]
        assert [bytes(u) for u in store.load(KEY).updates] == [small, big, small]
    finally:
        store.close(timeout=5)


def test_a_compaction_that_folded_nothing_starts_no_other():
    """After a compaction the room checks its threshold again, but only when that
    compaction folded rows: one skipped (a rebuild is running) must not spin."""
    from gevent.event import AsyncResult

    from wsserver.documents.room import Room

    store = MemoryStore().start()
    room = Room(KEY, store, 1, 10**9)
    room.log_count = 5  # over the threshold
    room.rebuilding = AsyncResult()
    started = []
    room.maybe_compact = lambda: started.append(True)
    room.compaction.run_logged()
    assert started == []
    store.close(timeout=5)


class Stuck(MemoryStore):
    """Commits fail while `stuck` is true (storage down)."""

    stuck = False

    def _append_batch(self, items):
        if self.stuck:
            raise OSError("storage down")
        return super()._append_batch(items)


def test_a_delete_waits_for_its_documents_commits_within_its_timeout():
    """While commits fail, deleting a document with a queued update raises StoreError
    within the timeout and deletes nothing; another document's delete is not held up by
    it. Once commits go through the update is stored, and a delete removes it."""
    store = Stuck().start()
    append_all(store, OTHER, [b"O"])
    append_all(store, KEY, [b"K"])
    store.stuck = True
    durable = []
    store.append(KEY, b"A", durable.append)
    try:
        with gevent.Timeout(5):  # before: both waited for the commit, for ever
            started = time.monotonic()
            with pytest.raises(StoreError, match="not committed within 0.3 s; nothing deleted"):
                store.delete(KEY, timeout=0.3)
            assert time.monotonic() - started < 1.0
            assert store.logs[KEY]  # nothing deleted
            store.delete(OTHER, timeout=0.3)
            assert store.load(OTHER).updates == []
        store.stuck = False
        store.delete(KEY, timeout=5)
        assert durable and store.load(KEY).updates == [] and store.documents() == []
    finally:
        store.stuck = False
        store.close(timeout=5)


def test_a_sqlite_call_with_a_timeout_stops_waiting_behind_a_slow_one(tmp_path):
    """SQLite's calls run one at a time in a worker thread: a load with a timeout that
    waits behind a slow call raises StoreError after the timeout (before: it waited for
    the slow one), carrying the load still queued, which ends after it."""
    store = SQLiteStore(str(tmp_path / "db.sqlite3")).start()
    try:
        append_all(store, KEY, [b"A"])
        slow = gevent.spawn(store._call, time.sleep, 1.5)
        gevent.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(StoreError, match="load: no answer within 0.2 s") as info:
            store.load(KEY, timeout=0.2)
        assert time.monotonic() - started < 1.0
        ended = []
        info.value.pending.rawlink(ended.append)
        slow.join(5)
        gevent.sleep(0.1)
        assert ended and [bytes(u) for u in info.value.pending.get().updates] == [b"A"]
    finally:
        store.close(timeout=5)
