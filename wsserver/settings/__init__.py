"""Settings: every config key declared once (`SETTINGS`), loaded into a `Config`.

table.py declares the keys, config.py loads a file against them. A high floor of the
house (CONTRIBUTING.md): the table composes the checks each concern owns (limits'
plans, regions' map, auth's tenants, webhooks) with the shared ones in
`support/validators.py`; the concerns themselves import no settings at run time (a
`Config` only for type hints).

`Config`, `SETTINGS` and the rest are imported on first use (PEP 562), not with the
package: `wsserver serve` reads where it listens (listen.py, source.py) before the
table's imports (listen.py says why).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import DEFAULT_CONFIG_PATH, Config
    from .setting import Setting
    from .table import SETTINGS

__all__ = ["DEFAULT_CONFIG_PATH", "SETTINGS", "Config", "Setting"]


def __getattr__(name: str) -> Any:
    if name in ("Config", "DEFAULT_CONFIG_PATH"):
        from . import config

        return getattr(config, name)
    if name == "SETTINGS":
        from .table import SETTINGS

        return SETTINGS
    if name == "Setting":
        from .setting import Setting

        return Setting
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
