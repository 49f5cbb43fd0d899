"""wsserver: a y-websocket-compatible Yjs sync server on gevent."""

__version__ = "0.1.0"


def create_app(test_config=None, config_path=None):
    from .app import create_app as factory

    return factory(test_config, config_path)
