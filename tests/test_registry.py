"""Unit tests of the region registry (wsserver/registry) and of Rooms.evict.

Backends: the same contract is checked on the in-process, SQLite (two registries on one
file, as two nodes sharing a storage file), Redis (a real redis-server) and Postgres
(a real Postgres, registries sharing one database) backends.
The shared logic of the base class (connection counting, delayed release after
eviction, heartbeat, lost claims, shutdown) is checked on the in-process backend.
"""

import logging
import threading
import time
import uuid
from types import SimpleNamespace

import gevent
import pytest

from wsserver.documents import DocKey
from wsserver.errors import RegistryUnavailable
from wsserver.regions.registry.memory import MemoryRegistry
from wsserver.regions.registry.sqlite import SQLiteRegistry

TTL = 5.0


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def doc(name=None):
    # A tenant of its own per call: tests sharing one Redis never see each other's keys.
    return DocKey(f"t-{uuid.uuid4().hex[:8]}", "editor", name or "doc")


@pytest.fixture(params=["memory", "sqlite", "redis", "postgres"])
def nodes(request, tmp_path):
    """Three registries sharing one table: eu1 and eu2 (region eu), us1 (region us).

    Returns (eu1, eu2, us1, advance) where advance(seconds) moves time on.
    """
    kind = request.param
    if kind == "memory":
        clock = FakeClock()
        made = [MemoryRegistry(r, clock=clock, ttl=TTL, heartbeat=1.0) for r in ("eu", "eu", "us")]
        for reg in made[1:]:
            reg.claims = made[0].claims

        def advance(seconds):
            clock.now += seconds
    elif kind == "sqlite":
        clock = FakeClock()
        path = str(tmp_path / "shared.sqlite3")
        made = [
            SQLiteRegistry(r, path, clock=clock, ttl=TTL, heartbeat=1.0) for r in ("eu", "eu", "us")
        ]

        def advance(seconds):
            clock.now += seconds
    elif kind == "postgres":
        from wsserver.regions.registry.postgres import PostgresRegistry

        clock = FakeClock()
        url = request.getfixturevalue("pg_url")
        made = [
            PostgresRegistry(r, url, clock=clock, ttl=TTL, heartbeat=1.0)
            for r in ("eu", "eu", "us")
        ]

        def advance(seconds):
            clock.now += seconds
    else:
        from wsserver.regions.registry.redis import RedisRegistry

        url = request.getfixturevalue("redis_url")
        made = [RedisRegistry(r, url, ttl=TTL, heartbeat=1.0) for r in ("eu", "eu", "us")]

        def advance(seconds):
            time.sleep(seconds)

    for reg in made:
        reg._open()
    # The tests call the backend operations directly (no heartbeat greenlet running).
    yield (*made, advance, kind)
    for reg in made:
        reg._close()


def claim(reg, key, ttl=TTL):
    return reg._claim(key, reg.node, reg.region, ttl)


def test_first_claim_wins_and_others_see_it(nodes):
    eu1, eu2, us1, _, _ = nodes
    key = doc()
    assert eu1._lookup(key) is None
    assert claim(eu1, key) == "eu"
    assert claim(us1, key) == "eu"  # refused: answers the owner, takes nothing
    assert us1._lookup(key) == "eu"
    assert eu2._lookup(key) == "eu"


def test_same_region_nodes_share_a_claim_until_the_last_releases(nodes):
    eu1, eu2, us1, _, _ = nodes
    key = doc()
    assert claim(eu1, key) == "eu"
    assert claim(eu2, key) == "eu"
    eu1._release(key, eu1.node)
    assert claim(us1, key) == "eu"  # eu2 still holds it
    eu2._release(key, eu2.node)
    assert us1._lookup(key) is None
    assert claim(us1, key) == "us"
    assert claim(eu1, key) == "us"


def test_release_only_drops_the_callers_holding(nodes):
    eu1, eu2, us1, _, _ = nodes
    key = doc()
    assert claim(eu1, key) == "eu"
    us1._release(key, us1.node)  # not a holder: changes nothing
    eu2._release(key, eu2.node)  # same region but not a holder: changes nothing
    assert us1._lookup(key) == "eu"
    assert claim(us1, key) == "eu"


