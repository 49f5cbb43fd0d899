"""Where `wsserver serve` listens: the `host` and `port` settings (declared here, listed
in table.py with the rest), `$PORT`, and `listen_address`, which reads them before the
rest of the config.

The rest imports what its checks need (PyJWT and cryptography for the keys, pycrdt,
werkzeug, `limits`: ~0.1 s on the development VM), and a restarted server's port is
refused until it listens: its clients back off meanwhile (README, "Restarts"). So
`wsserver serve` takes its port with these first, then loads and checks the whole
config, which reads the same file with the same settings and rules.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..envsubst import expand_env
from ..errors import ConfigError
from ..support.validators import integer, string
from . import source
from .setting import Setting

HOST = Setting("host", "127.0.0.1", string, "Address `wsserver serve` listens on.")
PORT = Setting(
    "port",
    1234,
    integer(0, 65535),
    "Port `wsserver serve` listens on; `$PORT` overrides it, `--port` overrides both.",
)


def port_from_env(env: Mapping[str, str]) -> int | None:
    """`$PORT` (a platform's), which overrides the file's `port`; None when unset."""
    text = env.get("PORT")
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise ConfigError("PORT", f"must be an integer, not {text!r}") from None
    return integer(0, 65535)("PORT", value)


def listen_address(
    path: str | None,
    fallback: str | None = None,
    host: str | None = None,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[str, int]:
    """(host, port) of the config file (`source.read`), `$PORT` over its port, `host` and
    `port` (`--host`, `--port`) over both. Raises the first ConfigError of the two
    settings; loading the whole config reports it with every other problem."""
    env = os.environ if env is None else env
    mapping = source.read(path, env, fallback)
    if not isinstance(mapping, dict):
        raise ConfigError("config", "must be a mapping at the top level")
    given = expand_env({s.name: mapping[s.name] for s in (HOST, PORT) if s.name in mapping}, env)
    values = {
        s.name: s.validate(s.name, given[s.name]) if s.name in given else s.default
        for s in (HOST, PORT)
    }
    env_port = port_from_env(env)
    return (
        host or values["host"],
        port if port is not None else env_port if env_port is not None else values["port"],
    )
