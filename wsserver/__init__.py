"""wsserver: a y-websocket-compatible Yjs sync server on gevent."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    from flask import Flask

    from .settings import Config

__version__ = "0.1.0"


def create_app(
    test_config: Mapping[str, Any] | Config | None = None, config_path: str | None = None
) -> Flask:
    """The WSGI app (wsserver/app.py), imported only when called: `import wsserver` stays
    light."""
    from .app import create_app as factory

    return factory(test_config, config_path)
