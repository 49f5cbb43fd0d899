"""The process's one liveness scheme: one id, one heartbeat, one TTL.

Several parts tell the other processes "this process is alive" in shared storage: the
fan-out (an `alive` entry on its hosts stream; the states of a process silent for a TTL
are dropped), the quotas (a lease in Redis, reaped with what the process held), the
region registry (claims renewed, expiring with a dead node) and the admin console (its
board entry). They all name the process with `Liveness.process` and beat on its one
heartbeat greenlet, every `process.heartbeat_seconds`; `process.ttl_seconds` is how long
silence means death (settings/table.py). Each part keeps its record where it keeps it
(a Redis stream, a sorted set, a Postgres or SQLite table): only the id, the clock and
the timings are shared.

A part subscribes a callback (`subscribe(name, callback, every=None)` -> a `Beat`). Beats run each
in a greenlet of their own, so a part whose storage hangs (a Postgres renewal waiting
for its statement timeout) delays neither the others' beats nor the next tick; a beat
still running when its next one is due is skipped (logged). `every` (seconds) makes a
part beat less often than the heartbeat, on the last tick before `every` seconds have
passed (so never later than it): a record whose own TTL is a setting of its part (the
registry's `ttl_seconds`, the quotas' `lease_seconds`) is renewed at that part's pace.
`stop()` (the end of a shutdown) ends the heartbeat and every beat still running.

Limits: the heartbeat's clock is `time.monotonic`; a process frozen longer than the TTL
(SIGSTOP, a blocked hub) is dead to the others until its next beat, which each part
handles (the fan-out resyncs, the quotas resync, the registry re-asserts its claims).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import gevent

from ..errors import ConfigError
from ..logs import Throttled
from .validators import fraction_of, number, section

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 2.0
TTL_SECONDS = 10.0
PROCESS_DEFAULTS = {"heartbeat_seconds": HEARTBEAT_SECONDS, "ttl_seconds": TTL_SECONDS}


def new_process_id() -> str:
    """`HOST:PID:RANDOM`: a name no other process, here or elsewhere, will ever use (a
    process restarted with the same pid gets another). Readable in logs and in Redis."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


_PROCESS = fraction_of(
    section(
        {
            "heartbeat_seconds": number(0.05, what="a number of seconds"),
            "ttl_seconds": number(0.1, what="a number of seconds"),
        },
        defaults=PROCESS_DEFAULTS,
    ),
    "heartbeat_seconds",
    "ttl_seconds",
    0.5,
    "must be at most half of ttl_seconds (one missed heartbeat must not make the process "
    "look dead)",
)


def validate_process(key: str, value: Any) -> dict[str, float]:
    """`{heartbeat_seconds, ttl_seconds}` as floats; the heartbeat must be shorter than
    the TTL (a half leaves room for one missed beat)."""
    return _PROCESS(key, value)


def check_expiries(process: dict[str, float], expiries: dict[str, float]) -> None:
    """ConfigError for the first record expiry (setting key -> seconds) that two
    heartbeats do not fit in: a part renews its record on the heartbeat, so one late
    tick must not let it lapse."""
    heartbeat = process["heartbeat_seconds"]
    for key, seconds in expiries.items():
        if seconds < 2 * heartbeat:
            raise ConfigError(
                key,
                f"must be at least twice process.heartbeat_seconds ({heartbeat:g}): it "
                "is renewed on the process's heartbeat",
            )


class Beat:
    """One part's subscription to the heartbeat: `cancel()` ends it (the part's own
    close)."""

    __slots__ = ("name", "callback", "every", "last", "running", "_owner")

    def __init__(
        self,
        owner: Liveness,
        name: str,
        callback: Callable[[], object],
        every: float,
        now: float,
    ) -> None:
        self._owner = owner
        self.name = name
        self.callback = callback
        self.every = every
        self.last = now
        self.running: gevent.Greenlet | None = None

    def cancel(self) -> None:
        self._owner.unsubscribe(self)

    def __repr__(self) -> str:
        return f"Beat({self.name!r}, every={self.every})"


class Liveness:
    """See the module docstring. `process`: the id (default: a new one); `clock`
    (tests) times the beats' pace."""

    def __init__(
        self,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        ttl_seconds: float = TTL_SECONDS,
        process: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < heartbeat_seconds < ttl_seconds:
            raise ValueError("the heartbeat must be shorter than the TTL")
        self.process = process or new_process_id()
        self.heartbeat = heartbeat_seconds
        self.ttl = ttl_seconds
        self._beats: list[Beat] = []
        self._ticker: gevent.Greenlet | None = None
        self._stopped = False
        self.clock = clock
        self._errors = Throttled(log)

    @classmethod
    def from_config(cls, process: dict[str, float]) -> Liveness:
        """From the `process` setting (validated)."""
        return cls(process["heartbeat_seconds"], process["ttl_seconds"])

    def __repr__(self) -> str:
        return f"Liveness({self.process}, every {self.heartbeat}s, ttl {self.ttl}s)"

    def subscribe(
        self,
        name: str,
        callback: Callable[[], object],
        every: float | None = None,
        at_once: bool = False,
    ) -> Beat:
        """Call `callback()` on every heartbeat (or, with `every`, at most `every`
        seconds apart, on the heartbeat's ticks) until the beat is cancelled or the
        heartbeat stops; `at_once`: a first time now (in the beat's greenlet; the
        caller does not wait). `name` says whose beat it is in logs. `callback` handles
        its own failures; what it raises is logged (throttled) and the beats go on."""
        beat = Beat(self, name, callback, every or 0.0, self.clock())
        self._beats.append(beat)
        if at_once and not self._stopped:
            beat.running = gevent.spawn(self._run, beat)
        return beat

    def unsubscribe(self, beat: Beat) -> None:
        """End `beat`; a run of it under way now is left to finish."""
        if beat in self._beats:
            self._beats.remove(beat)

    @property
    def running(self) -> bool:
        """The heartbeat greenlet is alive (started and not stopped)."""
        return self._ticker is not None and not self._ticker.dead

    @property
    def subscribers(self) -> list[str]:
        """The names of the parts beating (for tests and logs)."""
        return [beat.name for beat in self._beats]

    def start(self) -> Liveness:
        """Start the heartbeat (once; a stopped one stays stopped)."""
        if self._ticker is None and not self._stopped:
            self._ticker = gevent.spawn(self._tick_loop)
        return self

    def stop(self) -> None:
        """End the heartbeat and every beat still running (the end of a shutdown:
        the parts said goodbye in their own `close`)."""
        self._stopped = True
        if self._ticker is not None:
            self._ticker.kill(block=False)
        for beat in self._beats:
            if beat.running is not None:
                beat.running.kill(block=False)
        self._beats.clear()

    def _tick_loop(self) -> None:
        while True:
            gevent.sleep(self.heartbeat)
            self.tick()

    def tick(self) -> None:
        """One heartbeat: start every due beat."""
        now = self.clock()
        for beat in list(self._beats):
            # Due on the last tick before `every` would pass: never later than it.
            if now - beat.last + self.heartbeat <= beat.every:
                continue
            if beat.running is not None and not beat.running.dead:
                self._errors.error(
                    "heartbeat: %s's previous beat is still running; skipping this one",
                    beat.name,
                )
                continue
            beat.last = now
            beat.running = gevent.spawn(self._run, beat)

    def _run(self, beat: Beat) -> None:
        try:
            beat.callback()
        except Exception:
            # Keep beating: a part that stopped beating would look dead to the others.
            self._errors.error("heartbeat: %s's beat failed", beat.name, exc_info=True)
