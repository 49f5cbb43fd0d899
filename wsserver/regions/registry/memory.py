"""In-process registry, for `memory://` storage: only this process sees its claims.

Same semantics as the shared backends (holders with expiries, release-if-ours), so the
base class's logic is exercised the same way in tests. `clock` is injectable for them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ...documents.key import DocKey
from .base import Registry


class MemoryRegistry(Registry):
    threaded = False

    def __init__(
        self, region: str, clock: Callable[[], float] = time.monotonic, **options: Any
    ) -> None:
        super().__init__(region, clock=clock, **options)
        # key -> (region, {node: expires_at})
        self.claims: dict[DocKey, tuple[str, dict[str, float]]] = {}

    def _live(self, key):
        """The (region, live holders) of `key`, expired holders dropped; None if none."""
        entry = self.claims.get(key)
        if entry is None:
            return None
        region, holders = entry
        now = self.clock()
        for node in [n for n, expires in holders.items() if expires <= now]:
            del holders[node]
        if not holders:
            del self.claims[key]
            return None
        return region, holders

    def _claim(self, key, node, region, ttl):
        live = self._live(key)
        if live is not None and live[0] != region:
            return live[0]
        holders = live[1] if live is not None else {}
        holders[node] = self.clock() + ttl
        self.claims[key] = (region, holders)
        return region

    def _renew(self, keys, node, ttl):
        renewed = set()
        for key in keys:
            live = self._live(key)
            if live is not None and node in live[1]:
                live[1][node] = self.clock() + ttl
                renewed.add(key)
        return renewed

    def _release(self, key, node):
        live = self._live(key)
        if live is not None:
            live[1].pop(node, None)
            if not live[1]:
                del self.claims[key]

    def _lookup(self, key):
        live = self._live(key)
        return live[0] if live is not None else None
