"""What the admin API reads and does: the live documents (this process's, plus the
other processes' from the board), their detail and changes, and deleting one."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import gevent

from ...documents.content import document_json
from ...documents.key import DocKey
from ...documents.storage import StoreError, fold
from ...errors import NestedTooDeep, NotFound, StorageUnavailable
from ...logs import Throttled

log = logging.getLogger(__name__)

EVENTS_POLL = 0.1  # seconds between change checks of an event stream
EVENTS_KEEPALIVE = 15.0  # seconds between comments on a quiet stream (proxies drop idle ones)
# Seconds a request waits for storage (a read, a size, a delete): then 503, never a hang
# (a frozen database cannot enforce its own deadlines).
STORE_WAIT = 5.0


def encode_cursor(value: Any) -> str:
    """A page's cursor: opaque to clients (api.decode_cursor reads it)."""
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


def iso(timestamp: float | None) -> str | None:
    """ISO 8601 in UTC with milliseconds: the API's one time format (the console shows
    it with the date and the viewer's time zone)."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


def _merge(summaries: list[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    """One summary per document from several processes' summaries of it."""
    merged: dict[tuple, dict[str, Any]] = {}
    for summary in summaries:
        key = (summary["tenant"], summary["app"], summary["name"])
        into = merged.get(key)
        if into is None:
            merged[key] = dict(
                summary, users=list(summary["users"]), awareness=dict(summary["awareness"])
            )
            continue
        into["connections"] += summary["connections"]
        into["users"] = sorted(set(into["users"]) | set(summary["users"]))
        into["awareness"].update(summary["awareness"])
        # ISO 8601 in UTC with the same precision: the later one sorts last.
        into["updated"] = max(filter(None, [into["updated"], summary["updated"]]), default=None)
    return merged


