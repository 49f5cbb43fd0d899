"""Who is asking, and what they did: the named admins of `admin` (settings/table.py)
and the audit trail.

An admin is {name, role}: `viewer` reads everything, `operator` also acts (disconnect,
delete, restore). The old single `admin.token` is an operator named `admin`. Tokens are
compared in constant time, each against every configured one.

Every action (and every view of one document) is logged on `wsserver.audit` (fields
admin, role, action, tenant, app, doc, ip) and written to the store's audit trail
(who, what, which document or connection, when, from which IP), which the console
shows. The answer waits at most ANSWER_WAIT seconds for the entry to be stored (during
an outage the write goes on in its own greenlet, up to AUDIT_WAIT, and a failure is
logged with the entry); the log line is written first in any case.
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import Any, NamedTuple

import gevent
from flask import request

from ...documents.key import DocKey
from ...errors import ActionForbidden, MissingBearer, NotFound, WrongBearer
from ...handshake.handshake import bearer_token
from ...logs import Throttled, fields

log = logging.getLogger(__name__)
audit_log = logging.getLogger("wsserver.audit")

AUDIT_WAIT = 30.0  # seconds an audit entry may take to be stored
ANSWER_WAIT = 0.5  # seconds an action's answer waits for that


class Admin(NamedTuple):
    name: str
    role: str

    @property
    def may_act(self) -> bool:
        return self.role == "operator"


class Admins:
    """The admins of the `admin` setting, found by their token."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.tokens = [
            (t["token"].encode(), Admin(t["name"], t["role"])) for t in settings.get("tokens", [])
        ]
        if settings.get("token"):
            self.tokens.append((settings["token"].encode(), Admin("admin", "operator")))

    def who(self, act: bool = False) -> Admin:
        """The admin this request's Bearer token names: MissingBearer (401), WrongBearer
        (403) for no admin's token, ActionForbidden (403) when `act` and it is a viewer."""
        given = bearer_token(request.headers.get("Authorization", ""))
        if given is None:
            raise MissingBearer()
        found = None
        for token, admin in self.tokens:  # every one compared: no early exit to time
            if hmac.compare_digest(given.encode(), token):
                found = admin
        if found is None:
            raise WrongBearer()
        if act and not found.may_act:
            error = ActionForbidden(f"admin {found.name!r} is a viewer: it may not act")
            error.admin = found
            raise error
        return found


class Guard:
    """Every admin route's check: `authorize(act=None, key=None, target=None)` is the
    admin asking (NotFound without `admin`: the console is off); for an action (`act`:
    its name, with what it is done to), an operator, else ActionForbidden (403) and the
    refusal in the audit trail. For the console's routes and any other blueprint's
    (the history's)."""

    def __init__(self, settings: dict[str, Any] | None, trail: AuditTrail | None) -> None:
        self.admins = Admins(settings) if settings else None
        self.trail = trail

    def authorize(
        self, act: str | None = None, key: DocKey | None = None, target: str | None = None
    ) -> Admin:
        if self.admins is None:
            raise NotFound()
        try:
            return self.admins.who(act is not None)
        except ActionForbidden as e:
            if self.trail is not None and act is not None:
                self.trail.record(
                    e.admin, act, key, target, level=logging.WARNING, refused=e.reason
                )
            raise


class AuditTrail:
    def __init__(self, store: Any) -> None:
        self.store = store
        self._errors = Throttled(log)

    def record(
        self,
        admin: Admin,
        action: str,
        key: DocKey | None = None,
        target: str | None = None,
        level: int = logging.INFO,
        **details: Any,
    ) -> None:
        """Log the action and, at INFO and above, store it. `target`: what it was done
        to when not a document (a connection's id)."""
        ip = request.remote_addr or "-"
        what = "/".join(key) if key is not None else target or "the console"
        extra = "".join(f" {name}={value}" for name, value in details.items())
        audit_log.log(
            level,
            "admin %s %s from %s by %s%s",
            action,
            what,
            ip,
            admin.name,
            extra,
            extra={
                "action": action,
                "admin": admin.name,
                "role": admin.role,
                **fields(key=key, ip=ip),
                **details,
            },
        )
        if level < logging.INFO:
            return
        entry = {
            "at": time.time(),  # the action's time, whenever storage takes it
            "admin": admin.name,
            "role": admin.role,
            "action": action,
            "target": what,
            "ip": ip,
            "details": details,
        }
        gevent.spawn(self._store, entry).join(ANSWER_WAIT)

    def _store(self, entry: dict[str, Any]) -> None:
        try:
            self.store.record_audit(entry, timeout=AUDIT_WAIT)
        except Exception as e:  # StoreError or the driver's: the log line stays
            self._errors.error(
                "admin audit entry not stored (%s: %s): %s", type(e).__name__, e, entry
            )

    def entries(self, before: int | None, limit: int, timeout: float) -> list[dict[str, Any]]:
        return self.store.audit_entries(before, limit, timeout=timeout)
