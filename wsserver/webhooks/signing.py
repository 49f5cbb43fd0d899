"""The webhook signature: HMAC-SHA256 with the hook's secret of "<timestamp>.<raw body>".

    X-Wsserver-Timestamp: <unix seconds>
    X-Wsserver-Signature: sha256=<hex digest>

The timestamp is signed with the body, so a receiver checks both who sent it (the
secret) and how old it is (replays): `verify` is what a receiver does, in Python.
"""

import hashlib
import hmac
import time

TIMESTAMP_HEADER = "X-Wsserver-Timestamp"
SIGNATURE_HEADER = "X-Wsserver-Signature"
PREFIX = "sha256="


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """The X-Wsserver-Signature value of `body` (bytes) sent at `timestamp` (int)."""
    mac = hmac.new(secret, str(timestamp).encode("ascii") + b"." + body, hashlib.sha256)
    return PREFIX + mac.hexdigest()


def headers(secret: bytes, body: bytes, now: float | None = None) -> dict[str, str]:
    """The two signature headers for sending `body` now."""
    timestamp = int(time.time() if now is None else now)
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: signature(secret, timestamp, body)}


def verify(
    secret: bytes,
    body: bytes,
    timestamp_header: str | None,
    signature_header: str | None,
    max_age: float = 300,
    now: float | None = None,
) -> bool:
    """True when the signature is the secret's and the timestamp is at most `max_age`
    seconds away from now."""
    if timestamp_header is None:
        return False
    try:
        timestamp = int(timestamp_header)
    except (TypeError, ValueError):
        return False
    now = time.time() if now is None else now
    if abs(now - timestamp) > max_age or not isinstance(signature_header, str):
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), signature_header)
