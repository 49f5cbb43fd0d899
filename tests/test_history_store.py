"""The history in storage (wsserver/documents/storage/history.py and the backends):
versions with their authors survive compaction and a reopen, retention removes what it
should and nothing else, the trash sticks until undeleted or purged, and copy-storage
takes versions and trash along. Every test runs on memory, SQLite and Postgres."""

import time

import pytest
from pycrdt import Doc, Text

from wsserver.documents import DocKey
from wsserver.documents.restore import document_content
from wsserver.documents.storage.history import DAY, Retention
from wsserver.documents.storage.memory import MemoryStore
from wsserver.documents.storage.postgres import PostgresStore
from wsserver.documents.storage.sqlite import SQLiteStore
from wsserver.documents.storage.transfer import copy_storage

KEY = DocKey("acme", "editor", "doc")
OTHER = DocKey("acme", "editor", "other")
KINDS = {"memory": MemoryStore, "sqlite": SQLiteStore, "postgres": PostgresStore}


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def open_store(request, tmp_path):
    """Opens started stores of one kind on the same database (a reopen: a restart)."""
    target = {"sqlite": str(tmp_path / "db.sqlite3")}.get(request.param)
    if request.param == "postgres":
        target = request.getfixturevalue("pg_url")
    made = []

    def make():
        cls = KINDS[request.param]
        store = (cls() if target is None else cls(target)).start()
        made.append(store)
        return store

    make.kind = request.param
    yield make
    for store in made:
        store.close(timeout=2)


class Writer:
    """One client typing into a text, each edit stored with its author."""

    def __init__(self, store, key=KEY):
        self.store, self.key = store, key
        self.doc = Doc()
        self.text = self.doc.get("t", type=Text)

    def type(self, chars, author):
        before = self.doc.get_state()
        self.text.insert(len(self.text), chars)
        self.store.append(self.key, self.doc.get_update(before), lambda _: None, author)
        assert self.store.flush(5)


def text_of(state):
    return document_content(state)["t"]["text"][0][0]


def test_versions_keep_state_authors_and_survive_compaction_and_a_restart(open_store):
    store = open_store()
    writer = Writer(store)
    writer.type("a", "alice")
    writer.type("b", None)  # an anonymous token: no author
    first = store.create_version(KEY, automatic=True)
    assert first["authors"] == ["alice"] and first["label"] is None and first["size"] > 0
    assert abs(first["created_at"] - time.time()) < 60
    # Nothing changed since: no automatic version; a named one is made anyway.
    assert store.create_version(KEY, automatic=True) is None
    named = store.create_version(KEY, label="draft")
    assert named["label"] == "draft" and named["authors"] == []
    writer.type("c", "bob")
    writer.type("d", "carol")
    # Compaction folds bob's and carol's rows: the next version still names them.
    loaded = store.load(KEY)
    store.compact(KEY, loaded.last_id)
    assert store.load(KEY).log_count == 0
    third = store.create_version(KEY, automatic=True)
    assert third["authors"] == ["bob", "carol"]
    writer.type("e", "dave")
    store.compact(KEY, store.load(KEY).last_id)
    if open_store.kind != "memory":
        store.close()
        store = open_store()
    listed = store.versions(KEY)
    assert [v["id"] for v in listed] == [third["id"], named["id"], first["id"]]
    assert [text_of(store.version(KEY, v["id"])[1]) for v in listed] == ["abcd", "ab", "ab"]
    # The compacted edit after the last version counts as a change, with its author.
    assert store.create_version(KEY, automatic=True)["authors"] == ["dave"]
    assert store.version(KEY, 10**9) is None
    assert store.versions(OTHER) == [] and store.create_version(OTHER) is None


