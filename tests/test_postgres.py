"""What only the Postgres store has: URL forms, the versioned schema, compaction under
an advisory lock across processes, and riding out a Postgres restart. (The store
contract itself runs on Postgres in test_store.py, the registry's in test_registry.py.)"""

import logging
import threading
import time

import psycopg
import pytest
from pycrdt import Doc, Text
from test_store import append_all, doc_from

from wsserver.documents import DocKey
from wsserver.documents.storage import open_store
from wsserver.documents.storage.postgres import LOCK_NAMESPACE, PostgresStore, doc_lock_key
from wsserver.documents.storage.postgres_schema import MIGRATIONS, SCHEMA_VERSION
from wsserver.errors import ConfigError, StorageSchemaError
from wsserver.scrub import redact_url
from wsserver.settings import Config

KEY = DocKey("acme", "editor", "doc")


def text_update(text, client_id=None):
    doc = Doc(client_id=client_id) if client_id else Doc()
    doc.get("t", type=Text).insert(0, text)
    return doc.get_update()


def text_of(updates):
    return str(doc_from(updates).get("t", type=Text))


def query(url, sql, params=()):
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else None


@pytest.fixture
def stores():
    made = []
    yield made
    for store in made:
        if not store._closed:
            store.close(timeout=5)


# --- URLs and settings -------------------------------------------------------------------


def test_both_url_forms_and_query_options_reach_the_database(pg_url, stores):
    heroku = pg_url.replace("postgresql://", "postgres://") + "?application_name=wsserver-test"
    config = Config.from_mapping(
        {"storage": heroku, "storage_pool_size": 3, "auth": {"tenants": {}}}
    )
    store = open_store(config.storage, pool_size=config.storage_pool_size)
    stores.append(store)
    assert isinstance(store, PostgresStore)
    assert store.pool.max_size == 3
    with store.pool.connection() as conn:
        assert conn.execute("SHOW application_name").fetchone()[0] == "wsserver-test"
    append_all(store, KEY, [text_update("hello")])
    assert text_of(store.load(KEY).updates) == "hello"


def test_config_refuses_other_schemes_and_a_bad_pool_size():
    with pytest.raises(ConfigError, match="postgresql://"):
        Config.from_mapping({"storage": "mysql://x", "auth": {"tenants": {}}})
    with pytest.raises(ConfigError, match="storage_pool_size"):
        Config.from_mapping(
            {"storage": "postgres://x/db", "storage_pool_size": 0, "auth": {"tenants": {}}}
        )


def test_password_is_never_shown():
    assert (
        redact_url("postgres://u:s3cret@db.example.com:5432/d?sslmode=require")
        == "postgres://u:***@db.example.com:5432/d?sslmode=require"
    )
    assert redact_url("postgresql://db/d") == "postgresql://db/d"


def test_unreachable_database_is_a_clear_start_up_error(postgres_server):
    from conftest import free_port

    with pytest.raises(ConfigError, match=r"cannot connect to postgresql://u:\*\*\*@"):
        # storage_timeout 0.5: the pool gives up opening after 1 s (the shipped 5 s: 10 s).
        PostgresStore(f"postgresql://u:pw@127.0.0.1:{free_port()}/x", timeout=0.5).start()


# --- schema ------------------------------------------------------------------------------


def test_a_new_database_gets_every_table_and_the_current_version(pg_url, stores):
    stores.append(PostgresStore(pg_url).start())
    assert query(pg_url, "SELECT version FROM wsserver_schema") == [(SCHEMA_VERSION,)]
    tables = {
        r[0]
        for r in query(pg_url, "SELECT tablename FROM pg_tables WHERE tablename LIKE 'wsserver_%%'")
    }
    assert tables == {
        "wsserver_schema",
        "wsserver_updates",
        "wsserver_snapshots",
        "wsserver_registry",
        "wsserver_document_index",
        "wsserver_admin_audit",
        "wsserver_versions",
        "wsserver_trash",
    }
    # a second process starting on it changes nothing
    stores.append(PostgresStore(pg_url).start())
    assert query(pg_url, "SELECT version FROM wsserver_schema") == [(SCHEMA_VERSION,)]


