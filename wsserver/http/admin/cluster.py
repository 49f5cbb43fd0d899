"""The cluster as the console sees it: every process's state, connections and last
hour, each app's use against its plan, and a connection closed wherever it is.

This process's own figures come from its parts; the other processes' from their records
on the board (board.py), when there is one (`redis`): without it the cluster is this
process.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from ...documents.key import DocKey
from .board import RedisBoard
from .inspector import Inspector, iso
from .stats import Sampler, summed

# What an admin may close a connection with: the token is not valid for it any more
# (4003), the document is gone (4404: providers do not come back), a policy (1008).
CLOSE_CODES = (4003, 4404, 1008)
MAX_REASON = 100  # bytes: a close frame's reason must stay under 123


def describe(conn: Any, process: str) -> dict[str, Any]:
    """One connection as the API shows it."""
    principal, room = conn.principal, conn.room
    key = room.key if room is not None else None
    return {
        "id": conn.id,
        "process": process,
        "ip": conn.peer,
        "user": principal.user,
        "tenant": principal.tenant,
        "app": principal.app,
        "doc": key.name if key is not None else None,
        "access": "read" if principal.read_only else "write",
        "since": iso(conn.since),
        "messages_in": conn.messages_in,
        "bytes_in": conn.bytes_in,
        "messages_out": conn.messages_out,
        "bytes_out": conn.bytes_out,
    }


FILTERS = ("tenant", "app", "doc", "user", "ip")


class Cluster:
    """`connections()`: this process's open connections; `state()`: its health figures
    (host, version, store, redis, ready, ...); `plans()`: {(tenant, app): (plan name or
    None, Limits)}."""

    def __init__(
        self,
        inspector: Inspector,
        connections: Callable[[], Iterable[Any]],
        state: Callable[[], dict[str, Any]],
        plans: Callable[[], dict[tuple[str, str], tuple[str | None, Any]]],
        liveness: Any,
        board: RedisBoard | None = None,
    ) -> None:
        self.inspector, self._connections, self._state, self._plans = (
            inspector,
            connections,
            state,
            plans,
        )
        self.board = board
        self.name = liveness.process
        # Up since the app was built (in create_app, as the process starts), not since this
        # module was imported: a process forked after its imports (gunicorn's preload, the
        # tests' fork server) would otherwise count its parent's age.
        self.started = time.time()
        self.sampler = Sampler(lambda: len(self.members()), liveness)
        if board is not None:
            self.sampler.on_point = board.publish_series
            board.start(self.local, self.handle)

    def stop(self) -> None:
        self.sampler.stop()

    def members(self) -> list[Any]:
        """This process's connections that passed the handshake."""
        return [c for c in list(self._connections()) if c.principal is not None and not c.closed]

    def _others(self) -> list[dict[str, Any]]:
        return self.board.others() if self.board is not None else []

    # --- this process ------------------------------------------------------------------

    def process(self) -> dict[str, Any]:
        return {
            "process": self.name,
            "pid": os.getpid(),
            "started": iso(self.started),
            "uptime": round(time.time() - self.started, 1),
            "connections": len(self.members()),
            "rooms": len(self.inspector.documents),
            **self._state(),
        }

    def local(self) -> dict[str, Any]:
        """This process's record on the board."""
        return {
            "process": self.process(),
            "documents": self.inspector.local(),
            "current": self.sampler.current(),
        }

    def handle(self, command: dict[str, Any]) -> Any:
        """A command from the board, carried out here."""
        if command.get("kind") == "drop":
            return self.inspector.documents.drop(DocKey(*command["key"]))
        if command.get("kind") == "close":
            return self.close_here(command["id"], command["code"], command["reason"])
        if command.get("kind") == "connections":
            return self.local_connections(**command["filters"])
        return 0

    def local_connections(self, **filters: str | None) -> list[dict[str, Any]]:
        """This process's connections matching every filter given (FILTERS: equal
        values)."""
        wanted = {k: v for k, v in filters.items() if k in FILTERS and v}
        found = (describe(c, self.name) for c in self.members())
        return [c for c in found if all(str(c.get(k)) == v for k, v in wanted.items())]

    def close_here(self, conn_id: str, code: int, reason: str) -> int:
        """Close this process's connection `conn_id`: 1, or 0 when it has none such."""
        for conn in self.members():
            if conn.id == conn_id:
                conn.close(code=code, reason=reason)
                return 1
        return 0

    # --- the cluster ------------------------------------------------------------------

    def processes(self) -> list[dict[str, Any]]:
        found = [self.process()] + [r["process"] for r in self._others()]
        return sorted(found, key=lambda p: (p.get("host", ""), p["pid"]))

    def connections(self, **filters: str | None) -> list[dict[str, Any]]:
        """Every process's connections matching every filter given (each process
        filters its own), oldest first. With a board, every process answers through it
        (this one too); one that does not answer within ASK_WAIT is left out."""
        if self.board is None:
            found = self.local_connections(**filters)
        else:
            asked = {"kind": "connections", "filters": filters}
            found = [c for answer in self.board.ask_everywhere(asked) for c in answer]
        return sorted(found, key=lambda c: (c["since"], c["id"]))

    def close(self, conn_id: str, code: int, reason: str) -> bool:
        """Close connection `conn_id` on whatever process holds it; False when none
        does."""
        if self.close_here(conn_id, code, reason):
            return True
        if self.board is None:
            return False
        asked = {"kind": "close", "id": conn_id, "code": code, "reason": reason}
        return sum(self.board.ask_everywhere(asked)) > 0

    def stats(self, minutes: float) -> list[dict[str, Any]]:
        """The cluster's last `minutes` (stats.py), summed over processes."""
        series = [self.sampler.series(minutes)]
        if self.board is not None:
            start = time.time() - minutes * 60
            currents = {r["process"]["process"]: r["current"] for r in self._others()}
            series += [[p for p in s if p["t"] >= start] for s in self.board.others_series()]
            series += [[c] for c in currents.values()]
        return summed(series)

    def tenants(self, stored: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Per (tenant, app): live documents, connections, stored documents and bytes
        (`stored`: the store's totals), each with its plan's limits."""
        rows: dict[tuple[str, str], dict[str, Any]] = {}

        def row(tenant: str, app: str) -> dict[str, Any]:
            if (tenant, app) not in rows:
                plan, limits = self._plans().get((tenant, app), (None, None))
                rows[(tenant, app)] = {
                    "tenant": tenant,
                    "app": app,
                    "plan": plan,
                    "limits": dataclasses.asdict(limits) if limits is not None else {},
                    "live_documents": 0,
                    "connections": 0,
                    "users": 0,
                    "stored_documents": 0,
                    "stored_bytes": 0,
                }
            return rows[(tenant, app)]

        for tenant, app in self._plans():
            row(tenant, app)
        for doc in self.inspector.live_keys():
            row(doc[0], doc[1])["live_documents"] += 1
        users: dict[tuple[str, str], set] = {}
        for conn in self.connections():
            row(conn["tenant"], conn["app"])["connections"] += 1
            users.setdefault((conn["tenant"], conn["app"]), set()).add(conn["user"])
        for key, seen in users.items():
            rows[key]["users"] = len(seen)
        for total in stored:
            into = row(total["tenant"], total["app"])
            into["stored_documents"], into["stored_bytes"] = total["documents"], total["bytes"]
        return [rows[k] for k in sorted(rows)]
