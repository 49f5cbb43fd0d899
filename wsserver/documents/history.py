"""Version history of the live documents: automatic versions, restore, and a delete
that sticks (the trash). Storage keeps it all (documents/storage/history.py); this is
what a process does with it.

Automatic versions: every update this process stores marks its document edited
(`edited`, the manager's `on_stored` hook). A scheduler greenlet then makes a version,
off every client's path, when the document has had no edit for `quiet_period`
seconds, when its last client here has left after editing, or when edits have gone on
for `every` seconds since the first one after the last version. The store makes it only if
anything changed since the last version, so several processes serving one document
make one version between them.

Restore: the state before it becomes a version first (unless the last version holds
it already), then the forward update of documents/restore.py goes through the room as
an API write: stored, broadcast and fanned out like any client's update.

Trash: `delete` writes the trash entry first (every load, on any process and after a
restart, is then refused with 4404: DocumentDeleted), then closes this process's
clients of it (4404) and drops its room; with `redis`, the other processes are told
on a channel and do the same at once. Each scheduler tick also checks the documents
loaded here against the trash (every TRASH_CHECK seconds), so a process that missed
the message (Redis down) closes them within that.

Events (`on_event(event, key, fields)`, the webhooks): version.created,
document.restored, document.deleted, document.undeleted.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import gevent
from gevent.event import Event

from ..errors import DocumentDeleted, NotFound, TryAgainLater
from ..logs import Throttled
from .key import DocKey
from .restore import restore_update

if TYPE_CHECKING:
    import redis

    from .manager import DocumentManager
    from .storage import Store

log = logging.getLogger(__name__)

VERSION_CREATED = "version.created"
DOCUMENT_RESTORED = "document.restored"
DOCUMENT_DELETED = "document.deleted"
DOCUMENT_UNDELETED = "document.undeleted"
EVENTS = (VERSION_CREATED, DOCUMENT_RESTORED, DOCUMENT_DELETED, DOCUMENT_UNDELETED)

CHANNEL = "wsserver:history:trash"
# Seconds between two checks of the documents loaded here against the trash.
TRASH_CHECK = 2.0
# Seconds between two retention sweeps (versions past keep_days, trash past trash_days).
SWEEP_EVERY = 3600.0
# Seconds a request waits for storage.
STORE_WAIT = 5.0

EventHook = Callable[[str, DocKey, dict[str, Any]], None]


class History:
    """One per process: see the module docstring. `settings`: the validated `history`
    setting; `redis_client`/`subscriber`: with `redis`, the channel's publisher and a
    client without a read timeout for its listener."""

    def __init__(
        self,
        documents: DocumentManager,
        store: Store,
        settings: dict[str, Any],
        on_event: EventHook | None = None,
        redis_client: redis.Redis | None = None,
        subscriber: redis.Redis | None = None,
    ) -> None:
        self.documents = documents
        self.store = store
        self.every = settings["every"]
        self.quiet_period = settings["quiet_period"]
        self.on_event = on_event
        self.redis = redis_client
        self.subscriber = subscriber
        # key -> [monotonic time of the first edit since the last version, of the last]
        self.edits: dict[DocKey, list[float]] = {}
        # key -> monotonic time clients were last seen connected to it here
        self.clients_seen: dict[DocKey, float] = {}
        self.tick = max(0.05, min(1.0, self.quiet_period / 4, self.every / 4))
        self._greenlets: list[gevent.Greenlet] = []
        self._errors = Throttled(log)
        self._stopped = Event()

    # --- lifecycle ------------------------------------------------------------------

    def start(self) -> History:
        self._greenlets.append(gevent.spawn(self._schedule_loop))
        if self.subscriber is not None:
            self._greenlets.append(gevent.spawn(self._listen_loop))
        return self

    def stop(self) -> None:
        """End the scheduler and the listener (the end of a shutdown)."""
        self._stopped.set()
        for greenlet in self._greenlets:
            greenlet.kill(block=False)
        if self.subscriber is not None:
            self.subscriber.close()

    def _event(self, event: str, key: DocKey, **fields: Any) -> None:
        if self.on_event is not None:
            self.on_event(event, key, fields)

    # --- automatic versions ---------------------------------------------------------

    def edited(self, key: DocKey, created: bool = False) -> None:
        """An update of `key` stored by this process (the manager's on_stored)."""
        now = time.monotonic()
        room = self.documents.get(key)
        if room is not None and room.connections:
            self.clients_seen[key] = now
        times = self.edits.get(key)
        if times is None:
            self.edits[key] = [now, now]
        else:
            times[1] = now

    def due(self, key: DocKey, now: float) -> bool:
        """Whether the edited document `key` gets its automatic version now: quiet for
        `quiet_period`, edited for `every` since the first edit after the last version,
        or edited while clients were connected who have all left (API writes alone
        wait for the quiet period)."""
        first, last = self.edits[key]
        if now - last >= self.quiet_period or now - first >= self.every:
            return True
        room = self.documents.get(key)
        if room is not None and room.connections:
            return False
        # Clients were there during the edits (seen at a tick or an edit since the
        # first one; the tick before it counts: a client may join, edit and leave
        # between two ticks, and its edit be durable only once it has left).
        return self.clients_seen.get(key, -1.0) >= first - 2 * self.tick

    def _seen(self, now: float) -> None:
        """Note the documents with clients here now; forget the others' notes once
        they are neither loaded nor edited."""
        rooms = self.documents.rooms
        for key, room in list(rooms.items()):
            if room.connections:
                self.clients_seen[key] = now
        for key in [k for k in self.clients_seen if k not in rooms and k not in self.edits]:
            del self.clients_seen[key]

    def _schedule_loop(self) -> None:
        checked = swept = 0.0
        while not self._stopped.is_set():
            now = time.monotonic()
            self._seen(now)
            for key in [k for k in list(self.edits) if self.due(k, now)]:
                self._automatic_version(key, now)
            if now - checked >= TRASH_CHECK:
                checked = now
                self._check_trash()
            if now - swept >= SWEEP_EVERY:
                swept = now
                self._sweep()
            self._stopped.wait(self.tick)

    def _automatic_version(self, key: DocKey, now: float) -> None:
        times = self.edits.get(key)
        try:
            made = self.store.create_version(key, automatic=True, timeout=STORE_WAIT)
        except Exception as e:  # kept marked: the next tick tries again
            self._errors.error(
                "%s: automatic version failed: %s: %s", "/".join(key), type(e).__name__, e
            )
            return
        if self.edits.get(key) is times and times is not None and times[1] <= now:
            del self.edits[key]  # no edit came while the version was made
        if made is not None:
            log.debug("%s: version %s made", "/".join(key), made["id"])
            self._event(VERSION_CREATED, key, version=public(made))

    def _sweep(self) -> None:
        try:
            removed, purged = self.store.sweep(timeout=60)
        except Exception as e:
            self._errors.error("history retention sweep failed: %s: %s", type(e).__name__, e)
            return
        if removed or purged:
            log.info(
                "history retention: %d versions removed, %d documents purged from the trash",
                removed,
                len(purged),
            )

    def _check_trash(self) -> None:
        keys = [room.key for room in list(self.documents.rooms.values()) if room.ready.ready()]
        try:
            trashed = self.store.trashed(keys, timeout=STORE_WAIT)
        except Exception as e:
            self._errors.error("history trash check failed: %s: %s", type(e).__name__, e)
            return
        for key in trashed:
            log.info("%s is in the trash: closing its clients here", "/".join(key))
            self.drop_local(key)

    # --- versions -------------------------------------------------------------------

    def create(self, key: DocKey, label: str | None) -> dict[str, Any]:
        """A named version of the document now (its queued updates committed first);
        NotFound when storage holds nothing of it."""
        made = self.bounded(self.store.create_version, key, label)
        if made is None:
            raise NotFound("no such document")
        self._event(VERSION_CREATED, key, version=public(made))
        return made

    def restore(
        self, room: Any, version_id: int, author: str | None, apply: Callable[[bytes], bool]
    ) -> dict[str, Any]:
        """Make the document of `room` (held by the caller) equal version `version_id`:
        the state before it saved as a version when it is not the last one, then the
        forward update applied by `apply(update)` (an API write: True once durable).
        {"restored", "version_before", "changed"}."""
        key = room.key
        found = self.bounded(self.store.version, key, version_id)
        if found is None:
            raise NotFound("no such version")
        room.wait_durable()
        before = self.bounded(
            self.store.create_version, key, f"before restoring version {version_id}", True
        )
        if before is not None:
            self._event(VERSION_CREATED, key, version=public(before))
        update = restore_update(room.current_update(), bytes(found[1]))
        changed = bool(update) and apply(update)
        self._event(DOCUMENT_RESTORED, key, version=version_id, sub=author)
        return {
            "restored": version_id,
            "version_before": public(before) if before is not None else None,
            "changed": changed,
        }

    def bounded(self, call: Callable[..., Any], *args: Any) -> Any:
        """`call(*args, timeout=STORE_WAIT)` of the store; TryAgainLater (503) when
        storage fails or does not answer in time."""
        try:
            return call(*args, timeout=STORE_WAIT)
        except Exception as e:  # a StoreError, or the driver's own (database down)
            self._errors.error("history: storage: %s: %s", type(e).__name__, e)
            raise TryAgainLater("storage does not answer; retry") from None

    # --- the trash ------------------------------------------------------------------

    def delete(self, key: DocKey) -> dict[str, Any]:
        """Move the document to the trash and close its clients everywhere (4404);
        NotFound when there is no such document, DocumentDeleted when it is in the
        trash already."""
        loaded = self.bounded(self.store.load, key)
        if loaded.deleted_at is not None:
            raise DocumentDeleted()
        room = self.documents.get(key)
        if not loaded.updates and (room is None or not room.connections):
            raise NotFound("no such document")
        deleted_at = self.bounded(self.store.trash, key)
        closed = self.drop_local(key)
        self._tell_others(key)
        self._event(DOCUMENT_DELETED, key)
        return {"deleted": True, "deleted_at": deleted_at, "connections_closed": closed}

    def trashed(self, key: DocKey) -> None:
        """The admin console trashed `key` its own way: the event, the other processes."""
        self._tell_others(key)
        self._event(DOCUMENT_DELETED, key)

    def undelete(self, key: DocKey) -> None:
        """Take the document out of the trash; NotFound when it is not there."""
        if not self.bounded(self.store.untrash, key):
            raise NotFound("the document is not in the trash")
        self._event(DOCUMENT_UNDELETED, key)

    def drop_local(self, key: DocKey) -> int:
        """Close this process's clients of `key` with 4404 and drop its room without
        writing a snapshot (`DocumentManager.drop`); the number of connections closed."""
        try:
            return self.documents.drop(key)
        except Exception as e:  # the trash check drops it again at its next tick
            self._errors.error("%s: dropping the deleted document failed: %s", "/".join(key), e)
            return 0

    def _tell_others(self, key: DocKey) -> None:
        if self.redis is None:
            return
        try:
            self.redis.publish(CHANNEL, json.dumps(list(key)))
        except Exception as e:  # the others' trash checks close it within TRASH_CHECK
            self._errors.error(
                "history: telling other processes failed: %s: %s", type(e).__name__, e
            )

    def _listen_loop(self) -> None:
        assert self.subscriber is not None
        while not self._stopped.is_set():
            try:
                pubsub = self.subscriber.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(CHANNEL)
                for message in pubsub.listen():
                    key = DocKey(*json.loads(message["data"]))
                    if self.documents.get(key) is not None:
                        self.drop_local(key)
            except Exception as e:
                if self._stopped.is_set():  # stop() closed the connection under the read
                    return
                self._errors.error("history: listening failed: %s: %s", type(e).__name__, e)
                self._stopped.wait(1.0)


def iso(timestamp: float) -> str:
    """ISO 8601 UTC with milliseconds and a Z."""
    return (
        datetime.fromtimestamp(timestamp, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def public(meta: dict[str, Any]) -> dict[str, Any]:
    """A version's description as the API shows it (created_at in ISO 8601 UTC)."""
    return dict(meta, created_at=iso(meta["created_at"]))
