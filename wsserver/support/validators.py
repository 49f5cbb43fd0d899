"""Setting validators: one style for every key of the config.

A validator is a function `check(key, value) -> value`: it returns the value to keep
(normalized: seconds as floats, defaults filled in) or raises ConfigError naming `key`,
the full dotted path of what is wrong (`plans.free.max_connections`, `pins[0].region`).
The functions below build validators; modules that own a setting (limits/plans.py,
regions/map.py, handshake/tenants.py) compose them, so every setting reads and fails the
same way, and every level of the config refuses unknown keys (`known_keys`).

This module imports nothing of wsserver but its errors: owners of settings import it
without pulling in the settings table (settings/table.py, which imports them).
"""

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError, ConfigErrors

Validator = Callable[[str, Any], Any]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def integer(
    low: int | None = None, high: int | None = None, *, nullable: bool = False
) -> Validator:
    """An int within [low, high] (either bound optional); None too when `nullable`."""

    def check(key, value):
        if value is None and nullable:
            return None
        if not _is_int(value):
            what = "an integer or null" if nullable else "an integer"
            raise ConfigError(key, f"must be {what}, not {value!r}")
        if low is not None and high is not None and not low <= value <= high:
            raise ConfigError(key, f"must be between {low} and {high}")
        if low is not None and value < low:
            raise ConfigError(key, f"must be >= {low}")
        if high is not None and value > high:
            raise ConfigError(key, f"must be <= {high}")
        return value

    return check


def number(
    low: float | None = None, what: str = "a number", high: float | None = None
) -> Validator:
    """An int or float within [low, high] (either bound optional), kept as a float.
    `what` names it in the error."""

    def check(key, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"must be {what}, not {value!r}")
        if low is not None and high is not None and not low <= value <= high:
            raise ConfigError(key, f"must be {what} from {low:g} to {high:g}")
        if low is not None and value < low:
            raise ConfigError(key, f"must be >= {low}")
        if high is not None and value > high:
            raise ConfigError(key, f"must be <= {high:g}")
        return float(value)

    return check


def string(key: str, value: Any) -> str:
    """A non-empty string."""
    if not isinstance(value, str) or not value:
        raise ConfigError(key, "must be a non-empty string")
    return value


def choice(*choices: str) -> Validator:
    """One of `choices`."""

    def check(key, value):
        if value not in choices:
            raise ConfigError(key, f"must be one of {', '.join(choices)}, not {value!r}")
        return value

    return check


def matching(pattern: str, description: str, nullable: bool = False) -> Validator:
    """A string matching the regular expression `pattern` (from its start);
    `description` says what is expected (`a redis:// or rediss:// URL`)."""
    compiled = re.compile(pattern)

    def check(key, value):
        if value is None and nullable:
            return None
        if not isinstance(value, str) or not compiled.match(value):
            raise ConfigError(key, f"must be {description}, not {value!r}")
        return value

    return check


def mapping(key: str, value: Any) -> dict:
    """Any mapping (checked further by whoever reads it)."""
    if not isinstance(value, dict):
        raise ConfigError(key, "must be a mapping")
    return value


def unchecked(key: str, value: Any) -> Any:
    """Any value: a field of a `section` that its owner parses further (the tenants of
    `auth`, an app's `plan` and `webhooks`)."""
    return value


def required(validate: Validator) -> Validator:
    """`validate`, after refusing a missing value (None) with "is required"."""

    def check(key, value):
        if value is None:
            raise ConfigError(key, "is required")
        return validate(key, value)

    return check


def at_least_one(what: str, kind: type = list) -> Validator:
    """A non-empty list (or mapping: `kind=dict`) of `what`s (checked further by the
    caller), else "needs at least one WHAT"."""

    def check(key, value):
        if not isinstance(value, kind) or not value:
            raise ConfigError(key, f"needs at least one {what}")
        return value

    return check


def list_of(
    item: Validator,
    description: str,
    *,
    nonempty: bool = False,
    indexed: bool = True,
) -> Validator:
    """A list (non-empty when `nonempty`) whose every entry `item` accepts; None stays
    None (the caller says what an absent list means). Entries are checked under
    `KEY[i]` (`pins[0].region`), or with `indexed=False` under the list's own key (a
    list of plain values: `events: must be one of ...`). `description` says what is
    expected (`a list of origins`)."""

    def check(key, value):
        if value is None:
            return None
        if not isinstance(value, list) or (nonempty and not value):
            raise ConfigError(key, f"must be {description}")
        return [item(f"{key}[{i}]" if indexed else key, entry) for i, entry in enumerate(value)]

    return check


