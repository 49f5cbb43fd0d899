"""`${VAR}` and `${VAR:-default}` in a parsed YAML tree: the one expansion of environment
variables, for the config (settings/config.py) and for what is read of it before the
config can be loaded (logs.log_format_of, in gunicorn's master).

A variable that is set wins, even when empty; `:-default` serves only an unset one; an
unset one without a default is a ConfigError naming the key (or, with `errors`, added
there and replaced by ""). Nothing else is special: `$VAR`, `{VAR}` and `$$` stay as
written, and a value is expanded once (a variable holding `${X}` is not expanded again).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .errors import ConfigError

VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(
    value: Any,
    env: Mapping[str, str],
    key: str = "config",
    sources: dict[str, list[tuple[str, bool]]] | None = None,
    errors: list[ConfigError] | None = None,
) -> Any:
    """`value` with every `${VAR}` of its strings replaced, keys named by their dotted path
    (`auth.tenants.acme.keys[0].secret`).

    `sources` (when given) gets, for each key whose string held a ${VAR}, the variables
    and whether each was set, so an error about the key can name them. With `errors`
    every unset variable without a default is added there (and replaced by ""); without
    it the first one raises."""
    if isinstance(value, dict):
        return {
            k: expand_env(v, env, f"{key}.{k}" if key != "config" else str(k), sources, errors)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [expand_env(v, env, f"{key}[{i}]", sources, errors) for i, v in enumerate(value)]
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if sources is not None:
                sources.setdefault(key, []).append((name, name in env))
            if name in env:
                return env[name]
            if default is not None:
                return default
            error = ConfigError(key, f"environment variable {name} is not set")
            if errors is None:
                raise error
            errors.append(error)
            return ""

        return VAR.sub(replace, value)
    return value
