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

import re
from dataclasses import dataclass, replace

from limits import parse_many

from ..errors import ConfigError
from ..settings.validators import known_keys

LIMIT_KEYS = ("max_connections", "max_documents", "max_users_per_doc", "max_ops_per_minute")
# The smallest value each key accepts: 0 connections/documents/users refuses everyone
# (a suspended app); a message budget of 0 would close a connection at its first message.
_MINIMUM = {"max_connections": 0, "max_documents": 0, "max_users_per_doc": 0,
            "max_ops_per_minute": 1}


@dataclass(frozen=True)
class Limits:
    """Effective limits of one connection; None means unlimited."""
    max_connections: int | None = None
    max_documents: int | None = None
    max_users_per_doc: int | None = None
    max_ops_per_minute: int | None = None

    def lowered_by(self, claim):
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


def _limit_value(key, value, minimum):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, f"must be an integer or null, not {value!r}")
    if value < minimum:
        raise ConfigError(key, f"must be >= {minimum}")
    return value


def validate_plans(key, value):
    """`plans: {NAME: {max_connections: N, ...}}` -> {NAME: Limits}."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(key, "must be a mapping of plan name -> limits")
    plans = {}
    for name, conf in value.items():
        path = f"{key}.{name}"
        conf = {} if conf is None else conf
        if not isinstance(conf, dict):
            raise ConfigError(path, "must be a mapping of limits")
        known_keys(path, conf, LIMIT_KEYS)
        plans[str(name)] = Limits(**{k: _limit_value(f"{path}.{k}", conf.get(k), _MINIMUM[k])
                                     for k in LIMIT_KEYS})
    return plans


RATE_LIMIT_DEFAULTS = {
    "handshakes_per_ip": None,  # off
    "trusted_proxies": 0,
    "storage": None,  # the `redis` URL when set, else memory://
    "lease_seconds": 30.0,
}
_STORAGE = re.compile(r"^(memory://$|rediss?://)")


def validate_rate_limit(key, value):
    """`rate_limit: {handshakes_per_ip, trusted_proxies, storage, lease_seconds}` ->
    the same mapping, defaults filled in."""
    if value is None:
        return dict(RATE_LIMIT_DEFAULTS)
    if not isinstance(value, dict):
        raise ConfigError(key, "must be a mapping")
    known_keys(key, value, RATE_LIMIT_DEFAULTS)
    result = dict(RATE_LIMIT_DEFAULTS, **value)

    rate = result["handshakes_per_ip"]
    if rate is not None:
        try:
            parse_many(rate)
        except ValueError:
            raise ConfigError(f"{key}.handshakes_per_ip",
                              f"must be a rate such as \"60/minute\" or \"10/second;100/minute\", "
                              f"not {rate!r}") from None

    proxies = result["trusted_proxies"]
    if isinstance(proxies, bool) or not isinstance(proxies, int) or not 0 <= proxies <= 16:
        raise ConfigError(f"{key}.trusted_proxies", f"must be an integer from 0 to 16, not {proxies!r}")

    storage = result["storage"]
    if storage is not None and (not isinstance(storage, str) or not _STORAGE.match(storage)):
        raise ConfigError(f"{key}.storage", f"must be memory:// or a redis:// / rediss:// URL, "
                          f"not {storage!r}")

    lease = result["lease_seconds"]
    if isinstance(lease, bool) or not isinstance(lease, (int, float)) or lease < 1:
        raise ConfigError(f"{key}.lease_seconds", f"must be a number of seconds >= 1, not {lease!r}")
    result["lease_seconds"] = float(lease)
    return result


def check_app_plans(authenticator, plans):
    """Every app's `plan` must name a configured plan: a ConfigError names the app's key."""
    for tenant in authenticator.tenants.values():
        for app in tenant.apps.values():
            plan = app.settings.get("plan")
            if plan is None:
                continue
            if not isinstance(plan, str) or plan not in plans:
                known = ", ".join(sorted(plans)) or "none configured"
                raise ConfigError(f"auth.tenants.{tenant.name}.apps.{app.name}.plan",
                                  f"unknown plan {plan!r} (plans: {known})")


def plan_of(app, plans):
    """The Limits of an app's plan; UNLIMITED for an app without one."""
    name = app.settings.get("plan")
    return UNLIMITED if name is None else plans[name]
