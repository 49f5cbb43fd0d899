"""Token redaction: the request fields an access log prints go through the same scrubber
as every log line (wsserver/logs.redact; its cases are in tests/test_ops.py)."""

import logging

from wsserver.handshake.handshake import scrub_token
from wsserver.logs import TextFormatter
from wsserver.scrub import redact

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl"


def test_access_log_fields_and_log_lines_use_the_same_rule():
    environ = {
        "QUERY_STRING": f"token={JWT}&v=2",
        "RAW_URI": f"/doc?token={JWT}&v=2",
        "REQUEST_URI": f"/doc?v=2&token={JWT}",
        "PATH_INFO": "/doc",
    }
    scrub_token(environ)
    assert environ == {
        "QUERY_STRING": "token=[redacted]&v=2",
        "RAW_URI": "/doc?token=[redacted]&v=2",
        "REQUEST_URI": "/doc?v=2&token=[redacted]",
        "PATH_INFO": "/doc",
    }
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "query %s", (f"token={JWT}",), None)
    assert TextFormatter().format(record).endswith("x: query token=[redacted]")


def test_redaction_ignores_case():
    """Headers and query keys arrive in any case (HTTP header names are case-insensitive,
    and a client may send `?TOKEN=`); the tokens here are opaque, not JWTs, so only the
    keyword match can catch them."""
    secret = "opaque-secret-value-42"
    for line in [
        f"authorization: bearer {secret}",
        f"AUTHORIZATION: BEARER {secret}",
        f"GET /doc?TOKEN={secret}&v=2",
        f"GET /doc?Access_Token={secret}",
        f"sec-websocket-protocol: ACCESS_TOKEN, {secret}",
    ]:
        redacted = redact(line)
        assert secret not in redacted and "[redacted]" in redacted, redacted
