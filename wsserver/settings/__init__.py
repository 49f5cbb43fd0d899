"""Settings: every config key declared once (`SETTINGS`), loaded into a `Config`.

A high floor of the house (CONTRIBUTING.md): config.py composes the checks each concern
owns (limits' plans, regions' map, auth's tenants, webhooks) with the shared ones in
`support/validators.py`; the concerns themselves import no settings at run time (a
`Config` only for type hints).
"""

from .config import DEFAULT_CONFIG_PATH, SETTINGS, Config, Setting

__all__ = ["DEFAULT_CONFIG_PATH", "SETTINGS", "Config", "Setting"]
