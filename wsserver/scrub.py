"""Secrets out of what is printed: the one scrubber module.

- `redact(text)`: tokens in any text: a query `token=...` (`access_token=` too), a
  subprotocol pair `access_token, JWT`, a header `Bearer X`, and a bare JWT anywhere.
  Every log formatter applies it to each finished line (logs.py), and the handshake to
  the request's environ before an access log can print it.
- `redact_url(url)`: a URL without its password (`postgres://u:***@host/db`), for the
  start-up line, errors and `check-config --connect`.
- `mask_secrets(tree)`: a config tree with every secret masked, for `check-config`.

Limits: the patterns know the shapes above; a secret printed in another shape (a token
in a free-text message without `token=`/`Bearer`, say) is not recognised, so code never
logs a secret by itself.
"""

from __future__ import annotations

import re
from typing import Any

# The value ends at what cannot be part of it in a URL, a header list or a JSON string.
_TOKEN = re.compile(r"((?:token=)|(?:access_token,\s*)|(?:Bearer\s+))[^&\s\"'\\,;]+", re.I)
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
REDACTED = "[redacted]"
# scheme://user:PASSWORD@ (the password stops at "/": without one, "host:port/path"
# followed by an "@" in the query is no password).
_URL_PASSWORD = re.compile(r"^([a-z][a-z0-9+.-]*://[^:/@]*):[^@/]*@", re.I)
# Keys whose values are secrets wherever they appear in the config.
SECRET_KEYS = frozenset({"secret", "token", "password", "private_key"})
MASK = "********"


def redact(text: str) -> str:
    """`text` with every token replaced by [redacted]."""
    if not text:
        return text
    lowered = text.lower()
    if "token" in lowered or "bearer" in lowered:
        text = _TOKEN.sub(r"\1" + REDACTED, text)
    if "eyJ" in text:
        text = _JWT.sub(REDACTED, text)
    return text


def redact_url(url: str, mask: str = "***") -> str:
    """`url` with its password (if any) replaced by `mask`."""
    return _URL_PASSWORD.sub(lambda m: f"{m.group(1)}:{mask}@", url)


def mask_secrets(value: Any, key: str | None = None) -> Any:
    """A copy of a config tree with every secret (SECRET_KEYS' values, URLs' passwords)
    replaced by MASK."""
    if isinstance(value, dict):
        return {k: mask_secrets(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v, key) for v in value]
    if key in SECRET_KEYS and value is not None:
        return MASK
    if isinstance(value, str):
        return redact_url(value, MASK)
    return value
