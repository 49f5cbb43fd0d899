"""Settings: every config key declared once (`SETTINGS`), loaded into a `Config`."""

from .config import DEFAULT_CONFIG_PATH, SETTINGS, Config, Setting, expand_env

__all__ = ["DEFAULT_CONFIG_PATH", "SETTINGS", "Config", "Setting", "expand_env"]
