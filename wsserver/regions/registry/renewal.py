"""A node's claims kept alive: every claim it holds renewed on the process's heartbeat
(support/liveness.py, at most `heartbeat` seconds apart), those that expired during an
outage or a stall re-asserted (and their rooms refreshed from storage: another region
may have written meanwhile), those another region took given up (`on_claim_lost`).
See base.py for the rules; this is their heartbeat side."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import gevent

from .holding import Holding

if TYPE_CHECKING:
    from ...documents.key import DocKey
    from .base import Registry

log = logging.getLogger(__name__)


class Renewal:
    """Renews `registry`'s claims (its holdings, backend calls and hooks)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def renew(self) -> None:
        """Renew every claim this node holds; re-assert those that expired during an
        outage, and let go of those another region took."""
        reg = self.registry
        held = {k: h for k, h in reg._holdings.items() if h.claimed and not h.lost}
        # Connections that reached a lost document's room after it was told to close.
        for key, holding in list(reg._holdings.items()):
            if holding.lost and holding.count:
                reg.on_claim_lost(key, holding.lost_to)
        started = reg.clock()
        if not held:
            reg._last_renewal = started
            return
        try:
            renewed = reg._call(reg._renew, list(held), reg.node, reg.ttl)
        except Exception as e:
            # Keep serving: the documents stay here, their compaction waits (may_compact)
            # until a renewal succeeds.
            reg._failed(f"renewal ({started - reg._last_renewal:.1f}s since the last one)", e)
            return
        reg._answered()
        reg._last_renewal = started
        for key, holding in held.items():
            if key not in renewed:
                self._reassert(key, holding)

    def _reassert(self, key: DocKey, holding: Holding) -> None:
        """Our holding of `key` had expired (an outage or a stall longer than the TTL):
        take the claim again unless another region has it now."""
        reg = self.registry
        try:
            region = reg._call(reg._claim, key, reg.node, reg.region, reg.ttl)
        except Exception as e:
            reg._failed(f"claim of {'/'.join(key)}", e)
            return  # still in doubt: no compaction; the next heartbeat tries again
        if region == reg.region:
            log.warning(
                "claim on %s had expired; re-asserted, refreshing it from storage", "/".join(key)
            )
            # In a greenlet of its own: the heartbeat must go on renewing every claim
            # while storage is slow or frozen. No compaction until it ends (may_compact).
            holding.refreshing = True
            gevent.spawn(self._refresh, key, holding)
            return
        self._lose(key, holding, region)

    def _refresh(self, key: DocKey, holding: Holding) -> None:
        try:
            self.registry.on_claim_reasserted(key)
        except Exception:
            log.exception("refresh of %s after re-asserting its claim failed", "/".join(key))
        finally:
            holding.refreshing = False

    def _lose(self, key: DocKey, holding: Holding, region: str | None) -> None:
        reg = self.registry
        if holding.lost or reg._holdings.get(key) is not holding:
            return
        log.warning(
            "claim on %s lost (now %s): closing its connections here",
            "/".join(key),
            region or "unknown: registry unreachable",
        )
        holding.lost = True
        holding.lost_to = region
        holding.claimed = False
        try:
            reg.on_claim_lost(key, region)
        finally:
            if holding.count == 0:
                reg._schedule_release(key, holding)