def test_retention_removes_what_it_should_and_nothing_else(open_store):
    store = open_store()
    writer = Writer(store)
    store.retention = Retention(
        keep_days=None, keep_versions=2, max_bytes_per_document=None, trash_days=30
    )
    ids = []
    for i in range(4):
        writer.type(str(i), "alice")
        ids.append(store.create_version(KEY, label="named" if i == 0 else None)["id"])
    # Two automatic ones kept (the newest among them); the named one stays.
    assert [v["id"] for v in store.versions(KEY)] == [ids[3], ids[2], ids[0]]
    # By age: automatic versions older than keep_days go at the sweep, the newest stays.
    store.retention = Retention(keep_days=1, keep_versions=None, max_bytes_per_document=None)
    assert store.sweep() == (0, [])
    future = time.time() + 2 * DAY
    assert store._call(store._sweep, future)[0] == 1
    assert [v["id"] for v in store.versions(KEY)] == [ids[3], ids[0]]
    # By size: the oldest go first, named or not, never the newest.
    newest_size = store.versions(KEY)[0]["size"]
    store.retention = Retention(None, None, max_bytes_per_document=newest_size)
    writer.type("x", "bob")
    made = store.create_version(KEY)
    assert [v["id"] for v in store.versions(KEY)] == [made["id"]]
    # Another document's versions are untouched by all of it.
    other = Writer(store, OTHER)
    other.type("o", "eve")
    store.retention = Retention(None, keep_versions=1, max_bytes_per_document=None)
    kept = store.create_version(OTHER)
    assert [v["id"] for v in store.versions(OTHER)] == [kept["id"]]
    assert [v["id"] for v in store.versions(KEY)] == [made["id"]]


def test_the_trash_sticks_until_undeleted_and_purges_after_trash_days(open_store):
    store = open_store()
    Writer(store).type("kept", "alice")
    Writer(store, OTHER).type("other", "bob")
    store.create_version(KEY)
    assert store.load(KEY).deleted_at is None
    deleted_at = store.trash(KEY)
    assert store.trash(KEY) == deleted_at  # trashing again keeps the first time
    if open_store.kind != "memory":
        store.close()
        store = open_store()
    assert store.load(KEY).deleted_at == pytest.approx(deleted_at)
    assert text_of(store.version(KEY, store.versions(KEY)[0]["id"])[1]) == "kept"
    assert store.trashed([KEY, OTHER]) == {KEY: pytest.approx(deleted_at)}
    assert [k for k, _ in store.trash_list()] == [KEY]
    assert store.untrash(KEY) and not store.untrash(KEY)
    assert store.load(KEY).deleted_at is None
    # Purged by the sweep once trash_days have passed; nothing else is.
    store.retention = Retention(trash_days=1)
    store.trash(KEY)
    assert store.sweep() == (0, [])
    removed, purged = store._call(store._sweep, time.time() + 2 * DAY)
    assert [tuple(k) for k in purged] == [tuple(KEY)]
    assert store.load(KEY).updates == [] and store.versions(KEY) == []
    assert store.trashed([KEY]) == {} and store.load(OTHER).updates


def test_copy_storage_takes_versions_and_the_trash_along(tmp_path, pg_url):
    source = SQLiteStore(str(tmp_path / "source.sqlite3")).start()
    target = PostgresStore(pg_url).start()
    try:
        Writer(source).type("v1", "alice")
        first = source.create_version(KEY, label="first")
        Writer(source, OTHER).type("gone", "bob")
        source.create_version(OTHER)
        deleted_at = source.trash(OTHER)
        for _ in range(2):  # run again: nothing copied twice
            copy_storage(source, target)
        copied = target.versions(KEY)
        assert [(v["label"], v["authors"], v["size"]) for v in copied] == [
            ("first", ["alice"], first["size"])
        ]
        assert copied[0]["created_at"] == pytest.approx(first["created_at"])
        assert text_of(target.version(KEY, copied[0]["id"])[1]) == "v1"
        assert len(target.versions(OTHER)) == 1
        assert target.load(OTHER).deleted_at == pytest.approx(deleted_at)
        assert target.load(KEY).deleted_at is None
    finally:
        source.close()
        target.close()


def test_a_sqlite_file_from_before_the_history_gets_its_columns(tmp_path):
    import sqlite3

    path = str(tmp_path / "old.sqlite3")
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE updates (id INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL,
            app TEXT NOT NULL, name TEXT NOT NULL, data BLOB NOT NULL);
        CREATE TABLE snapshots (tenant TEXT NOT NULL, app TEXT NOT NULL, name TEXT NOT NULL,
            data BLOB NOT NULL, PRIMARY KEY (tenant, app, name));
        """
    )
    old = Doc()
    old.get("t", type=Text).insert(0, "old")
    db.execute(
        "INSERT INTO updates (tenant, app, name, data) VALUES (?, ?, ?, ?)",
        (*KEY, old.get_update()),
    )
    db.commit()
    db.close()
    store = SQLiteStore(path).start()
    try:
        writer = Writer(store)
        writer.doc.apply_update(old.get_update())
        writer.type("er", "alice")
        store.compact(KEY, store.load(KEY).last_id)
        made = store.create_version(KEY)
        assert (
            made["authors"] == ["alice"] and text_of(store.version(KEY, made["id"])[1]) == "older"
        )
    finally:
        store.close()
