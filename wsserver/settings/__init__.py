"""Settings: every config key declared once (`SETTINGS`), loaded into a `Config`.

table.py declares the keys, config.py loads a file against them. A high floor of the
house (CONTRIBUTING.md): the table composes the checks each concern owns (limits'
plans, regions' map, auth's tenants, webhooks) with the shared ones in
`support/validators.py`; the concerns themselves import no settings at run time (a
`Config` only for type hints).
"""

from .config import DEFAULT_CONFIG_PATH, Config
from .table import SETTINGS, Setting

__all__ = ["DEFAULT_CONFIG_PATH", "SETTINGS", "Config", "Setting"]
