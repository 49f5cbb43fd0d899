"""The admin console's storage: the document index (search by tenant, app and name
prefix, a page at a time, from an index whatever the number of documents) and the
audit trail, on every backend."""

import sqlite3

import pytest
from test_store import append_all, edits, store_factory  # noqa: F401  (a fixture)

from wsserver.documents import DocKey
from wsserver.documents.storage.postgres import PostgresStore
from wsserver.documents.storage.sqlite import SQLiteStore


def names(rows):
    return [(r["tenant"], r["app"], r["name"]) for r in rows]


def test_search_pages_filters_and_follows_appends_compactions_and_deletes(store_factory):  # noqa: F811
    store = store_factory()
    _, updates = edits(6)
    keys = [
        DocKey("acme", "editor", "plan-a"),
        DocKey("acme", "editor", "plan-b"),
        DocKey("acme", "notes", "plan-c"),
        DocKey("beta", "editor", "plan-d"),
        DocKey("acme", "editor", "other"),
        DocKey("acme", "editor", "plan\u00e9"),  # beyond ASCII: still in the prefix range
    ]
    for key in keys:
        append_all(store, key, updates)
    assert names(store.search(prefix="plan")) == [
        ("acme", "editor", "plan-a"),
        ("acme", "editor", "plan-b"),
        ("acme", "notes", "plan-c"),
        ("beta", "editor", "plan-d"),
        ("acme", "editor", "plan\u00e9"),
    ]
    first = store.search(tenant="acme", app="editor", prefix="plan", limit=2)
    assert names(first) == [("acme", "editor", "plan-a"), ("acme", "editor", "plan-b")]
    after = tuple(names(first)[-1])
    assert names(store.search(tenant="acme", app="editor", prefix="plan", after=after)) == [
        ("acme", "editor", "plan\u00e9")
    ]
    row = store.search(tenant="beta")[0]
    assert row["bytes"] == store.size(keys[3]) == sum(map(len, updates))
    assert row["updated_at"] > 0
    store.compact(keys[3], store.load(keys[3]).last_id)
    assert store.search(tenant="beta")[0]["bytes"] == store.size(keys[3])
    store.delete(keys[0])
    assert names(store.search(tenant="acme", app="editor", prefix="plan-")) == [
        ("acme", "editor", "plan-b")
    ]
    assert {(t["tenant"], t["app"], t["documents"]) for t in store.totals()} == {
        ("acme", "editor", 3),
        ("acme", "notes", 1),
        ("beta", "editor", 1),
    }


def test_audit_entries_page_newest_first(store_factory):  # noqa: F811
    store = store_factory()
    ids = [
        store.record_audit(
            {
                "admin": "alice",
                "role": "operator",
                "action": f"a{i}",
                "target": "t",
                "ip": "::1",
                "details": {"code": 4003},
            }
        )
        for i in range(3)
    ]
    entries = store.audit_entries(limit=2)
    assert [e["action"] for e in entries] == ["a2", "a1"]
    assert entries[0]["details"] == {"code": 4003} and entries[0]["admin"] == "alice"
    assert [e["action"] for e in store.audit_entries(before=entries[-1]["id"])] == ["a0"]
    assert ids == sorted(ids)


def test_an_existing_sqlite_file_gets_its_documents_indexed(tmp_path):
    """A database written before the index existed: opening it fills the index."""
    path = tmp_path / "old.sqlite3"
    store = SQLiteStore(str(path)).start()
    _, updates = edits(3)
    append_all(store, DocKey("acme", "editor", "old"), updates)
    store.close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE document_index")
    db.commit()
    db.close()
    store = SQLiteStore(str(path)).start()
    try:
        assert names(store.search(prefix="ol")) == [("acme", "editor", "old")]
    finally:
        store.close()


SEARCHES = [
    ({"tenant": "t7", "app": "editor", "prefix": "doc-12"}, ("t7", "editor", "doc-12")),
    ({"prefix": "doc-12"}, None),
    ({"tenant": "t7"}, ("t7", "editor", "doc-5")),
]


def _plans(explain, table, mark):
    """The plan of each of SEARCHES, as `explain(sql, args)` gives it (one string)."""
    from wsserver.documents.storage.catalogue import search_plan

    plans = []
    for search, after in SEARCHES:
        where, args, order = search_plan(
            search.get("tenant"), search.get("app"), search.get("prefix", ""), after
        )
        sql = (
            f"SELECT * FROM {table} WHERE {where.replace('?', mark)} "
            f"ORDER BY {', '.join(order)} LIMIT 50"
        )
        plans.append(explain(sql, args))
    return plans


def _plan_sqlite(store, seed):
    db = sqlite3.connect(store.path)
    db.executemany(
        "INSERT INTO document_index (tenant, app, name, bytes, updated_at) VALUES (?, ?, ?, 1, 0)",
        seed,
    )
    db.commit()
    db.execute("ANALYZE")
    return _plans(
        lambda sql, args: " / ".join(r[3] for r in db.execute(f"EXPLAIN QUERY PLAN {sql}", args)),
        "document_index",
        "?",
    )


def _plan_postgres(store, seed):
    import psycopg

    with psycopg.connect(store.url) as conn:
        with conn.cursor().copy(
            "COPY wsserver_document_index (tenant, app, name, bytes, updated_at) FROM STDIN"
        ) as copy:
            for row in seed:
                copy.write_row((*row, 1, 0))
        conn.commit()
        conn.execute("ANALYZE wsserver_document_index")
        return _plans(
            lambda sql, args: " / ".join(
                r[0] for r in conn.execute(f"EXPLAIN {sql}", args).fetchall()
            ),
            "wsserver_document_index",
            "%s",
        )


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_search_of_100000_documents_reads_an_index_not_the_table(kind, tmp_path, request):
    """100,000 rows in the index (written straight into the table: cheap), then the
    plan of each kind of search: an index search, never a scan of the table (nor, in
    SQLite, a sort of it)."""
    if kind == "sqlite":
        store = SQLiteStore(str(tmp_path / "many.sqlite3")).start()
    else:
        store = PostgresStore(request.getfixturevalue("pg_url")).start()
    try:
        seed = [(f"t{i % 10}", "editor", f"doc-{i}") for i in range(100_000)]
        plans = (_plan_sqlite if kind == "sqlite" else _plan_postgres)(store, seed)
        for plan in plans:
            if kind == "sqlite":
                assert "SEARCH document_index USING" in plan and "INDEX" in plan, plan
                assert "SCAN" not in plan and "TEMP B-TREE" not in plan, plan
            else:
                # A bitmap index scan then a sort of the few rows it found is fine too.
                assert "Index" in plan and "Seq Scan" not in plan, plan
        page = store.search(tenant="t7", app="editor", prefix="doc-12", limit=50)
        assert len(page) == 50 and all(r["name"].startswith("doc-12") for r in page)
        assert names(page) == sorted(names(page))
    finally:
        store.close()
