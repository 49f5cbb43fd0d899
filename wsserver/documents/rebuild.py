"""An update that fails half-applied, and the rebuild of the document it damaged.

Yrs may integrate part of an update before it fails (a block whose parent is a
character): the document then holds a part of an update that was refused and never
stored. `apply` says so (HalfApplied), and `rebuild` replaces the room's document by
one built from storage: every other update of the room is valid and stored (or queued
to be), so the store holds exactly the document without the offender's part.

Limits: a rebuild loads the whole log (a large document stalls its room meanwhile:
messages and joins wait on `Room.rebuilding`); when it fails the copy may still hold the
offender's part, which is logged as an error and lasts until the room is unloaded.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from gevent.event import AsyncResult
from pycrdt import Doc

from ..errors import InvalidPayload
from . import ydoc

if TYPE_CHECKING:
    from .room import Room

log = logging.getLogger(__name__)


class HalfApplied(Exception):
    """An update failed after changing the document: it must be rebuilt."""


def apply(doc: Doc, update: bytes) -> None:
    """Apply a Yjs update; every failure becomes InvalidPayload (1007).

    A decoding failure (ValueError) leaves the document untouched. An integration
    failure (RuntimeError, e.g. a block whose parent is a character) may come after
    part of the update was integrated: HalfApplied, chained to the InvalidPayload,
    tells the room to rebuild the document.
    """
    try:
        doc.apply_update(update)
    except ValueError as e:
        raise InvalidPayload("invalid update") from e
    except RuntimeError:
        raise HalfApplied() from InvalidPayload("invalid update")
    except BaseException as e:
        if ydoc.is_panic(e):
            raise HalfApplied() from InvalidPayload("invalid update")
        raise


def rebuild(room: Room) -> None:
    """Replace `room`'s document, which a failed update half-changed, by one built from
    storage. An update already queued is committed first."""
    log.warning("%r: an invalid update was partly applied; rebuilding from storage", room)
    rebuilding = room.rebuilding = AsyncResult()
    try:
        room.wait_durable()
        loaded = room.store.load(room.key)
        room.doc, room.unintegrated = ydoc.build(loaded.updates)
        room.snapshot_digest = loaded.snapshot_digest  # the copy holds that one now
    except Exception:
        # The document may still hold the offender's part: say so loudly rather than
        # serve it silently; the next unload drops this copy.
        log.exception("%r: rebuild failed; the in-memory copy may differ from storage", room)
    finally:
        rebuilding.set()
        room.rebuilding = None