def test_an_older_schema_is_migrated_in_place(pg_url, stores):
    # A database as version 1 left it, with a document in it.
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE wsserver_schema (version integer NOT NULL)")
        conn.execute(MIGRATIONS[0])
        conn.execute("INSERT INTO wsserver_schema VALUES (1)")
        conn.execute(
            "INSERT INTO wsserver_updates (tenant, app, name, data) VALUES (%s, %s, %s, %s)",
            (*KEY, text_update("kept")),
        )
    store = PostgresStore(pg_url).start()
    stores.append(store)
    assert query(pg_url, "SELECT version FROM wsserver_schema") == [(SCHEMA_VERSION,)]
    assert text_of(store.load(KEY).updates) == "kept"
    assert query(pg_url, "SELECT count(*) FROM wsserver_registry") == [(0,)]
    # the admin console's document index was filled from what was stored
    assert [(r["name"], r["bytes"]) for r in store.search()] == [(KEY.name, store.size(KEY))]


@pytest.mark.parametrize("three", ["console", "history"])
def test_a_database_at_either_version_3_is_migrated_to_4(pg_url, stores, three):
    """Two branches each took schema version 3 (the admin console's index and audit
    trail; the history's versions and trash) before the console's became 3 and the
    history's 4: a database either one migrated ends with every table, its data kept,
    the index filled from what is stored."""
    from wsserver.documents.storage import postgres_history

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE wsserver_schema (version integer NOT NULL)")
        conn.execute(MIGRATIONS[0])
        conn.execute(
            "INSERT INTO wsserver_updates (tenant, app, name, data) VALUES (%s, %s, %s, %s)",
            (*KEY, text_update("kept")),
        )
        conn.execute(MIGRATIONS[1])
        conn.execute(MIGRATIONS[2] if three == "console" else postgres_history.MIGRATION)
        conn.execute("INSERT INTO wsserver_schema VALUES (3)")
        if three == "history":
            conn.execute(
                "INSERT INTO wsserver_versions (tenant, app, name, created_at, label, authors, "
                "upto_id, data) VALUES (%s, %s, %s, 1.0, 'old', '[]', 0, %s)",
                (*KEY, text_update("then")),
            )
    store = PostgresStore(pg_url).start()
    stores.append(store)
    assert SCHEMA_VERSION == 4
    assert query(pg_url, "SELECT version FROM wsserver_schema") == [(4,)]
    assert text_of(store.load(KEY).updates) == "kept"
    assert [(r["name"], r["bytes"]) for r in store.search()] == [(KEY.name, store.size(KEY))]
    labels = [v["label"] for v in store.versions(KEY)]
    assert labels == (["old"] if three == "history" else [])
    made = store.create_version(KEY, "now")
    assert [v["label"] for v in store.versions(KEY)] == ["now", *labels]
    assert made is not None and made["label"] == "now"
    store.trash(KEY)
    assert store.load(KEY).deleted_at is not None


def test_a_newer_schema_is_refused_and_left_alone(pg_url, start_server, stores):
    stores.append(PostgresStore(pg_url).start())
    query(pg_url, "UPDATE wsserver_schema SET version = %s", (SCHEMA_VERSION + 1,))
    before = query(pg_url, "SELECT count(*) FROM wsserver_updates")
    with pytest.raises(StorageSchemaError, match="newer than this wsserver knows"):
        PostgresStore(pg_url).start()
    assert query(pg_url, "SELECT version FROM wsserver_schema") == [(SCHEMA_VERSION + 1,)]
    assert query(pg_url, "SELECT count(*) FROM wsserver_updates") == before
    # what a user sees: `wsserver serve` stops with that message, no traceback
    with pytest.raises(RuntimeError) as failed:
        start_server(storage=pg_url)
    assert f"schema is version {SCHEMA_VERSION + 1}, newer than this wsserver knows" in str(
        failed.value
    )
    assert "Traceback" not in str(failed.value)


