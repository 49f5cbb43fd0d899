"""Which client a request comes from, and the key its handshake rate is counted under.

The client IP is the socket peer (`REMOTE_ADDR`) unless `trusted_proxies: N` says that
N proxies we run sit in front of the server, each appending the address it saw to
`X-Forwarded-For`. Then the client is the Nth address from the right: the one our
outermost proxy saw. Everything to its left was written by the client and is ignored,
so a forged header changes nothing; with N = 0 the header is never read. A header
with fewer than N addresses did not come through our proxies: the peer is used.

That is werkzeug's ProxyFix rule with `x_for=N` (and nothing else trusted: not the
forwarded host, scheme, port or prefix), so `trust_proxies` installs ProxyFix around
the whole app, WebSocket upgrades included: REMOTE_ADDR is the client for every part
(rate limits, quotas, logs, Flask's `request.remote_addr`); ProxyFix keeps the socket
peer in `environ["werkzeug.proxy_fix.orig"]`. What is ours on top: a port some proxies
append is dropped (`1.2.3.4:5678`, `[::1]:5678`), and the rate keys below.

Rate keys: an IPv4 address is its own key; an IPv6 client is keyed by its /64 (one
subscriber usually owns a whole /64 and could otherwise rotate addresses freely);
IPv4-mapped IPv6 (`::ffff:1.2.3.4`) is keyed as IPv4. `Forwarded` (RFC 7239) is not read.
"""

import ipaddress
from collections.abc import Callable
from typing import Any

from werkzeug.middleware.proxy_fix import ProxyFix

WSGIApp = Callable[[dict, Callable], Any]


def trust_proxies(wsgi_app: WSGIApp, trusted_proxies: int) -> WSGIApp:
    """`wsgi_app` seeing the client's address in REMOTE_ADDR when `trusted_proxies`
    (N > 0) proxies of ours append to X-Forwarded-For; unchanged for N = 0."""
    if trusted_proxies <= 0:
        return wsgi_app
    return ProxyFix(wsgi_app, x_for=trusted_proxies, x_proto=0, x_host=0, x_port=0, x_prefix=0)


def client_ip(environ: dict) -> str:
    """The client's address as text: REMOTE_ADDR (set by `trust_proxies` behind our
    proxies) without a port."""
    return _strip_port(environ.get("REMOTE_ADDR") or "-")


def _strip_port(address):
    """`1.2.3.4:5678` -> `1.2.3.4`; `[::1]:5678` -> `::1` (some proxies add the port)."""
    if address.startswith("["):
        end = address.find("]")
        return address[1:end] if end > 0 else address
    if address.count(":") == 1:
        return address.split(":", 1)[0]
    return address


def rate_key(ip: str) -> str:
    """The key a client's handshakes are counted under."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip  # not an address (a proxy wrote something else): count it as written
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return ip
