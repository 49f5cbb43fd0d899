"""`wsserver copy-storage`, `wsserver export` and `wsserver import`, run as a user runs
them (subprocesses), between SQLite and a real Postgres."""

import subprocess
import sys

from conftest import ROOT
from pycrdt import Doc, Map, Text

from wsserver.documents import DocKey
from wsserver.documents.storage.postgres import PostgresStore
from wsserver.documents.storage.sqlite import SQLiteStore

DOCUMENTS = 300


def wsserver(*args):
    return subprocess.run(
        [sys.executable, "-m", "wsserver.cli", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def key_of(i):
    return DocKey(f"tenant{i % 3}", "editor", f"doc-{i}")


def updates_of(i):
    """A few edits (one with a deletion) of document i."""
    doc = Doc(client_id=1000 + i)
    text = doc.get("t", type=Text)
    updates = []
    doc.observe(lambda event: updates.append(event.update))
    text += f"document {i} "
    text += "with some words"
    del text[0:3]
    doc.get("m", type=Map)["n"] = i
    return updates


def expected(i):
    return f"ument {i} with some words", i


def content(store, key):
    doc = Doc()
    for update in store.load(key).updates:
        doc.apply_update(update)
    return str(doc.get("t", type=Text)), doc.get("m", type=Map).to_py()["n"]


def fill(store, compact_every=2):
    """DOCUMENTS documents; every `compact_every`-th is compacted into a snapshot (and
    then gets one more row), the others are only log rows."""
    ids = {}
    for i in range(DOCUMENTS):
        for update in updates_of(i)[:-1]:
            store.append(key_of(i), update, lambda row_id, i=i: ids.__setitem__(i, row_id))
    assert store.flush(timeout=60)
    for i in range(0, DOCUMENTS, compact_every):
        store.compact(key_of(i), ids[i])
    for i in range(DOCUMENTS):
        store.append(key_of(i), updates_of(i)[-1], lambda row_id: None)
    assert store.flush(timeout=60)


def check_all(store):
    assert len(store.documents()) == DOCUMENTS
    for i in range(DOCUMENTS):
        assert content(store, key_of(i)) == expected(i), key_of(i)


def test_copy_storage_both_ways_and_again(tmp_path, pg_url):
    sqlite_url = f"sqlite:///{tmp_path}/source.sqlite3"
    source = SQLiteStore(str(tmp_path / "source.sqlite3")).start()
    fill(source)
    source.close()

    done = wsserver("copy-storage", sqlite_url, pg_url)
    assert done.returncode == 0, done.stderr
    assert f"copied {DOCUMENTS} documents" in done.stdout and "every copy verified" in done.stdout
    target = PostgresStore(pg_url).start()
    try:
        check_all(target)
        # a compacted source document arrives as its snapshot plus its one later row
        assert len(target.load(key_of(0)).updates) == 2
        assert len(target.load(key_of(1)).updates) == len(updates_of(1))
        # compact a third of them on the Postgres side before copying back
        for i in range(0, DOCUMENTS, 3):
            loaded = target.load(key_of(i))
            target.compact(key_of(i), loaded.last_id)
    finally:
        target.close()

    again = wsserver("copy-storage", sqlite_url, pg_url)  # safe to run again
    assert again.returncode == 0, again.stderr
    assert (
        "copied 0 documents" in again.stdout and f"({DOCUMENTS} were already there)" in again.stdout
    )

    back_url = f"sqlite:///{tmp_path}/back.sqlite3"
    back = wsserver("copy-storage", pg_url, back_url)
    assert back.returncode == 0, back.stderr
    copy = SQLiteStore(str(tmp_path / "back.sqlite3")).start()
    try:
        check_all(copy)
    finally:
        copy.close()


def test_copy_storage_reports_a_target_that_differs(tmp_path, pg_url):
    source = SQLiteStore(str(tmp_path / "s.sqlite3")).start()
    for update in updates_of(1):
        source.append(key_of(1), update, lambda row_id: None)
    source.close()
    target = PostgresStore(pg_url).start()
    other = Doc()
    other.get("t", type=Text).insert(0, "edited only in the target ")
    target.append(key_of(1), other.get_update(), lambda row_id: None)
    target.close()
    done = wsserver("copy-storage", f"sqlite:///{tmp_path}/s.sqlite3", pg_url)
    assert done.returncode == 2
    assert "tenant1/editor/doc-1: the copy differs from the source" in done.stderr
    assert "Traceback" not in done.stderr


def test_copy_storage_compares_content_not_only_the_state_vector(tmp_path, pg_url):
    """A deletion adds nothing to the state vector: a target that deleted text the
    source still has must be reported too."""
    source = SQLiteStore(str(tmp_path / "s.sqlite3")).start()
    updates = updates_of(2)
    for update in updates:
        source.append(key_of(2), update, lambda row_id: None)
    source.close()
    edited = Doc()
    for update in updates:
        edited.apply_update(update)
    before = edited.get_state()
    deletions = []
    edited.observe(lambda event: deletions.append(event.update))
    del edited.get("t", type=Text)[0:5]
    assert edited.get_state() == before
    target = PostgresStore(pg_url).start()
    for update in updates + deletions:
        target.append(key_of(2), update, lambda row_id: None)
    target.close()
    done = wsserver("copy-storage", f"sqlite:///{tmp_path}/s.sqlite3", pg_url)
    assert done.returncode == 2
    assert "tenant2/editor/doc-2: the copy differs from the source" in done.stderr


def test_export_then_import_into_another_storage(tmp_path, pg_url):
    source = SQLiteStore(str(tmp_path / "s.sqlite3")).start()
    for update in updates_of(7):
        source.append(key_of(7), update, lambda row_id: None)
    source.close()
    file = tmp_path / "doc.yjs"
    out = wsserver(
        "export",
        "--tenant",
        "tenant1",
        "--app",
        "editor",
        "--doc",
        "doc-7",
        "--storage",
        f"sqlite:///{tmp_path}/s.sqlite3",
        file,
    )
    assert out.returncode == 0, out.stderr
    doc = Doc()
    doc.apply_update(file.read_bytes())
    assert str(doc.get("t", type=Text)) == expected(7)[0]

    into = wsserver(
        "import",
        "--tenant",
        "acme",
        "--app",
        "notes",
        "--doc",
        "restored",
        "--storage",
        pg_url,
        file,
    )
    assert into.returncode == 0, into.stderr
    # twice: merging the same update again changes nothing
    assert (
        wsserver(
            "import",
            "--tenant",
            "acme",
            "--app",
            "notes",
            "--doc",
            "restored",
            "--storage",
            pg_url,
            file,
        ).returncode
        == 0
    )
    target = PostgresStore(pg_url).start()
    try:
        assert content(target, DocKey("acme", "notes", "restored")) == expected(7)
    finally:
        target.close()


def test_import_refuses_a_file_that_is_not_an_update(tmp_path, pg_url):
    file = tmp_path / "garbage.bin"
    file.write_bytes(b"\xff\xfe not a yjs update")
    out = wsserver(
        "import", "--tenant", "acme", "--app", "notes", "--doc", "x", "--storage", pg_url, file
    )
    assert out.returncode == 2
    assert "not a Yjs update" in out.stderr and "Traceback" not in out.stderr
    target = PostgresStore(pg_url).start()
    try:
        assert target.documents() == []
    finally:
        target.close()
