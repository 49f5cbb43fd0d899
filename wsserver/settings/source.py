"""Where a config comes from: one YAML file, `--config`, else `$WSSERVER_CONFIG`, else
the development fallback (`wsserver serve` and `wsserver token` only), read as a
mapping. Light on purpose (PyYAML and the errors): `wsserver serve` reads its address
from it before the rest of the config is imported and checked (listen.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from ..errors import ConfigError

# The development config: the fallback of `wsserver serve` and `wsserver token` only.
DEFAULT_CONFIG_PATH = "config/dev.yaml"


def read(path: str | None, env: Mapping[str, str], fallback: str | None = None) -> Any:
    """The parsed file (`{}` when empty): `path`, else `$WSSERVER_CONFIG`, else `fallback`.
    Without a fallback (the production entry point) a missing `$WSSERVER_CONFIG` is a
    ConfigError: production never silently serves the development config."""
    path = path or env.get("WSSERVER_CONFIG") or fallback
    if not path:
        raise ConfigError(
            "WSSERVER_CONFIG",
            "is not set: name the config file the "
            "server runs with (config/dev.yaml is for `wsserver serve` "
            "on this machine only)",
        )
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f) or {}
    except OSError as e:
        raise ConfigError("config", f"cannot read {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise ConfigError("config", f"{path} is not valid YAML: {e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError("config", f"{path} is not UTF-8: {e}") from e
