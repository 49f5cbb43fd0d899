"""Settings: every config key declared once (`SETTINGS`), loaded into a `Config`.

`validators` holds the checks every concern's settings share. It is a leaf that the
concern modules (limits, regions, auth) import while config.py imports their validators
in turn, so importing the package must not load config.py: the names below are loaded
on first use.
"""

_EXPORTS = ("DEFAULT_CONFIG_PATH", "SETTINGS", "Config", "Setting", "expand_env")
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        from . import config

        return getattr(config, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