def url(schemes: Iterable[str], description: str) -> Validator:
    """A URL of one of `schemes` that names a host; `description` says which
    (`an http:// or https:// URL`). The value is not repeated in the error: a URL may
    carry a password or a token."""
    schemes = tuple(schemes)

    def check(key, value):
        parts = urlsplit(value) if isinstance(value, str) else None
        if parts is None or parts.scheme not in schemes or not parts.hostname:
            raise ConfigError(key, f"must be {description}")
        return value

    return check


def boolean(key: str, value: Any) -> bool:
    """true or false: YAML's booleans, or the strings "true" and "false" (what a
    `"${VAR:-false}"` gives); nothing else (not 0/1, not "yes")."""
    if isinstance(value, str) and value in ("true", "false"):
        return value == "true"
    if not isinstance(value, bool):
        raise ConfigError(key, f"must be true or false, not {value!r}")
    return value


def long_secret(minimum: int, what: str = "") -> Validator:
    """A secret string of at least `minimum` bytes (UTF-8). `what` says why that many
    (e.g. "RFC 7518 §3.2") in the error."""

    def check(key, value):
        if not isinstance(value, str) or not value:
            raise ConfigError(key, f"is required (empty or unset): {minimum} bytes at least")
        size = len(value.encode("utf-8"))
        if size < minimum:
            why = f", {what}" if what else ""
            raise ConfigError(
                key, f"is too short: {size} bytes, at least {minimum} are needed{why}"
            )
        return value

    return check


def known_keys(key: str, mapping: Mapping, known: Iterable[str]) -> Mapping:
    """Refuse every key of `mapping` that is not in `known` (sorted), naming each in
    full (`auth.tenants.acme.apps.editor.alowed_origins`): a typo must stop start-up,
    never be ignored (a misspelled `allowed_origins` would leave an app open to every
    Origin). Returns `mapping`."""
    known = tuple(known)
    unknown = sorted(str(name) for name in mapping if name not in known)
    if unknown:
        prefix = f"{key}." if key else ""
        raise ConfigErrors(
            [
                ConfigError(
                    f"{prefix}{name}", f"unknown setting (known here: {', '.join(sorted(known))})"
                )
                for name in unknown
            ]
        )
    return mapping


class Problems:
    """Every ConfigError of one pass over a config, so that one boot reports them all:
    `with problems.check(): ...` keeps what the block raised and goes on."""

    def __init__(self) -> None:
        self.errors: list[ConfigError] = []

    @contextmanager
    def check(self) -> Iterator[None]:
        try:
            yield
        except ConfigError as e:
            self.errors.extend(e.problems)

    def raise_all(self) -> None:
        """Raise what was found: the one ConfigError, or ConfigErrors for several."""
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise ConfigErrors(self.errors)


def section(
    fields: Mapping[str, Validator],
    defaults: Mapping[str, Any] | None = None,
    required: Iterable[str] = (),
    description: str = "a mapping",
    nullable: bool = True,
) -> Validator:
    """A mapping with the keys of `fields` only, each checked by its validator under
    `KEY.FIELD`. A missing field takes its value from `defaults` (not validated: the
    owner's defaults are right by construction) or, when absent there too, is left out;
    `required` fields must be present. None means an empty mapping when `nullable`."""
    defaults = dict(defaults or {})
    required = tuple(required)

    def check(key, value):
        if value is None and nullable:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(key, f"must be {description}")
        known_keys(key, value, fields)
        for name in required:
            if name not in value:
                raise ConfigError(f"{key}.{name}", "is required")
        result = {}
        for name, validate in fields.items():
            if name in value:
                result[name] = validate(f"{key}.{name}", value[name])
            elif name in defaults:
                result[name] = defaults[name]
        return result

    return check


def fraction_of(
    validate: Validator, part: str, whole: str, share: float, why: str, *, strict: bool = False
) -> Validator:
    """`validate` (a `section`), then its field `part` refused under `KEY.PART` with the
    message `why` when it is more than `share` of its field `whole` (or exactly that,
    when `strict`): a heartbeat and the TTL it renews. Not checked when the section left
    either field out (no value, no default)."""

    def check(key, value):
        result = validate(key, value)
        if part in result and whole in result:
            limit = result[whole] * share
            if result[part] > limit or (strict and result[part] == limit):
                raise ConfigError(f"{key}.{part}", why)
        return result

    return check
