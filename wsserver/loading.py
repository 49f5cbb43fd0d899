"""The config a process runs with, loaded and checked against the parts that read it:
`load_settings` gives `create_app` (and the commands that only check a config) the
Config and the Authenticator, every problem at once.

Beyond the settings table's own checks (settings/config.py): the tenants and their keys
(handshake/tenants.py, the development secret only on a loopback address), each app's
plan (limits/plans.py) and webhooks (webhooks/settings.py), and the rules of a platform
deploy under gunicorn (`deployment_problems`). No I/O but reading the config file.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from .errors import ConfigError
from .handshake.auth import Authenticator
from .limits.plans import check_app_plans
from .settings import Config
from .settings.config import name_sources
from .support.validators import Problems
from .webhooks.settings import hooks_by_app


def is_loopback(host: str | None) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    if host is None:  # no address given
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_settings(
    test_config: Mapping[str, Any] | Config | None = None,
    config_path: str | None = None,
    listen_host: str | None = None,
    *,
    fallback: str | None = None,
    serving: bool = False,
    workers: int | None = None,
) -> tuple[Config, Authenticator]:
    """The Config and Authenticator `create_app` builds on, every problem at once
    (ConfigErrors, each naming its key and the environment variable that filled it).

    Without `test_config` the file is `config_path`, else `$WSSERVER_CONFIG`, else
    `fallback` (the development commands only). The public development secret is
    accepted only when the server listens on a loopback `listen_host` (`serving`: `wsserver
    serve`, whose host is `listen_host` or else the config's `host`); gunicorn, which
    binds every interface, never does. `workers` (gunicorn's worker count) adds the rules
    of a platform deploy (`deployment_problems`).
    """
    built: dict[str, Authenticator] = {}

    def check_auth(values: dict[str, Any]) -> None:
        if "auth" not in values:
            return
        host = listen_host if listen_host is not None or not serving else values.get("host")
        problems = Problems()
        authenticator = Authenticator.from_config(
            values["auth"], development=is_loopback(host), problems=problems
        )
        built["auth"] = authenticator
        if "plans" in values:
            with problems.check():
                check_app_plans(authenticator, values["plans"])
        with problems.check():
            hooks_by_app(authenticator)
        problems.raise_all()

    def check_deployment(values: dict[str, Any]) -> None:
        if workers is not None:
            problems = Problems()
            problems.errors = deployment_problems(values, workers)
            problems.raise_all()

    checks = (check_auth, check_deployment)
    if isinstance(test_config, Config):
        config, problems = test_config, Problems()
        for check in checks:
            with problems.check():
                check(config.raw)
        problems.errors = name_sources(problems.errors, config.sources)
        problems.raise_all()
    elif test_config is not None:
        config = Config.from_mapping(test_config, checks=checks)
    else:
        config = Config.load(config_path, fallback=fallback, checks=checks)
    return config, built["auth"]


def deployment_problems(values: Mapping[str, Any], workers: int) -> list[ConfigError]:
    """What a config must have to run under gunicorn (the Procfile, a platform's dyno):
    `redis` for more than one worker, and documents kept where they outlive the
    machine. `values`: the valid settings."""
    problems: list[ConfigError] = []
    if workers > 1 and "redis" in values and not values["redis"]:
        problems.append(
            ConfigError(
                "redis",
                f"must be set to run {workers} workers "
                "(WEB_CONCURRENCY): without it each worker would keep its own copy "
                'of every document. Set it (redis: "${REDIS_URL}") or run one',
            )
        )
    storage = values.get("storage", "")
    if storage == "memory://":
        problems.append(
            ConfigError("storage", "memory:// loses every document on exit (tests only)")
        )
    elif storage.startswith("sqlite:///") and values.get("storage_persistent") is False:
        problems.append(
            ConfigError(
                "storage",
                f"is a SQLite file ({storage}) on this machine's disk, which a platform "
                "(Heroku, Render, ...) wipes at every restart and deploy: use Postgres "
                '(storage: "${DATABASE_URL}"), or set storage_persistent: true if the '
                "file is on a persistent volume",
            )
        )
    return problems
