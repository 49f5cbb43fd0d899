"""Refusals by code: one log line each, and counters for the metrics endpoint.

Every refusal made by the limits (4004, 4005, 4006, 4008) goes through
`Refusals.record`, which logs it once with the app, the client IP and the code (never
the token: it is not passed here) and marks the error as logged so the WebSocket
endpoint does not log it again. The handshake counts every refusal, whichever check
made it (4001-4009, 1013; /discovery's too), with `count`. `counts()` is what a metrics endpoint or
`/healthz` shows: {code: refusals since start}, for this process.
"""

from __future__ import annotations

import logging
from collections import Counter

from ..errors import WsServerError

log = logging.getLogger("wsserver.limits")


class Refusals:
    def __init__(self) -> None:
        self._counts: Counter[int] = Counter()

    def record(
        self, error: WsServerError, ip: str | None, app: str | None = None, detail: str = ""
    ) -> None:
        """Log and count one refusal of the limits; `app` is "tenant/app" when known."""
        self.count(error)
        error.logged = True
        log.info(
            "refused %d %s: app=%s ip=%s%s",
            error.close_code,
            error.reason,
            app or "-",
            ip or "-",
            f" ({detail})" if detail else "",
        )

    def count(self, error: WsServerError) -> None:
        """Count one refusal by its close code, once however often it is passed."""
        if not error.counted:
            error.counted = True
            self._counts[error.close_code] += 1

    def counts(self) -> dict[int, int]:
        """{close code: count} since start, in this process."""
        return dict(self._counts)