# --- compaction across processes ---------------------------------------------------------


def test_a_row_committed_during_a_compaction_is_kept(pg_url, stores, monkeypatch):
    """Row ids are handed out before commit: another process may commit a row with a
    lower id than rows a compaction covers, even while the compaction runs. The
    compaction must neither drop it nor fold it twice."""
    from wsserver.documents.storage import stored

    store = PostgresStore(pg_url).start()
    stores.append(store)
    append_all(store, KEY, [text_update("a", 1)])
    late = psycopg.connect(pg_url)  # another process, mid-transaction
    late.execute(
        "INSERT INTO wsserver_updates (tenant, app, name, data) VALUES (%s, %s, %s, %s)",
        (*KEY, text_update("late", 2)),
    )
    ids = append_all(store, KEY, [text_update("b", 3)])
    real_fold = stored.fold

    def fold_while_the_other_commits(updates):
        late.commit()  # between the compaction's reads and its delete
        return real_fold(updates)

    monkeypatch.setattr(stored, "fold", fold_while_the_other_commits)
    store.compact(KEY, ids[-1], None, None)
    late.close()
    loaded = store.load(KEY)
    assert sorted(text_of(loaded.updates)) == sorted("alateb")
    assert loaded.log_count == 1  # the late row, still in the log after the snapshot


def test_one_compactor_per_document_at_a_time(pg_url, stores):
    store = PostgresStore(pg_url).start()
    stores.append(store)
    ids = append_all(store, KEY, [text_update("x")])
    holder = psycopg.connect(pg_url, autocommit=True)  # another process compacting KEY
    holder.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_NAMESPACE, doc_lock_key(KEY)))
    done = threading.Event()
    thread = threading.Thread(target=lambda: (store.compact(KEY, ids[-1]), done.set()))
    thread.start()
    try:
        assert not done.wait(0.5)  # waiting for the other compactor
        other = DocKey("acme", "editor", "other")  # another document is not held up
        other_ids = append_all(store, other, [text_update("y")])
        store.compact(other, other_ids[-1])
    finally:
        holder.close()  # its session ends: the lock is released
    assert done.wait(10)
    thread.join()
    assert store.load(KEY).log_count == 0
    assert text_of(store.load(KEY).updates) == "x"


def test_the_database_bounds_every_statement_and_lock_wait(pg_url, stores):
    """`storage_statement_timeout` and `storage_lock_timeout` are set on every pooled
    connection: a compaction waiting for another compactor's advisory lock fails after
    the lock timeout (and is retried later) instead of waiting for ever, and a statement
    is cancelled by the server."""
    store = PostgresStore(pg_url, statement_timeout=1.5, lock_timeout=0.3).start()
    stores.append(store)
    with store.pool.connection() as conn:
        assert conn.execute("SHOW statement_timeout").fetchone() == ("1500ms",)
        assert conn.execute("SHOW lock_timeout").fetchone() == ("300ms",)
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(5)")
    ids = append_all(store, KEY, [text_update("x")])
    holder = psycopg.connect(pg_url, autocommit=True)  # another compactor, stuck
    holder.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_NAMESPACE, doc_lock_key(KEY)))
    outcome = []

    def compact():
        try:
            outcome.append(store.compact(KEY, ids[-1]))
        except Exception as e:
            outcome.append(e)

    thread = threading.Thread(target=compact)
    thread.start()
    thread.join(10)
    holder.close()
    assert not thread.is_alive(), "the compaction waited for the lock without bound"
    assert isinstance(outcome[0], psycopg.errors.LockNotAvailable), outcome
    assert store.load(KEY).log_count == 1  # left as it was
    store.compact(KEY, ids[-1])  # the lock is free again
    assert store.load(KEY).log_count == 0


