"""The shared helpers of wsserver/support: the back-off rule and the Redis fail-fast
window built on it, the one polling rule, the one installer of signal handlers, gevent's
patching at start."""

import subprocess
import sys
import textwrap
import time

import gevent
import pytest

from wsserver.errors import ConfigError
from wsserver.support.backoff import Backoff
from wsserver.support.redis import FailFast
from wsserver.support.validators import fraction_of, number, section
from wsserver.support.wait import wait_until


def test_backoff_doubles_up_to_its_cap_and_starts_over_after_a_success():
    slept = []
    backoff = Backoff(0.05, 0.3, sleep=slept.append)
    assert [backoff.sleep() for _ in range(5)] == [0.05, 0.1, 0.2, 0.3, 0.3]
    assert slept == [0.05, 0.1, 0.2, 0.3, 0.3]
    backoff.reset()
    assert backoff.next() == 0.05
    with pytest.raises(ValueError):
        Backoff(0, 1)


def test_the_redis_fail_fast_window_follows_the_backoff_rule():
    now = [0.0]
    window = FailFast(clock=lambda: now[0], first=0.5, cap=2.0)
    assert not window.skip() and not window.failing

    def window_after_a_failure():
        """How long skip() stays True after one more failure, to 0.01 s."""
        start = now[0]
        window.failed()
        assert window.failing
        length = 0.0
        while window.skip():
            length += 0.01
            now[0] = start + length
        return round(length, 2)

    assert [window_after_a_failure() for _ in range(4)] == [0.5, 1.0, 2.0, 2.0]
    window.answered()  # an answer starts the rule over
    assert not window.failing and window_after_a_failure() == 0.5


def test_wait_until_returns_once_the_condition_holds_or_false_after_a_last_check():
    done = []
    gevent.spawn_later(0.05, done.append, True)
    assert wait_until(lambda: done, timeout=10.0, interval=0.01)
    checks = []
    started = time.monotonic()
    assert not wait_until(lambda: checks.append(time.monotonic()), timeout=0.1, interval=0.03)
    # Checked at once, then every interval, the last one at the deadline.
    assert checks[0] - started < 0.03 and len(checks) >= 3
    assert checks[-1] >= started + 0.1


def _run(code):
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=20
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_fraction_of_refuses_a_part_over_its_share_of_the_whole():
    """The one rule of a heartbeat and its TTL (support/liveness.py, regions/map.py): at
    most the share (below it when strict), checked only when both fields are there."""
    fields = section({"beat": number(0.0), "ttl": number(0.0)})
    half = fraction_of(fields, "beat", "ttl", 0.5, "at most half of ttl")
    below = fraction_of(fields, "beat", "ttl", 1.0, "shorter than ttl", strict=True)
    assert half("p", {"beat": 5, "ttl": 10}) == {"beat": 5.0, "ttl": 10.0}
    assert half("p", {"ttl": 10}) == {"ttl": 10.0}  # nothing to compare
    with pytest.raises(ConfigError) as refused:
        half("p", {"beat": 5.5, "ttl": 10})
    assert (refused.value.key, refused.value.message) == ("p.beat", "at most half of ttl")
    assert below("p", {"beat": 9.9, "ttl": 10})["beat"] == 9.9
    with pytest.raises(ConfigError) as refused:
        below("p", {"beat": 10, "ttl": 10})
    assert refused.value.key == "p.beat"


PATCHING = """
from importlib import metadata

reads = []
read = metadata.entry_points
metadata.entry_points = lambda **selection: reads.append(selection) or read(**selection)

from wsserver.support import runtime

runtime.patch()
import socket, gevent.socket
assert socket.socket is gevent.socket.socket
print("reads", reads, "restored", metadata.entry_points.__name__ == "<lambda>")
"""


def test_gevent_patching_reads_the_plugin_entry_points_once_and_still_calls_them(tmp_path):
    """support/runtime.patch: gevent's patch_all looked its plugins up 25 times (~35 ms of
    every start, while a restarted server refuses its clients); one read must still
    find and call an installed plugin, and leave importlib.metadata as it was."""
    dist = tmp_path / "fakeplugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeplugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[gevent.plugins.monkey.will_patch_all]\nfake = fakeplugin:will\n"
        "[gevent.plugins.monkey.did_patch_module]\nfake = fakeplugin:did\n"
    )
    (tmp_path / "fakeplugin.py").write_text(
        "def will(event): print('plugin: will patch all')\n"
        "def did(event): print('plugin: patched', event.module_name)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", PATCHING],
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "plugin: will patch all"
    assert "plugin: patched socket" in lines and "plugin: patched thread" in lines
    assert lines[-1] == "reads [{}] restored True"


def test_a_second_stop_signal_does_not_start_a_second_shutdown():
    """`wsserver serve`: SIGTERM then SIGINT (an impatient operator) run `stop` once."""
    out = _run(
        """
        import os, signal, gevent
        from wsserver.support.signals import on_stop
        calls = []
        on_stop(lambda: (calls.append(1), gevent.sleep(0.2)))
        os.kill(os.getpid(), signal.SIGTERM)
        gevent.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)
        gevent.sleep(0.4)
        print(len(calls))
        """
    )
    assert out == ["1"]


def test_our_sigterm_handler_runs_before_the_servers_own_which_waits_the_drain():
    """Under gunicorn: the shutdown starts at SIGTERM, gunicorn's handler (which stops
    accepting) only `delay` seconds later, with the signal's number."""
    out = _run(
        """
        import os, signal, time, gevent
        from wsserver.support.signals import before_previous
        events, t0 = [], time.monotonic()
        signal.signal(signal.SIGTERM, lambda sig, frame: events.append((sig, time.monotonic())))
        before_previous(lambda: events.append(("stop", time.monotonic())), delay=0.3)
        os.kill(os.getpid(), signal.SIGTERM)
        gevent.sleep(1.0)
        print(" ".join(f"{what}@{when - t0:.2f}" for what, when in events))
        """
    )
    assert [e.split("@")[0] for e in out] == ["stop", str(15)], out
    assert float(out[1].split("@")[1]) >= 0.3, out
