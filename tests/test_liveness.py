"""The process's one liveness scheme (wsserver/support/liveness.py): one id, one
heartbeat greenlet, one TTL, to which the fan-out, the quotas and the registry
subscribe their beats."""

import os
import re
import socket
import time

import gevent
import pytest
from conftest import base_config

from wsserver.errors import ConfigError
from wsserver.settings import Config
from wsserver.support.liveness import Liveness


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def ticks(liveness, clock, n):
    """`n` heartbeats of the fake clock, each beat given its turn."""
    for _ in range(n):
        clock.now += liveness.heartbeat
        liveness.tick()
        gevent.sleep(0)


def test_parts_beat_on_one_heartbeat_each_at_its_pace():
    clock = FakeClock()
    liveness = Liveness(0.25, 2.0, clock=clock)
    beats = {"every": 0, "slow": 0}
    liveness.subscribe("every", lambda: beats.__setitem__("every", beats["every"] + 1))
    liveness.subscribe("slow", lambda: beats.__setitem__("slow", beats["slow"] + 1), every=1.0)
    ticks(liveness, clock, 12)
    # every tick; at most 1 s apart, on the ticks: the 4th, 8th and 12th
    assert beats == {"every": 12, "slow": 3}, beats


def test_the_heartbeat_runs_until_stopped():
    liveness = Liveness(0.02, 1.0).start()
    count = []
    liveness.subscribe("part", lambda: count.append(1))
    deadline = time.monotonic() + 10
    while len(count) < 3:
        assert time.monotonic() < deadline, count
        gevent.sleep(0.01)
    assert liveness.running
    liveness.stop()
    seen = len(count)
    gevent.sleep(0.1)  # five heartbeats
    assert len(count) == seen  # stopped: no more beats
    assert liveness.subscribers == [] and not liveness.running


def test_a_failing_or_hung_beat_stops_neither_the_others_nor_itself():
    clock = FakeClock()
    liveness = Liveness(0.25, 2.0, clock=clock)
    calls = {"failing": 0, "hung": 0, "fine": 0}

    def failing():
        calls["failing"] += 1
        raise RuntimeError("storage down")

    def hung():
        calls["hung"] += 1
        gevent.sleep(10)

    liveness.subscribe("failing", failing)
    hung_beat = liveness.subscribe("hung", hung)
    liveness.subscribe("fine", lambda: calls.__setitem__("fine", calls["fine"] + 1))
    ticks(liveness, clock, 5)
    assert calls == {"failing": 5, "hung": 1, "fine": 5}, calls  # skipped while it runs
    running = hung_beat.running
    liveness.stop()
    gevent.sleep(0)
    assert running is not None and running.dead  # the shutdown ends a beat still running


def test_a_cancelled_beat_stops_and_the_id_names_the_process():
    clock = FakeClock()
    liveness = Liveness(0.25, 2.0, clock=clock)
    count = []
    beat = liveness.subscribe("part", lambda: count.append(1), at_once=True)
    gevent.sleep(0)
    assert count == [1]  # at once, before the first heartbeat
    ticks(liveness, clock, 2)
    beat.cancel()
    ticks(liveness, clock, 2)
    assert count == [1, 1, 1]
    host, pid, tail = liveness.process.rsplit(":", 2)
    assert host == socket.gethostname() and pid == str(os.getpid())
    assert re.fullmatch(r"[0-9a-f]{8}", tail)
    assert Liveness().process != liveness.process  # never reused


def test_process_timings_are_checked(tmp_path):
    config = Config.from_mapping(base_config(tmp_path, process=None))
    assert config.process == {"heartbeat_seconds": 2.0, "ttl_seconds": 10.0}
    for process, key in (
        ({"heartbeat_seconds": 3, "ttl_seconds": 5}, "process.heartbeat_seconds"),
        ({"ttl_seconds": "x"}, "process.ttl_seconds"),
        ({"heartbeat": 1}, "process.heartbeat"),
    ):
        with pytest.raises(ConfigError) as e:
            Config.from_mapping(base_config(tmp_path, process=process))
        assert e.value.key == key
    # A record renewed on the heartbeat must outlive two of them.
    with pytest.raises(ConfigError) as e:
        Config.from_mapping(
            base_config(
                tmp_path,
                process={"heartbeat_seconds": 2, "ttl_seconds": 10},
                rate_limit={"lease_seconds": 3},
            )
        )
    assert e.value.key == "rate_limit.lease_seconds"


ONE_ID = """
import json, sys
from gevent import monkey

monkey.patch_all()  # as the servers are: Redis reads would block the thread otherwise
import gevent
from wsserver.app import create_app, endpoint_of

app = create_app(json.loads(sys.argv[1]))
endpoint = endpoint_of(app)
fanout = endpoint.documents.fanout
registry = next(g.registry for g in endpoint.handshake.gates if hasattr(g, "registry"))
quota = app.extensions["wsserver.limits"].backend
liveness = fanout.liveness
report = {
    "ids": sorted({fanout.host.decode(), registry.node, quota.instance, liveness.process}),
    "shared": liveness is registry.liveness is quota.liveness,
    "subscribers": sorted(liveness.subscribers),
    "timings": [liveness.heartbeat, fanout.host_ttl],
}
running = liveness.running
endpoint.shutdown(timeout=5)
gevent.sleep(0)  # a killed greenlet ends at its next switch
report["left"] = liveness.subscribers
report["running"] = [running, liveness.running]
print(json.dumps(report))
"""


def test_every_part_names_the_process_with_its_one_id(tmp_path, redis_url):
    """The fan-out's host, the registry's node and the quotas' instance are one id, and
    the three beat on one heartbeat with the `process` timings; the shutdown ends it."""
    import json

    from conftest import run_script

    regions = {"eu": "ws://127.0.0.1:1", "us": "ws://127.0.0.1:2"}  # the Redis registry
    config = base_config(tmp_path, redis=redis_url, region="eu", regions=regions)
    report = run_script(ONE_ID, json.dumps(config))
    assert len(report["ids"]) == 1, report
    assert report["shared"], report
    assert report["subscribers"] == ["fan-out", "quota lease", "region registry"], report
    assert report["timings"] == [0.25, 2.0], report  # the test config's
    assert report["left"] == [], report
    assert report["running"] == [True, False], report  # the shutdown stopped it
