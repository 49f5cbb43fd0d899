"""`NoFanout`: one process per region (no `redis`), nothing to share; the fan-out's
interface, doing nothing."""

from __future__ import annotations

from typing import Any

from .entries import OnSent


class NoFanout:
    """Same interface as `Fanout` (base.py)."""

    enabled = False

    def subscribe(self, room: Any) -> None:
        pass

    def unsubscribe(self, room: Any) -> None:
        pass

    def publish_update(
        self, key: tuple[str, str, str], update: bytes, on_sent: OnSent = None
    ) -> None:
        if on_sent is not None:
            on_sent()

    def publish_awareness(
        self, key: tuple[str, str, str], update: bytes, user: str | None = None
    ) -> None:
        pass

    def health(self) -> dict[str, Any]:
        return {"state": "off"}

    def start(self) -> NoFanout:
        return self

    def close(self, timeout: float = 0) -> None:
        pass
