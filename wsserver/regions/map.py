"""The region map: region names, their public base URLs, pins, and the redirect.

    region: eu-central-1                      # this node's (env WSSERVER_REGION overrides)
    regions: {eu-central-1: "wss://eu.example.net", us-east-1: "wss://us.example.net"}
    pins: [{tenant: acme, app: editor, documents: "gdpr-*", region: eu-central-1}]
    registry: {release_after_seconds: 30, ttl_seconds: 15, heartbeat_seconds: 5}

Validation happens at start-up (config.py calls the validators below) and every error
names its key: this node's region must be in the map, a pin must name a known region,
and `REDIRECT:` + a base URL must fit the 123 bytes of a close reason.

The 4009 reason is `REDIRECT:<base URL>/<document name>` when that fits a close frame,
else `REDIRECT:<base URL>` alone (a long name: the client knows its document name);
/discovery always answers the full URL.

Pins: each of `tenant`, `app` and `documents` is a case-sensitive glob (fnmatch:
`*`, `?`, `[...]`), `*` when left out; the first pin that matches a document decides
its region.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from ..errors import (
    MAX_REASON_BYTES,
    ConfigError,
    InternalError,
    RegistryUnavailable,
    WrongRegion,
    WsServerError,
)
from ..support.validators import fraction_of, list_of, number, section, string

if TYPE_CHECKING:
    from ..documents.key import DocKey
    from ..settings import Config

REDIRECT_PREFIX = "REDIRECT:"
# The longest base URL a redirect reason can carry (114 bytes).
MAX_BASE_URL_BYTES = MAX_REASON_BYTES - len(REDIRECT_PREFIX)

PIN_FIELDS = ("tenant", "app", "documents", "region")
REGISTRY_DEFAULTS = {"release_after_seconds": 30.0, "ttl_seconds": 15.0}


# --- settings -----------------------------------------------------------------------


def validate_regions(key: str, value: Any) -> dict[str, str]:
    """Region name -> base URL (ws:// or wss://, no query or fragment, trailing `/`
    dropped, at most MAX_BASE_URL_BYTES bytes so that `REDIRECT:<url>` fits)."""
    if not isinstance(value, dict) or not value:
        raise ConfigError(key, "must be a mapping of region name -> base URL")
    regions = {}
    for name, url in value.items():
        path = f"{key}.{name}"
        if not isinstance(name, str) or not name:
            raise ConfigError(key, f"region names must be non-empty strings, not {name!r}")
        if not isinstance(url, str) or not (url.startswith("ws://") or url.startswith("wss://")):
            raise ConfigError(path, "must be a ws:// or wss:// base URL")
        if "?" in url or "#" in url:
            raise ConfigError(path, "must not have a query or fragment")
        url = url.rstrip("/")
        size = len(url.encode("utf-8"))
        if size > MAX_BASE_URL_BYTES:
            raise ConfigError(
                path,
                f"is {size} bytes; at most {MAX_BASE_URL_BYTES} keep "
                f"'{REDIRECT_PREFIX}<url>' within the {MAX_REASON_BYTES} bytes "
                f"of a close reason",
            )
        regions[name] = url
    return regions


_PIN = section(
    {field: string for field in PIN_FIELDS},
    defaults={"tenant": "*", "app": "*", "documents": "*"},
    required=("region",),
    description="a mapping {tenant, app, documents, region}",
    nullable=False,
)
_PINS = list_of(_PIN, "a list of {tenant, app, documents, region}")


def validate_pins(key: str, value: Any) -> list[dict[str, str]]:
    """A list of {tenant, app, documents, region}; globs default to `*`."""
    return _PINS(key, value) or []


_REGISTRY = fraction_of(
    section(
        {
            "release_after_seconds": number(0.0, what="a number of seconds"),
            "ttl_seconds": number(0.5, what="a number of seconds"),
            "heartbeat_seconds": number(0.05, what="a number of seconds"),
        },
        defaults=REGISTRY_DEFAULTS,
    ),
    "heartbeat_seconds",
    "ttl_seconds",
    1.0,
    "must be shorter than ttl_seconds (a third of it leaves room for two missed heartbeats)",
    strict=True,
)


def validate_registry(key: str, value: Any) -> dict[str, float]:
    """{release_after_seconds, ttl_seconds, heartbeat_seconds}, as floats.

    heartbeat_seconds defaults to a third of ttl_seconds and must be shorter than it.
    """
    result = _REGISTRY(key, value)
    result.setdefault("heartbeat_seconds", result["ttl_seconds"] / 3)
    return result


def check_region_map(values: dict[str, Any], env: Mapping[str, str]) -> None:
    """Cross-checks, once every setting is valid: WSSERVER_REGION, region, pins."""
    source = "region"
    if env.get("WSSERVER_REGION"):
        values["region"] = env["WSSERVER_REGION"]
        source = "WSSERVER_REGION"
    if values["region"] not in values["regions"]:
        raise ConfigError(
            source,
            f"{values['region']!r} is not in regions ({', '.join(sorted(values['regions']))})",
        )
    for i, pin in enumerate(values["pins"]):
        if pin["region"] not in values["regions"]:
            raise ConfigError(f"pins[{i}].region", f"{pin['region']!r} is not in regions")


# --- the map --------------------------------------------------------------------------


class RegionMap:
    """This node's region, every region's base URL, and the pins."""

    def __init__(
        self, region: str, regions: Mapping[str, str], pins: Iterable[dict[str, str]] = ()
    ) -> None:
        self.region = region
        self.regions = dict(regions)
        self.pins = list(pins)

    @classmethod
    def from_config(cls, config: Config) -> RegionMap:
        return cls(config.region, config.regions, config.pins)

    def pinned(self, key: DocKey) -> str | None:
        """The region `key` (a DocKey) is pinned to, or None."""
        for pin in self.pins:
            if (
                fnmatchcase(key.tenant, pin["tenant"])
                and fnmatchcase(key.app, pin["app"])
                and fnmatchcase(key.name, pin["documents"])
            ):
                return pin["region"]
        return None

    def url(self, region: str, name: str) -> str:
        """`<base URL of region>/<name>`; InternalError for a region this node does not
        know (nodes of different regions were given different maps)."""
        base = self.regions.get(region)
        if base is None:
            raise InternalError(f"document is live in unknown region {region!r}"[:100])
        return f"{base}/{name}"

    def redirect(self, region: str, name: str) -> WrongRegion:
        """The 4009 refusal that sends a client to `region`: `REDIRECT:<base>/<name>`,
        or `REDIRECT:<base>` when that would not fit a close reason (never a cut URL;
        config validation keeps every base URL within it)."""
        reason = REDIRECT_PREFIX + self.url(region, name)
        if len(reason.encode("utf-8")) > MAX_REASON_BYTES:
            reason = REDIRECT_PREFIX + self.regions[region]
        return WrongRegion(reason, base=self.regions[region], name=name)

    def moved(self, region: str | None, name: str) -> WsServerError:
        """The close for connections here to a document another region took: 4009 to
        `region` when this map knows it, else 1013 (retry: the registry will say)."""
        if region is not None and region in self.regions:
            return self.redirect(region, name)
        return RegistryUnavailable("document is moving, retry")
