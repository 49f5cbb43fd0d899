"""A config loaded against the settings table (table.py): `Config.load` / `from_mapping`.

A config is one YAML file (`--config`, else `$WSSERVER_CONFIG`; only the development
commands `wsserver serve` and `wsserver token` fall back to `config/dev.yaml`, never
the production entry point `create_app()` under gunicorn) or, in tests, a dict given to
`create_app`. Strings may hold `${VAR}` or
`${VAR:-default}`, replaced from the environment so secrets stay out of the file.
Every error names the key it is about (and the variables its value came from) and
stops start-up; every error of a file is reported at once (`ConfigErrors`), so one boot
tells the operator everything to fix. Unknown keys are errors too, so a typo is not
silently ignored.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..envsubst import expand_env
from ..errors import ConfigError
from ..regions.map import check_region_map
from ..support.liveness import check_expiries
from ..support.redis import without_certificate_check
from ..support.validators import Problems, known_keys
from . import source
from .listen import port_from_env
from .table import SETTINGS

DEFAULT_CONFIG_PATH = source.DEFAULT_CONFIG_PATH
_BY_NAME = {s.name: s for s in SETTINGS}


def name_sources(
    errors: list[ConfigError], sources: Mapping[str, list[tuple[str, bool]]]
) -> list[ConfigError]:
    """`errors` with each key's first problem only (an unset variable leaves its key
    empty: "is not set" says it all), each naming the environment variables its value
    came from: `(from $WSSERVER_SECRET)`, `($DEV_SECRET is unset: its default was used)`."""
    seen, named = set(), []
    for error in errors:
        if error.key in seen:
            continue
        seen.add(error.key)
        notes = [
            f"from ${name}" if is_set else f"${name} is unset: its default was used"
            for name, is_set in sources.get(error.key, ())
            if name not in error.message
        ]
        named.append(
            ConfigError(error.key, f"{error.message} ({'; '.join(notes)})") if notes else error
        )
    return named


class Config:
    """Validated settings as attributes (`config.storage`); `raw` keeps the mapping,
    `sources` the environment variables each key's value came from (expand_env)."""

    def __init__(
        self, values: dict[str, Any], sources: dict[str, list[tuple[str, bool]]] | None = None
    ) -> None:
        self.raw = values
        self.sources = sources or {}
        for name, value in values.items():
            setattr(self, name, value)

    if TYPE_CHECKING:  # one attribute per setting of the table, each of its own type

        def __getattr__(self, name: str) -> Any: ...

        def __setattr__(self, name: str, value: Any) -> None: ...

    @classmethod
    def from_mapping(
        cls,
        mapping: Mapping[str, Any],
        env: Mapping[str, str] | None = None,
        checks: Iterable[Callable[[dict[str, Any]], None]] = (),
    ) -> Config:
        """Validate `mapping` (a parsed YAML tree); every problem at once as
        ConfigErrors, each naming its key and the variables that filled it.

        `checks` run after the settings, each given the settings that are valid (the
        callers' cross-checks: tokens, plans, webhooks, the process's own rules); their
        ConfigErrors are reported with the rest."""
        env = os.environ if env is None else env
        if not isinstance(mapping, dict):
            raise ConfigError("config", "must be a mapping at the top level")
        problems = Problems()
        sources: dict[str, list[tuple[str, bool]]] = {}
        mapping = expand_env(
            mapping, env, sources=sources, errors=problems.errors if problems else None
        )
        values, failed = _validate_settings(mapping, problems)
        _cross_check(values, failed, env, problems)
        if values["redis_verify_certificate"] is False:
            # Applied to the URLs themselves, so every Redis client reads it from them.
            if values["redis"]:
                values["redis"] = without_certificate_check(values["redis"])
            if isinstance(values["rate_limit"], dict) and values["rate_limit"].get("storage"):
                values["rate_limit"]["storage"] = without_certificate_check(
                    values["rate_limit"]["storage"]
                )
        with problems.check():
            env_port = port_from_env(env)
            if env_port is not None:
                values["port"] = env_port
        valid = {name: value for name, value in values.items() if name not in failed}
        for check in checks:
            with problems.check():
                check(valid)
        problems.errors = name_sources(problems.errors, sources)
        problems.raise_all()
        return cls(values, sources)

    @classmethod
    def load(
        cls,
        path: str | None = None,
        env: Mapping[str, str] | None = None,
        fallback: str | None = None,
        checks: Iterable[Callable[[dict[str, Any]], None]] = (),
    ) -> Config:
        """The config file (`source.read`: `path`, else `$WSSERVER_CONFIG`, else
        `fallback`; production never silently serves the development config)."""
        env = os.environ if env is None else env
        mapping = source.read(path, env, fallback)
        return cls.from_mapping(mapping, env, checks)


def _validate_settings(
    mapping: Mapping[str, Any], problems: Problems
) -> tuple[dict[str, Any], set[str]]:
    """Every setting of the table validated (its default when absent), and the names of
    those that failed (their defaults stand in, for the cross-checks)."""
    with problems.check():
        known_keys("", mapping, _BY_NAME)
    values: dict[str, Any] = {}
    failed: set[str] = set()
    for setting in SETTINGS:
        if setting.name not in mapping:
            values[setting.name] = setting.default
            continue
        before = len(problems.errors)
        with problems.check():
            values[setting.name] = setting.validate(setting.name, mapping[setting.name])
        if len(problems.errors) > before:
            failed.add(setting.name)
            values[setting.name] = setting.default  # for the cross-checks below
    return values, failed


def _cross_check(
    values: dict[str, Any], failed: set[str], env: Mapping[str, str], problems: Problems
) -> None:
    """The rules between settings, each checked when the settings it reads are valid:
    `auth` present, the region map, the records renewed on the process's heartbeat."""
    if "auth" not in failed and values.get("auth") is None:
        problems.errors.append(ConfigError("auth", "is required (at least one tenant with a key)"))
        failed.add("auth")
    if not failed & {"region", "regions", "pins"}:
        with problems.check():
            check_region_map(values, env)
    if not failed & {"process", "registry", "rate_limit"}:
        with problems.check():
            check_expiries(
                values["process"],
                {
                    "registry.ttl_seconds": values["registry"]["ttl_seconds"],
                    "rate_limit.lease_seconds": values["rate_limit"]["lease_seconds"],
                },
            )
