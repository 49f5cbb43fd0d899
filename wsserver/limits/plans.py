"""The `plans` and `rate_limit` settings: their shape, defaults and validation.

A plan is a set of limits, each optional (absent or null: no limit of that kind):

    max_connections     open connections per app (tenant, app)         -> 4004
    max_documents       active documents per app                       -> 4005
    max_users_per_doc   distinct users (token `sub`) per document      -> 4008
    max_ops_per_minute  messages per connection, per minute            -> 4006

A token's `limits` claim holds the same keys and can only lower its connection's
limits (`Limits.lowered_by`). Validation happens once, at start-up, and every error
names its key (`plans.free.max_connections`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..support.validators import integer, matching, number, section

if TYPE_CHECKING:
    from ..handshake.auth import Authenticator
    from ..handshake.tenants import App

if TYPE_CHECKING:
    from ..handshake.auth import Authenticator
    from ..handshake.tenants import App

LIMIT_KEYS = ("max_connections", "max_documents", "max_users_per_doc", "max_ops_per_minute")
# The smallest value each key accepts: 0 connections/documents/users refuses everyone
# (a suspended app); a message budget of 0 would close a connection at its first message.
_MINIMUM = {
    "max_connections": 0,
    "max_documents": 0,
    "max_users_per_doc": 0,
    "max_ops_per_minute": 1,
}


@dataclass(frozen=True)
class Limits:
    """Effective limits of one connection; None means unlimited."""

    max_connections: int | None = None
    max_documents: int | None = None
    max_users_per_doc: int | None = None
    max_ops_per_minute: int | None = None

    def lowered_by(self, claim: Any) -> Limits:
        """These limits lowered by a token's `limits` claim (a mapping), never raised.

        Raises ValueError, with a short message, for a claim that is not a mapping of
        known keys to integers: a malformed claim is the issuer's bug, and ignoring it
        would hand out the plan's higher limits.
        """
        if claim is None:
            return self
        if not isinstance(claim, dict):
            raise ValueError("limits claim must be an object")
        changes = {}
        for key, value in claim.items():
            if key not in LIMIT_KEYS:
                raise ValueError(f"unknown limit {str(key)[:40]!r}")
            if isinstance(value, bool) or not isinstance(value, int) or value < _MINIMUM[key]:
                raise ValueError(f"limit {key} must be an integer >= {_MINIMUM[key]}")
            current = getattr(self, key)
            changes[key] = value if current is None else min(current, value)
        return replace(self, **changes) if changes else self


UNLIMITED = Limits()


# One validator per limit key (wsserver/support/validators.py): an integer >= its
# minimum, or null for no limit.
_LIMIT_FIELDS = {k: integer(_MINIMUM[k], nullable=True) for k in LIMIT_KEYS}
_PLAN = section(
    _LIMIT_FIELDS, defaults=dict.fromkeys(LIMIT_KEYS), description="a mapping of limits"
)


def validate_plans(key: str, value: Any) -> dict[str, Limits]:
    """`plans: {NAME: {max_connections: N, ...}}` -> {NAME: Limits}."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(key, "must be a mapping of plan name -> limits")
    return {str(name): Limits(**_PLAN(f"{key}.{name}", conf)) for name, conf in value.items()}


RATE_LIMIT_DEFAULTS = {
    "handshakes_per_ip": None,  # off
    "trusted_proxies": 0,
    "storage": None,  # the `redis` URL when set, else memory://
    "lease_seconds": 30.0,
}


def _rate(key, value):
    if value is None:
        return None
    from limits import parse_many  # only for a config that sets a rate (see gates.py)

    try:
        parse_many(value)
    except (TypeError, ValueError):
        raise ConfigError(
            key, f'must be a rate such as "60/minute" or "10/second;100/minute", not {value!r}'
        ) from None
    return value


_RATE_LIMIT = section(
    {
        "handshakes_per_ip": _rate,
        "trusted_proxies": integer(0, 16),
        "storage": matching(
            r"memory://$|rediss?://", "memory:// or a redis:// / rediss:// URL", nullable=True
        ),
        "lease_seconds": number(1, what="a number of seconds"),
    },
    defaults=RATE_LIMIT_DEFAULTS,
)


def validate_rate_limit(key: str, value: Any) -> dict[str, Any]:
    """`rate_limit: {handshakes_per_ip, trusted_proxies, storage, lease_seconds}` ->
    the same mapping, defaults filled in."""
    return _RATE_LIMIT(key, value)


def check_app_plans(authenticator: Authenticator, plans: dict[str, Limits]) -> None:
    """Every app's `plan` must name a configured plan: a ConfigError names the app's key."""
    for tenant in authenticator.tenants.values():
        for app in tenant.apps.values():
            plan = app.settings.get("plan")
            if plan is None:
                continue
            if not isinstance(plan, str) or plan not in plans:
                known = ", ".join(sorted(plans)) or "none configured"
                raise ConfigError(
                    f"auth.tenants.{tenant.name}.apps.{app.name}.plan",
                    f"unknown plan {plan!r} (plans: {known})",
                )


def plan_of(app: App, plans: dict[str, Limits]) -> Limits:
    """The Limits of an app's plan; UNLIMITED for an app without one."""
    name = app.settings.get("plan")
    return UNLIMITED if name is None else plans[name]