class Inspector:
    """What the admin API reads and does: the live documents (this process's, plus the
    other processes' from `board` when there is one) and the store."""

    def __init__(
        self,
        documents: Any,
        store: Any,
        stopping: Callable[[], bool],
        board: Any = None,
        on_trashed: Callable[[DocKey], None] | None = None,
    ) -> None:
        self.documents = documents
        self.store = store
        # Told of each document `delete` moved to the trash (documents/history.py: the
        # webhook, the other processes).
        self.on_trashed = on_trashed
        self.stopping = stopping  # callable: True once the process is shutting down
        self.board = board
        self._errors = Throttled(log)

    def local_summary(self, key: DocKey, room: Any = None) -> dict[str, Any]:
        """This process's figures of one document (no stored size)."""
        connections = list(room.connections) if room is not None else []
        users = {c.principal.user for c in connections if c.principal is not None}
        awareness = room.awareness.parsed() if room is not None else {}
        return {
            "tenant": key.tenant,
            "app": key.app,
            "name": key.name,
            "connections": len(connections),
            "users": sorted(u for u in users if u),
            "awareness": {
                str(client): state for client, state in awareness.items() if state is not None
            },
            "updated": iso(room.updated if room is not None else None),
        }

    def local(self) -> list[dict[str, Any]]:
        rooms = [room for room in list(self.documents.rooms.values()) if room.ready.ready()]
        return [self.local_summary(room.key, room) for room in rooms]

    def _elsewhere(self):
        return (
            [] if self.board is None else [d for r in self.board.others() for d in r["documents"]]
        )

    def live_keys(self) -> list[tuple[str, str, str]]:
        """(tenant, app, name) of every live document, on any process."""
        return sorted(_merge(self.local() + self._elsewhere()))

    def live(self) -> list[dict[str, Any]]:
        """Every live document's summary; "bytes" null for those whose size storage
        did not give within STORE_WAIT seconds in all."""
        merged = _merge(self.local() + self._elsewhere())
        deadline = time.monotonic() + STORE_WAIT
        summaries = []
        for key, summary in sorted(merged.items()):
            size = None
            if time.monotonic() < deadline:
                try:
                    size = self.stored_call(
                        "size", self.store.size, DocKey(*key), deadline=deadline
                    )
                except StorageUnavailable:
                    deadline = 0.0  # the next ones would wait in vain too
            summaries.append(dict(summary, bytes=size, size=size, updated_at=summary["updated"]))
        return summaries

    def stored(
        self,
        tenant: str | None,
        app: str | None,
        prefix: str,
        after: list[str] | None,
        limit: int,
    ) -> dict[str, Any]:
        """A page of stored documents from the store's index: {"documents": [{"tenant",
        "app", "name", "live", "size", "updated_at", "deleted_at"}], "cursor" (the next
        page's, or null)}. `after`: the previous page's last (tenant, app, name). A
        document in the trash is still stored (until purged), so it is listed, with its
        `deleted_at` (ISO 8601; null for the others) and never `live`."""
        rows = self.stored_call(
            "search", self.store.search, tenant, app, prefix, after and tuple(after), limit
        )
        live = {tuple(k) for k in self.live_keys()}
        deadline = time.monotonic() + STORE_WAIT
        keys = [DocKey(row["tenant"], row["app"], row["name"]) for row in rows]
        trashed = self.stored_call("trash", self.store.trashed, keys, deadline=deadline)
        documents = []
        for row in rows:
            key = DocKey(row["tenant"], row["app"], row["name"])
            size = self.stored_call("size", self.store.size, key, deadline=deadline)
            documents.append(
                dict(
                    key._asdict(),
                    live=tuple(key) in live and key not in trashed,
                    size=size,
                    updated_at=iso(row["updated_at"]),
                    deleted_at=iso(trashed.get(key)),
                )
            )
        more = len(rows) == limit
        last = [rows[-1]["tenant"], rows[-1]["app"], rows[-1]["name"]] if more else None
        return {"documents": documents, "cursor": encode_cursor(last) if last else None}

    def last_change(self, key: DocKey) -> str | None:
        """When `key` was last stored (ISO 8601), from the store's index; None when it
        is not there."""
        rows = self.stored_call("search", self.store.search, key.tenant, key.app, key.name, None, 1)
        return iso(rows[0]["updated_at"]) if rows and rows[0]["name"] == key.name else None

    def stored_totals(self) -> list[dict[str, Any]]:
        """Per (tenant, app): documents and bytes stored (the store's index)."""
        return self.stored_call("totals", self.store.totals)

    def stored_call(
        self, what: str, call: Callable[..., Any], *args: Any, deadline: float | None = None
    ) -> Any:
        """`call(*args, timeout=...)` of the store, within STORE_WAIT seconds (or until
        `deadline`); StorageUnavailable (503) when storage fails or does not answer."""
        left = STORE_WAIT if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            return call(*args, timeout=left)
        except Exception as e:  # a StoreError, or the driver's own (database down)
            self._errors.error("admin: storage %s failed: %s: %s", what, type(e).__name__, e)
            raise StorageUnavailable() from None

    def summary(self, key: DocKey, room: Any = None) -> dict[str, Any]:
        mine = self.local_summary(key, room)
        others = [s for s in self._elsewhere() if (s["tenant"], s["app"], s["name"]) == tuple(key)]
        result = _merge([mine] + others)[tuple(key)]
        result["bytes"] = self.stored_call("size", self.store.size, key)
        return result

    def detail(self, key: DocKey, trashed_too: bool = False) -> dict[str, Any]:
        """The summary plus "content"; NotFound when the document is neither live
        here nor stored, or is in the trash (unless `trashed_too`: a purge)."""
        room = self.documents.get(key)
        if room is None or not room.ready.ready():
            room = None
        result = self.summary(key, room)
        if result["updated"] is None:  # not changed since loaded, or not live: the index's
            result["updated"] = self.last_change(key)
        result["size"], result["updated_at"] = result["bytes"], result["updated"]
        if room is not None:
            update = room.doc.get_update()
        else:
            stored = self.stored_call("load", self.store.load, key)
            if stored.deleted_at is not None and not trashed_too:
                raise NotFound("no such document (it is in the trash)")
            updates = stored.updates
            if not updates and not result["connections"]:  # not live elsewhere either
                raise NotFound("no such document")
            update = fold(updates) if updates else None
        try:
            result["content"] = document_json(update) if update else {}
        except NestedTooDeep as e:  # the summary is still worth showing
            result["content"], result["content_error"] = {}, e.reason
        return result

    def fingerprint(self, key: DocKey) -> Any:
        """Changes whenever what `detail` shows may have changed."""
        room = self.documents.get(key)
        mine = (
            None
            if room is None
            else (
                room.updated,
                room.pending,
                len(room.connections),
                json.dumps(room.awareness.parsed(), sort_keys=True, default=str),
            )
        )
        if self.board is None:
            return mine
        return mine, json.dumps(
            [
                s
                for r in self.board.others(cached=True)
                for s in r["documents"]
                if (s["tenant"], s["app"], s["name"]) == tuple(key)
            ],
            sort_keys=True,
        )

    def events(self, key: DocKey) -> Iterator[str]:
        """Server-sent events: `detail(key)` now and after each change, until the
        client goes away or the process shuts down."""
        last, quiet_since = object(), time.monotonic()
        while not self.stopping():
            current = self.fingerprint(key)
            if current != last:
                last = current
                try:
                    data = self.detail(key)
                except NotFound:
                    data = {"tenant": key.tenant, "app": key.app, "name": key.name, "deleted": True}
                except StorageUnavailable as e:  # shown; tried again at the next poll
                    data, last = {"error": e.reason}, object()
                yield f"data: {json.dumps(data)}\n\n"
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > EVENTS_KEEPALIVE:
                yield ": keepalive\n\n"
                quiet_since = time.monotonic()
            gevent.sleep(EVENTS_POLL)

    def delete(self, key: DocKey, purge: bool = False) -> int:
        """Drop the document in every process, then move it to the trash (`purge`:
        delete it from storage, versions, trash entry and index row too). Returns the
        number of connections closed; NotFound when there is no such document (or,
        unless `purge`, it is in the trash already). Here, nobody opens it until it is
        deleted.

        Bounded: StorageUnavailable (503) when its updates cannot be made durable, or
        storage does not delete it, within STORE_WAIT seconds each; nothing queued is
        lost (it is committed when storage is back; a retry deletes it). A delete still
        running in storage then keeps the document closed here until it ends, so that
        nothing written meanwhile is deleted with it."""
        if self.store.failing is not None:  # before anyone is told it was deleted
            raise StorageUnavailable("storage is not committing: nothing was deleted; retry")
        self.detail(key, trashed_too=purge)  # NotFound (404): no such document
        deleting = self.documents.deleting
        deleting.add(key)
        pending = None
        try:
            try:
                closed = self.documents.drop(key)
            except StoreError as e:  # its last updates are not durable: commits failing
                self._errors.error("admin: delete of %s: %s", "/".join(key), e)
                raise StorageUnavailable(
                    "storage is not committing: the document was not deleted; retry"
                ) from None  # its connections were closed (4404) before the commits failed
            if self.board is not None:
                # Every process's listener answers, ours too (nothing left to close).
                closed += sum(self.board.ask_everywhere({"kind": "drop", "key": list(key)}))
            try:
                # To the trash, which every load refuses (4404) until an undelete or
                # a purge (wsserver/http/versions.py): no provider can push it back.
                (self.store.delete if purge else self.store.trash)(key, timeout=STORE_WAIT)
            except StoreError as e:
                pending = e.pending
                self._errors.error("admin: delete of %s: %s", "/".join(key), e)
                raise StorageUnavailable(
                    "storage did not answer in time: the document was not deleted; retry"
                    if pending is None
                    else "storage did not answer in time: the delete ends when it does; retry"
                ) from None
        finally:
            if pending is None:
                deleting.discard(key)
            else:
                pending.rawlink(lambda _: deleting.discard(key))
        if self.on_trashed is not None and not purge:
            self.on_trashed(key)
        return closed
