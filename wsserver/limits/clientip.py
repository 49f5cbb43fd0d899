"""Which client a request comes from, and the key its handshake rate is counted under.

The client IP is the socket peer (`REMOTE_ADDR`) unless `trusted_proxies: N` says that
N proxies we run sit in front of the server, each appending the address it saw to
`X-Forwarded-For`. Then the client is the Nth address from the right: the one our
outermost proxy saw. Everything to its left was written by the client and is ignored,
so a forged header changes nothing; with N = 0 the header is never read. A header
with fewer than N addresses did not come through our proxies: the peer is used.

Rate keys: an IPv4 address is its own key; an IPv6 client is keyed by its /64 (one
subscriber usually owns a whole /64 and could otherwise rotate addresses freely);
IPv4-mapped IPv6 (`::ffff:1.2.3.4`) is keyed as IPv4. `Forwarded` (RFC 7239) is not read.
"""

import ipaddress


def client_ip(environ, trusted_proxies=0):
    """The client's address as text (see the module docstring)."""
    peer = environ.get("REMOTE_ADDR") or "-"
    if trusted_proxies <= 0:
        return peer
    header = environ.get("HTTP_X_FORWARDED_FOR")
    if not header:
        return peer
    hops = [h.strip() for h in header.split(",")]
    hops = [h for h in hops if h]
    if len(hops) < trusted_proxies:
        return peer
    return _strip_port(hops[-trusted_proxies])


def _strip_port(address):
    """`1.2.3.4:5678` -> `1.2.3.4`; `[::1]:5678` -> `::1` (some proxies add the port)."""
    if address.startswith("["):
        end = address.find("]")
        return address[1:end] if end > 0 else address
    if address.count(":") == 1:
        return address.split(":", 1)[0]
    return address


def rate_key(ip):
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
