"""How a server process starts and runs: gevent's patching, first thing (`patch`), and
the tuning `wsserver serve` and every gunicorn worker apply once the app is built,
before they accept (`settle`).

- gevent's `monkey.patch_all` announces every module it patches to plugins, and looks
  them up each time: 25 lookups of the `gevent.plugins.*` entry points, each reading
  the metadata of every installed distribution. That was 60 of the ~225 ms a `wsserver
  serve` took to take its port (57 distributions in this venv), time in which a
  restarted server refuses its clients. `patch` reads them once; the plugins found,
  if any, are called as before.

- What start-up allocated lives for ever: it is frozen out of the cyclic collector's
  way (`gc.freeze`), so full collections do not rescan it (they had stalled the loop
  24-50 ms during connect bursts).
- Young collections come every GC_THRESHOLDS[0] container allocations instead of
  CPython's 700. A connection allocates a few hundred containers that live as long as
  it does, and each young collection rescans what the last ones just promoted. Over a
  burst of 2,000 handshakes with the server's start and stop (`scripts/bench`'s `open`,
  `gc.callbacks`, three runs each): at 700, 277 young and 25 middle collections, 38-45
  ms in all, the longest middle one 4.6-4.9 ms; at 2,000, 169 and 15, 30-34 ms, the
  longest 2.1-2.8 ms; at 10,000 fewer again, but middle collections of 14-15 ms, each
  a stall every connection in flight waits out. Garbage is still found, in fewer
  passes.
- gevent records, for every greenlet spawned, the stack that spawned it
  (`track_greenlet_tree`: ten frames copied per handshake, the connection's kept as
  long as it lives, for gevent's debugging tree only). It is turned off.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import gevent

GC_THRESHOLDS = (2_000, 10, 10)


def patch() -> None:
    """gevent's `monkey.patch_all()`, the plugin entry points read once (above).
    Before anything else touches sockets, threads or time. A second call does nothing
    (gevent's own rule, for the same arguments): gunicorn's gevent worker calls
    `patch_all()` itself after `post_fork`, which calls this first."""
    from gevent import monkey

    with _entry_points_read_once():
        monkey.patch_all()


@contextmanager
def _entry_points_read_once() -> Iterator[None]:
    from importlib import metadata

    read = metadata.entry_points
    every: list[Any] = []  # EntryPoints (SelectableGroups before Python 3.12)

    def once(**selection: str) -> metadata.EntryPoints:
        if not every:
            every.append(read())  # one pass over the distributions, every group
        return every[0].select(**selection)

    metadata.entry_points = once  # type: ignore[assignment]
    try:
        yield
    finally:
        metadata.entry_points = read


def settle() -> None:
    """Apply the tuning above; called once the app is built, before accepting."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    gevent.config.track_greenlet_tree = False
