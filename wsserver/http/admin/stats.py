"""The last hour of one process at 10 s resolution, kept by the process itself (no
Prometheus needed): what the console's charts draw, summed over processes.

At the first process heartbeat (support/liveness.py) after each multiple of STEP seconds
of the wall clock (so every process's points share their times) a `Sampler` reads this
process's own metric objects (wsserver/metrics.py) and keeps the differences as one
point; HOUR points are kept. A point: {"t" (Unix time of its end), "connections",
"updates" (per second), "deliveries" (messages sent per second), "refusals" ({close
code: count}), "commit_p50", "commit_p99" (seconds, from the histogram's buckets: the
upper bound of the bucket the quantile falls in; null without commits), "errors"
(storage, registry and Redis errors)}. `series()` adds the point under way (its figures
so far) so a chart shows now, not up to 10 s ago.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ... import metrics

STEP = 10.0  # seconds per point
HOUR = 360  # points kept


def _totals() -> dict[str, Any]:
    """Cumulative figures of this process's metric objects."""

    def by_label(counter: Any, label: str) -> dict[str, float]:
        found: dict[str, float] = {}
        for family in counter.collect():
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    key = sample.labels.get(label, "")
                    found[key] = found.get(key, 0.0) + sample.value
        return found

    buckets: dict[float, float] = {}
    for family in metrics.COMMIT_SECONDS.collect():
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                buckets[float(sample.labels["le"])] = sample.value
    return {
        "updates": sum(by_label(metrics.UPDATES, "").values()),
        "deliveries": sum(by_label(metrics.MESSAGES_SENT, "type").values()),
        "refusals": by_label(metrics.HANDSHAKES_REFUSED, "code"),
        "errors": sum(by_label(metrics.STORAGE_ERRORS, "operation").values())
        + sum(by_label(metrics.REGISTRY_ERRORS, "").values())
        + sum(by_label(metrics.REDIS_ERRORS, "component").values()),
        "buckets": buckets,
    }


def _quantile(buckets: dict[float, float], q: float) -> float | None:
    """The upper bound of the bucket holding quantile `q` of cumulative `buckets`."""
    total = buckets.get(float("inf"), 0.0)
    if total <= 0:
        return None
    for bound in sorted(buckets):
        if buckets[bound] >= q * total:
            return bound if bound != float("inf") else max(b for b in buckets if b != bound)
    return None


def point(
    before: dict[str, Any], after: dict[str, Any], seconds: float, connections: int, t: float
) -> dict[str, Any]:
    """One point from two `_totals()` `seconds` apart."""
    seconds = max(seconds, 1e-3)
    buckets = {
        b: after["buckets"].get(b, 0.0) - before["buckets"].get(b, 0.0) for b in after["buckets"]
    }
    refusals = {
        code: int(n - before["refusals"].get(code, 0.0))
        for code, n in after["refusals"].items()
        if n - before["refusals"].get(code, 0.0) > 0
    }
    return {
        "t": t,
        "connections": connections,
        "updates": round((after["updates"] - before["updates"]) / seconds, 3),
        "deliveries": round((after["deliveries"] - before["deliveries"]) / seconds, 3),
        "refusals": refusals,
        "commit_p50": _quantile(buckets, 0.5),
        "commit_p99": _quantile(buckets, 0.99),
        "errors": int(after["errors"] - before["errors"]),
    }


class Sampler:
    """This process's last hour (see the module doc). `connections()`: open ones now;
    `liveness`: the process heartbeat it samples on. `on_point(points)`: called after
    each new point (the board publishes them)."""

    def __init__(self, connections: Callable[[], int], liveness: Any) -> None:
        self.connections = connections
        self.points: deque[dict[str, Any]] = deque(maxlen=HOUR)
        self.on_point: Callable[[list[dict[str, Any]]], object] | None = None
        now = time.time()
        self._last = (_totals(), now)
        self._due = STEP * (now // STEP + 1)  # the end of the point under way
        self._beat = liveness.subscribe("admin stats", self.beat)

    def beat(self) -> None:
        """On a heartbeat: a new point once the point under way has ended."""
        now = time.time()
        if now >= self._due:
            self.sample(now)

    def sample(self, now: float) -> None:
        totals, (before, since) = _totals(), self._last
        self.points.append(point(before, totals, now - since, self.connections(), self._due))
        self._last = (totals, now)
        self._due = STEP * (now // STEP + 1)
        if self.on_point is not None:
            self.on_point(list(self.points))

    def current(self) -> dict[str, Any]:
        """The point under way: the figures since the last point, per second so far."""
        before, since = self._last
        now = time.time()
        return point(before, _totals(), now - since, self.connections(), self._due)

    def series(self, minutes: float = 60) -> list[dict[str, Any]]:
        """The points of the last `minutes`, oldest first, then the one under way."""
        start = time.time() - minutes * 60
        return [p for p in self.points if p["t"] >= start] + [self.current()]

    def stop(self) -> None:
        self._beat.cancel()


def summed(series_per_process: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One series from several processes' (points at the same times added; the
    latencies: the highest, a bound for the cluster)."""
    by_time: dict[float, dict[str, Any]] = {}
    for series in series_per_process:
        for p in series:
            into = by_time.get(p["t"])
            if into is None:
                by_time[p["t"]] = dict(p, refusals=dict(p["refusals"]))
                continue
            for field in ("connections", "updates", "deliveries", "errors"):
                into[field] = round(into[field] + p[field], 3)
            for code, n in p["refusals"].items():
                into["refusals"][code] = into["refusals"].get(code, 0) + n
            for field in ("commit_p50", "commit_p99"):
                into[field] = max(filter(None, [into[field], p[field]]), default=None)
    return [by_time[t] for t in sorted(by_time)]