def test_claims_expire_after_their_ttl(nodes):
    eu1, eu2, us1, advance, kind = nodes
    key = doc()
    ttl = 0.6 if kind == "redis" else TTL
    assert claim(eu1, key, ttl) == "eu"
    advance(ttl * 0.5)
    assert claim(us1, key, ttl) == "eu"
    advance(ttl * 0.5 + 0.2)
    assert us1._lookup(key) is None
    assert claim(us1, key, ttl) == "us"
    assert claim(eu1, key, ttl) == "us"


def test_renewal_extends_only_live_holdings_of_the_caller(nodes):
    eu1, eu2, us1, advance, kind = nodes
    key, other = doc("a"), doc("b")
    # Redis expires on its own clock: each renewal comes half a ttl after the last, and a
    # loaded machine must not stretch that past the ttl (0.6 s left 0.3 s: seen expiring)
    ttl = 1.2 if kind == "redis" else TTL
    assert claim(eu1, key, ttl) == "eu"
    for _ in range(3):
        advance(ttl * 0.5)
        assert eu1._renew([key, other], eu1.node, ttl) == {key}  # never creates `other`
    assert us1._lookup(key) == "eu"  # alive well past one ttl thanks to the renewals
    assert eu1._lookup(other) is None
    assert eu2._renew([key], eu2.node, ttl) == set()  # eu2 holds nothing
    eu1._release(key, eu1.node)
    assert eu1._renew([key], eu1.node, ttl) == set()  # a released holding stays released
    assert us1._lookup(key) is None
    advance(ttl + 0.2)
    assert claim(eu1, doc("c"), ttl) == "eu"
    assert eu1._renew([doc("c")], eu1.node, ttl) == set()  # a different key, not held


def test_expired_holding_is_not_renewed(nodes):
    eu1, eu2, us1, advance, kind = nodes
    key = doc()
    ttl = 0.5 if kind == "redis" else TTL
    assert claim(eu1, key, ttl) == "eu"
    advance(ttl + 0.2)
    assert eu1._renew([key], eu1.node, ttl) == set()


