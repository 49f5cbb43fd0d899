"""The other processes this one hears from on the fan-out, and their expiry: a process
not heard from for the process TTL (support/liveness.py) is dead, and the awareness
states of its clients are removed (a process killed with kill -9 leaves no state behind
for longer than that); one that said goodbye is forgotten at once."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Peers:
    """`ttl`: seconds of silence after which a peer is dead; `forget(host)`: remove its
    clients' states everywhere (the engine's rooms)."""

    def __init__(self, ttl: float, forget: Callable[[bytes], object]) -> None:
        self.ttl = ttl
        self._forget = forget
        self.alive: dict[bytes, float] = {}  # other host -> monotonic time last heard

    def __len__(self) -> int:
        return len(self.alive)

    def heard(self, host: bytes, now: float | None = None) -> None:
        self.alive[host] = time.monotonic() if now is None else now

    def gone(self, host: bytes) -> None:
        """`host` said goodbye, or was silent too long: forget it now."""
        self.alive.pop(host, None)
        self._forget(host)

    def expire(self) -> None:
        """Forget every peer silent for longer than the TTL (on the heartbeat)."""
        now = time.monotonic()
        for host, seen in list(self.alive.items()):
            if now - seen > self.ttl:
                log.info(
                    "fanout: no news from process %s for %.0fs; removing its "
                    "clients' awareness states",
                    host.decode(),
                    now - seen,
                )
                self.gone(host)
