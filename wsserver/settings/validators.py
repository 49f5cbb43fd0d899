"""Checks every concern's settings share (a leaf module: it imports only errors).

A validator takes `(key, value)`, where `key` is the full dotted path of the value in
the config (`auth.tenants.acme.apps.editor`), and returns the value normalized or
raises ConfigError naming that key.
"""

from ..errors import ConfigError


def known_keys(key, mapping, known):
    """Refuse the first key of `mapping` (sorted) that is not in `known`, naming it in
    full (`auth.tenants.acme.apps.editor.alowed_origins`): a typo must stop start-up,
    never be ignored (a misspelled `allowed_origins` would leave an app open to every
    Origin). Returns `mapping`."""
    unknown = sorted(str(name) for name in mapping if name not in known)
    if unknown:
        prefix = f"{key}." if key else ""
        raise ConfigError(f"{prefix}{unknown[0]}",
                          f"unknown setting (known here: {', '.join(sorted(known))})")
    return mapping