@pytest.mark.parametrize("nodes", ["sqlite", "redis", "postgres"], indirect=True)  # shared
def test_racing_claims_from_two_regions_end_with_one_owner(nodes):
    eu1, eu2, us1, advance, kind = nodes
    keys = [doc(f"race-{i}") for i in range(40)]
    answers = {"eu": [], "us": []}
    barrier = threading.Barrier(2)

    def run(reg):
        barrier.wait()
        for key in keys:
            answers[reg.region].append(claim(reg, key))

    threads = [threading.Thread(target=run, args=(reg,)) for reg in (eu1, us1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for i, key in enumerate(keys):
        eu_answer, us_answer = answers["eu"][i], answers["us"][i]
        assert eu_answer == us_answer, key  # both were told the same single owner
        assert eu1._lookup(key) == eu_answer


# --- the shared logic of the base class ----------------------------------------------


class Recorder:
    """evict / on_claim_lost hooks that record what the registry asked for, in order."""

    def __init__(self, registry_ref):
        self.events = []
        self.evictable = True
        self.registry_ref = registry_ref

    def evict(self, key, compact=True):
        reg = self.registry_ref[0]
        self.events.append(("evict", key.name, compact, reg._lookup(key)))
        return self.evictable

    def on_claim_lost(self, key, region):
        self.events.append(("lost", key.name, region))

    def on_claim_reasserted(self, key):
        self.events.append(("reasserted", key.name))


class FaultyRegistry(MemoryRegistry):
    """The in-process backend with the faults of a real one: `down` (every call fails,
    as with an unreachable Redis) and `latency` (seconds each claim and release takes,
    a far-away Redis)."""

    down = False
    latency = 0.0
    claims_made = 0

    def _backend_call(self, operation, *args):
        if self.down:
            raise ConnectionError("registry down")
        if self.latency:
            gevent.sleep(self.latency)
        return getattr(super(), operation)(*args)

    def _claim(self, *args):
        self.claims_made += 1
        return self._backend_call("_claim", *args)

    def _renew(self, *args):
        return self._backend_call("_renew", *args)

    def _release(self, *args):
        return self._backend_call("_release", *args)


def make(region="eu", shared=None, clock=None, **options):
    """A started registry whose hooks record into the returned Recorder. `clock`: a
    FakeClock the test moves (claims' expiries and the base class's renewal times);
    greenlets (heartbeat, delayed releases) only run while the test yields."""
    ref = []
    recorder = Recorder(ref)
    options.setdefault("release_after", 0.02)
    options.setdefault("ttl", 1.0)
    options.setdefault("heartbeat", 0.2)
    options.setdefault("retry", (0.01, 0.02))
    reg = FaultyRegistry(
        region,
        clock=clock or time.monotonic,
        evict=recorder.evict,
        on_claim_lost=recorder.on_claim_lost,
        on_claim_reasserted=recorder.on_claim_reasserted,
        **options,
    )
    if shared is not None:
        reg.claims = shared.claims
    ref.append(reg)
    return reg.start(), recorder


def test_claim_is_released_after_the_last_connection_and_the_eviction():
    reg, rec = make(release_after=0.05)
    key = doc()
    assert reg.acquire(key) == "eu"
    assert reg.acquire(key) == "eu"
    reg.release(key)
    gevent.sleep(0.1)
    assert reg.holds(key) and reg.lookup(key) == "eu"  # one connection left
    reg.release(key)
    assert reg.holds(key)  # not at once: release_after first
    gevent.sleep(0.1)
    assert not reg.holds(key)
    assert reg.lookup(key) is None
    # Evicted (with compaction) while the claim was still held, then released.
    assert rec.events == [("evict", key.name, True, "eu")]
    reg.close()


def test_a_connection_that_comes_back_cancels_the_release():
    reg, rec = make(release_after=0.1)
    key = doc()
    reg.acquire(key)
    reg.release(key)
    gevent.sleep(0.03)
    reg.acquire(key)
    gevent.sleep(0.15)
    assert reg.holds(key) and rec.events == []
    reg.release(key)
    gevent.sleep(0.15)
    assert not reg.holds(key) and len(rec.events) == 1
    reg.close()


def test_release_waits_until_the_room_is_evicted():
    reg, rec = make(release_after=0.01, retry=(0.01, 0.02))
    key = doc()
    rec.evictable = False  # e.g. storage down: the flush fails
    reg.acquire(key)
    reg.release(key)
    gevent.sleep(0.1)
    assert reg.holds(key) and reg.lookup(key) == "eu"
    assert len(rec.events) >= 2  # retried
    rec.evictable = True
    gevent.sleep(0.1)
    assert not reg.holds(key) and reg.lookup(key) is None
    reg.close()


def test_other_region_is_answered_and_nothing_is_taken():
    eu, _ = make("eu")
    us, _ = make("us", shared=eu)
    key = doc()
    assert eu.acquire(key) == "eu"
    assert us.acquire(key) == "eu"
    assert not us.holds(key) and key not in us._holdings  # no entry left behind either
    eu.release(key)
    gevent.sleep(0.1)
    assert us.acquire(key) == "us"
    assert eu.acquire(key) == "us"
    us.close()
    eu.close()


def test_concurrent_acquires_share_one_claim():
    reg, _ = make(release_after=0.02)
    reg.latency = 0.05  # every acquire arrives while the first claim is under way
    key = doc()
    results = [g.get() for g in [gevent.spawn(reg.acquire, key) for _ in range(5)]]
    assert results == ["eu"] * 5
    assert reg.claims_made == 1
    reg.latency = 0.0
    for _ in range(4):  # five connections counted: the claim outlives four releases
        reg.release(key)
    gevent.sleep(0.06)
    assert reg.holds(key)
    reg.release(key)
    gevent.sleep(0.06)
    assert not reg.holds(key)
    reg.close()


def test_heartbeat_keeps_claims_alive_beyond_the_ttl():
    clock = FakeClock()
    reg, _ = make(clock=clock, ttl=1.0, heartbeat=0.01, release_after=30)
    key = doc()
    reg.acquire(key)
    for _ in range(6):  # 3 s of the registry's time: three TTLs
        clock.now += 0.5
        gevent.sleep(0.03)  # the heartbeat runs
    assert reg.lookup(key) == "eu"
    reg.close()
    assert reg.lookup(key) is None  # close() released it at once


def test_claim_lost_to_another_region_closes_and_evicts_without_compaction():
    clock = FakeClock()
    eu, rec = make("eu", clock=clock, ttl=1.0, heartbeat=0.1, release_after=30)
    us, _ = make("us", shared=eu, clock=clock, ttl=1.0, heartbeat=0.1)
    key = doc()
    assert eu.acquire(key) == "eu"
    clock.now += 2.0  # a stalled node (nothing yields: no heartbeat): its holding expires
    assert us.acquire(key) == "us"
    eu.renew()  # the stall ends: renewal fails, and "us" owns it now
    gevent.sleep(0.05)
    assert ("lost", key.name, "us") in rec.events
    with pytest.raises(RegistryUnavailable):
        eu.acquire(key)  # until its connections are gone and the room dropped
    eu.release(key)  # the closed connection ends
    gevent.sleep(0.05)
    assert ("evict", key.name, False, "us") in rec.events  # no compaction of the stale copy
    assert not eu.holds(key)
    assert us.lookup(key) == "us"  # the eu release did not touch the us claim
    assert eu.acquire(key) == "us"  # forgotten: no longer "moving", and nothing taken
    us.close()
    eu.close()


def test_an_outage_longer_than_the_ttl_keeps_serving_and_reasserts_the_claims():
    """Collaboration survives a registry outage: nothing is closed or lost; compaction
    waits while ownership is in doubt; the claim is taken again when the registry is back
    and the room refreshed from storage (another region may have written meanwhile)."""
    clock = FakeClock()
    # heartbeat: 0.9 real seconds, never reached: heartbeats driven by hand below
    reg, rec = make(clock=clock, ttl=1.0, heartbeat=0.9, release_after=30)
    key = doc()
    assert reg.acquire(key) == "eu"
    reg.down = True
    for _ in range(30):  # 3 s of failed heartbeats: three TTLs
        clock.now += 0.1
        reg.renew()
    assert rec.events == []  # nothing closed, nothing evicted
    assert reg.acquire(key) == "eu"  # a document held here is still served: no registry call
    reg.release(key)
    assert not reg.may_compact(key)  # but no snapshot while ownership is in doubt
    with pytest.raises(RegistryUnavailable):
        reg.acquire(doc("new"))  # a new document cannot be claimed: 1013
    reg.down = False
    reg.renew()  # the registry is back; our holding had expired there
    assert not reg.may_compact(key)  # not before the room is refreshed from storage
    gevent.sleep(0)  # the refresh runs in a greenlet of its own
    assert rec.events == [("reasserted", key.name)]
    assert reg.lookup(key) == "eu" and reg.may_compact(key)
    reg.close()


def test_claims_fail_fast_after_a_registry_failure():
    """A hung registry costs one call timeout, not one per handshake: after a failure,
    claims of new documents fail at once for a growing, capped back-off."""
    clock = FakeClock()
    reg, _ = make(clock=clock, ttl=1.0, heartbeat=0.9)  # no heartbeat during the test
    reg.down = True
    for i in range(5):
        with pytest.raises(RegistryUnavailable):
            reg.acquire(doc(f"d{i}"))
    assert reg.claims_made == 1  # the other four failed without a call
    clock.now += 0.6  # past the first back-off (0.5 s): one more try, which fails
    with pytest.raises(RegistryUnavailable):
        reg.acquire(doc("again"))
    assert reg.claims_made == 2
    clock.now += 0.6  # the back-off doubled to 1 s: still failing fast
    with pytest.raises(RegistryUnavailable):
        reg.acquire(doc("again"))
    assert reg.claims_made == 2
    reg.down = False
    clock.now += 0.5
    assert reg.acquire(doc("again")) == "eu"  # the registry answers: back to normal
    assert reg.acquire(doc("next")) == "eu"
    reg.close()


def test_close_releases_every_claim_at_once():
    eu, _ = make("eu", release_after=30)
    us, _ = make("us", shared=eu)
    keys = [doc(f"d{i}") for i in range(3)]
    for key in keys:
        eu.acquire(key)
    eu.release(keys[0])  # one waiting for its delayed release, two with connections
    eu.close()
    assert [us.acquire(key) for key in keys] == ["us"] * 3
    us.close()


# --- Rooms.evict ------------------------------------------------------------------------


class FakeConn:
    sending = False  # Connection.sending: nothing queued

    def __init__(self):
        self.principal = None  # an anonymous token
        self.awareness_ids, self.awareness_ignored = set(), 0
        self.sent = []
        self.room = None

    def send_message(self, message):
        self.sent.append(message)

    def send(self, frame):
        self.sent.append(frame)


def manager_config():
    """A config for a DocumentManager on a memory store: no unloading, no compaction by
    count during the test."""
    from wsserver.settings import Config

    return Config.from_mapping(
        {
            "auth": {
                "tenants": {
                    "t": {
                        "keys": [{"kid": "k", "alg": "HS256", "secret": "s" * 32}],
                        "apps": {"a": {}},
                    }
                }
            },
            "unload_after": 60,
            "compact_after_updates": 1000,
            "storage": "memory://",
        }
    )


def test_evict_flushes_and_drops_only_an_empty_room():
    from pycrdt import Doc, Text

    from wsserver.documents.manager import DocumentManager
    from wsserver.documents.storage.memory import MemoryStore

    store = MemoryStore().start()
    config = manager_config()
    rooms = DocumentManager(store, config)
    key = DocKey("t", "a", "d")
    conn = FakeConn()
    room = rooms.join(key, conn)
    source = Doc()
    text = source.get("t", type=Text)
    text += "hello"
    room.apply_update(source.get_update(), conn)
    assert rooms.evict(key) is False  # a connection is still there
    rooms.leave(room, conn)
    assert room.unloader is not None
    assert rooms.evict(key) is True
    assert rooms.get(key) is None and room.pending == 0
    assert store.snapshots[key]  # compacted into a snapshot before the drop
    gevent.sleep(0)
    assert room.unloader is None or room.unloader.dead
    # Coming back loads from storage: a new room, with the content.
    again = rooms.join(key, FakeConn())
    assert again is not room
    copy = Doc()
    copy.apply_update(again.doc.get_update())
    assert str(copy.get("t", type=Text)) == "hello"
    assert rooms.evict(DocKey("t", "a", "never-loaded")) is True
    store.close()


def test_evict_gives_up_on_a_compaction_that_never_ends(monkeypatch):
    """An eviction waits for a compaction under way at most COMPACTION_WAIT seconds, then
    raises (the registry retries later) with the room kept loaded and its unloader back."""
    from wsserver.documents import manager
    from wsserver.documents.manager import DocumentManager
    from wsserver.documents.storage import StoreError
    from wsserver.documents.storage.memory import MemoryStore

    monkeypatch.setattr(manager, "COMPACTION_WAIT", 0.2)
    store = MemoryStore().start()
    rooms = DocumentManager(store, manager_config())
    key = DocKey("t", "a", "stuck")
    conn = FakeConn()
    room = rooms.join(key, conn)
    rooms.leave(room, conn)
    room.compacting = True  # a compaction stuck on storage
    with gevent.Timeout(5):
        with pytest.raises(StoreError, match="compaction is still running"):
            rooms.evict(key)
    assert rooms.get(key) is room and room.unloader is not None
    room.compacting = False
    assert rooms.evict(key) is True
    store.close()


def test_may_compact_only_while_ownership_is_certain():
    clock = FakeClock()
    # heartbeat: 0.4 real seconds, never reached: heartbeats driven by hand
    reg, rec = make(clock=clock, ttl=0.5, heartbeat=0.4, release_after=30)
    key = doc()
    assert not reg.may_compact(key)  # not held
    reg.acquire(key)
    for _ in range(8):
        clock.now += 0.1
        reg.renew()
    assert reg.may_compact(key)  # renewed by the heartbeat well past one TTL
    clock.now += 0.6  # frozen: no renewal for longer than the TTL
    assert not reg.may_compact(key)
    # The holding had expired: another region may have written meanwhile. Nobody else
    # claimed it, so the claim is re-asserted and the room refreshed from storage
    # before compaction is allowed again.
    reg.renew()
    assert not reg.may_compact(key)  # not before the room is refreshed from storage
    gevent.sleep(0)  # the refresh runs in a greenlet of its own
    assert rec.events == [("reasserted", key.name)]
    assert reg.holds(key) and reg.may_compact(key)
    reg.close()


def test_a_room_refuses_a_compaction_the_registry_does_not_allow(caplog):
    """Refused with a StoreError (an unload keeps the room and retries); a fold due in
    the background is a warning without a traceback: a safety refusal, not a fault."""
    from pycrdt import Doc, Text

    from wsserver.documents.manager import DocumentManager
    from wsserver.documents.storage import StoreError
    from wsserver.documents.storage.memory import MemoryStore

    store = MemoryStore().start()
    config = manager_config()
    lost = DocKey("t", "a", "lost")
    documents = DocumentManager(store, config, before_compact=lambda k: k != lost)
    for key in (lost, DocKey("t", "a", "other")):
        conn = FakeConn()
        room = documents.join(key, conn)
        source = Doc()
        source.get("t", type=Text).insert(0, "x")
        room.apply_update(source.get_update(), conn)
        room.wait_durable()
        if key == lost:
            with pytest.raises(StoreError):
                room.compact()
            assert key not in store.snapshots and len(store.logs[key]) == 1
            with caplog.at_level(logging.WARNING, logger="wsserver.documents.compaction"):
                room.compaction.run_logged()  # what Room.maybe_compact's greenlet runs
            (record,) = caplog.records
            assert record.levelno == logging.WARNING and record.exc_info is None
            assert "may no longer own it" in record.getMessage()
        else:
            room.compact()
            assert store.snapshots[key]
    store.close()


def test_an_acquire_during_a_release_is_not_undone_by_it():
    reg, _ = make(release_after=0.01)
    key = doc()
    reg.acquire(key)
    reg.latency = 0.05  # e.g. a round trip to a far-away Redis
    reg.release(key)
    gevent.sleep(0.03)  # the release is under way
    assert reg.acquire(key) == "eu"
    gevent.sleep(0.1)
    assert reg.holds(key)
    assert reg.lookup(key) == "eu"  # the new claim is in the table, not released
    reg.close()


def test_a_claim_whose_only_connection_was_refused_is_let_go_at_once():
    """A later gate (quotas) refusing the handshake must not leave the document live in
    this region for release_after seconds, redirecting other regions' clients to it."""
    from wsserver.errors import ConnectionLimit
    from wsserver.handshake.claims import Principal
    from wsserver.handshake.handshake import Gate, Handshake
    from wsserver.regions.gate import RegionGate

    reg, _ = make(release_after=30)
    key = doc()

    class RegionOnly(RegionGate):
        def __init__(self, registry):  # the gate's admit, without config and rooms
            self.registry = registry
            self.region = registry.region
            self.map = SimpleNamespace(pinned=lambda key: None)

    class Refuse(Gate):
        def admit(self, session):
            raise ConnectionLimit()

    class Verified:
        def verify(self, token):
            return Principal(key.tenant, key.app, None, {})

        def authorize(self, principal, origin):
            return SimpleNamespace(name=key.app)

    handshake = Handshake(Verified(), [RegionOnly(reg), Refuse()])
    with pytest.raises(ConnectionLimit):
        handshake.check({"PATH_INFO": "/" + key.name, "QUERY_STRING": "token=x"})
    gevent.sleep(0.05)
    assert not reg.holds(key)
    # an admitted connection that ends still keeps the claim for release_after
    assert reg.acquire(key) == reg.region
    reg.release(key)
    gevent.sleep(0.05)
    assert reg.holds(key)
    reg.close()
