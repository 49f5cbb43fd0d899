"""The region gate: the 4009 check of the handshake, and the answer of /discovery.

`admit` runs after the token checks, first among the gates (see handshake/handshake.py):

    document pinned to another region          -> 4009 REDIRECT:<pinned base>/<name>
    pinned here but live in another region     -> 1013 (moving: it comes here once
                                                  that region lets it go; redirecting
                                                  back would ping-pong the client)
    live in another region                     -> 4009 REDIRECT:<live base>/<name>
    otherwise                                  -> claimed for this region (atomic); the
                                                  release runs when the connection ends

`discover` answers where a document lives without claiming it. What happens when this
node loses a claim is wired in `create_app` (the registry's `on_claim_lost`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import RegistryUnavailable
from ..handshake.handshake import Gate, Session

if TYPE_CHECKING:
    from ..documents.key import DocKey
    from .map import RegionMap
    from .registry import Registry


class RegionGate(Gate):
    def __init__(self, region_map: RegionMap, registry: Registry) -> None:
        self.map = region_map
        self.region = region_map.region
        self.registry = registry

    def admit(self, session: Session) -> Callable[[], object] | None:
        key = session.key
        pinned = self.map.pinned(key)
        if pinned is not None and pinned != self.region:
            raise self.map.redirect(pinned, key.name)
        region = self.registry.acquire(key)
        if region != self.region:
            if pinned is not None:
                raise RegistryUnavailable("document is moving to its pinned region, retry")
            raise self.map.redirect(region, key.name)
        return lambda: self.registry.release(key, at_once=session.refused)

    def discover(self, key: DocKey) -> dict:
        """{"region", "url", "isNew"} for `key` (a DocKey); claims nothing."""
        live = self.registry.lookup(key)
        is_new = live is None
        region = self.map.pinned(key) or self.region if live is None else live
        return {"region": region, "url": self.map.url(region, key.name), "isNew": is_new}

    def shutdown(self, flushed: bool) -> None:
        """Release every claim at once, but only when every room was flushed: a claim
        must not go before the document's updates are durable. Otherwise the claims
        simply expire with the heartbeat (within the TTL)."""
        self.registry.close(release=flushed)