def test_the_region_registry_in_postgres_runs_with_the_storage_timeouts(pg_url, tmp_path):
    """The registry's own pool (several regions, no Redis) bounds its calls as the
    store's does: the configured `storage_*` timeouts, not the defaults."""
    from conftest import base_config

    from wsserver.regions.registry import open_registry

    regions = {"eu": "ws://127.0.0.1:1", "us": "ws://127.0.0.1:2"}
    config = Config.from_mapping(
        base_config(
            tmp_path,
            storage=pg_url,
            region="eu",
            regions=regions,
            storage_timeout=2,
            storage_statement_timeout=1.5,
            storage_lock_timeout=0.3,
        )
    )
    registry = open_registry(config)
    try:
        assert registry.pool.timeout == 2
        with registry.pool.connection() as conn:
            assert conn.execute("SHOW statement_timeout").fetchone() == ("1500ms",)
            assert conn.execute("SHOW lock_timeout").fetchone() == ("300ms",)
    finally:
        registry.close()


# --- outages -----------------------------------------------------------------------------


@pytest.mark.long
def test_commits_wait_out_a_postgres_restart(own_postgres, stores, caplog):
    caplog.set_level(logging.ERROR)
    store = PostgresStore(own_postgres.url()).start()
    stores.append(store)
    append_all(store, KEY, [text_update("before ", 1)])
    own_postgres.stop()
    confirmed = []
    for i, word in enumerate(["during ", "the ", "outage "]):
        store.append(KEY, text_update(word, 10 + i), confirmed.append)
    assert not store.flush(timeout=3)
    assert confirmed == []  # not confirmed while the database is down
    own_postgres.start()
    assert store.flush(timeout=30)
    assert len(confirmed) == 3
    assert sorted(text_of(store.load(KEY).updates).split()) == sorted(
        ["before", "during", "the", "outage"]
    )
    failures = [r for r in caplog.records if "storage commit" in r.getMessage()]
    assert 1 <= len(failures) <= 2  # once per 10 s, not once per retry


COOPERATION = """
from gevent import monkey
monkey.patch_all()
import sys, time, gevent
from wsserver.documents.storage.postgres import PostgresStore
store = PostgresStore(sys.argv[1]).start()
def slow_query():
    with store.pool.connection() as conn:
        conn.execute("SELECT pg_sleep(1)")
ticks = 0
started = time.monotonic()
query = gevent.spawn(slow_query)
while not query.ready():
    gevent.sleep(0.01)
    ticks += 1
query.get()
store.close()
print(ticks, round(time.monotonic() - started, 2))
"""


def test_a_query_never_blocks_the_other_greenlets(pg_url):
    """In a patched process (as `wsserver serve` and the gunicorn worker run) a 1 s query
    suspends only its own greenlet: the others keep running meanwhile."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", COOPERATION, pg_url], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    ticks, took = out.stdout.split()
    assert float(took) >= 1.0
    assert int(ticks) > 30, out.stdout  # ~90 ticks of 10 ms in that second
    assert "blocks the whole process" not in out.stderr


@pytest.mark.long
def test_readiness_blames_only_a_wedged_pool_never_a_shared_outage(own_postgres, stores):
    """Postgres down is every process's outage: readiness holds, health says so. A pool
    that cannot hand out a connection while the database answers others is this
    process's own fault: readiness fails, and holds again once the pool is free."""
    from wsserver.documents.storage import StoreError

    store = PostgresStore(own_postgres.url(), pool_size=1, timeout=1).start()
    stores.append(store)
    store.check()
    assert store.health() is None
    own_postgres.stop()
    for _ in range(3):
        store.check()
    assert store.health().startswith("unreachable: "), store.health()
    own_postgres.start()
    deadline = time.monotonic() + 20
    while store.health() is not None:  # the pool reconnects by itself
        assert time.monotonic() < deadline, "the pool did not reconnect"
        time.sleep(0.2)
    held = store.pool.getconn()  # its only connection, never given back: wedged
    with pytest.raises(StoreError, match="while storage answers"):
        for _ in range(4):
            store.check()
    store.pool.putconn(held)
    store.check()
