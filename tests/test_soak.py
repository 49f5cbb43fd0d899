"""Soak: what only shows after a fixed stretch of wall time.

These tests wait out real timers of the real provider (nothing to shorten: the timers are
the client's, not ours). They are marked `soak`, which conftest.py schedules first, so
under pytest-xdist their wait overlaps the rest of the suite instead of ending it.
"""

import uuid

import pytest
import yaml
from conftest import NodeProcess, ServerProcess, base_config, make_token

QUIET_SECONDS = 47  # > 45 s: y-websocket v3 reconnects after 30 s of silence, v4 after 45 s


@pytest.mark.soak
def test_quiet_provider_stays_connected(tmp_path):
    """One provider on a document nobody edits stays on one socket for 47 s: its own
    awareness renewal (every 15 s), echoed by the server, is all that arrives besides the
    server's pings (default ping_interval 30 s). Its own server, so nothing else touches
    the document."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(base_config(tmp_path)))
    server = ServerProcess(path).start()
    node = NodeProcess(
        "quiet.mjs",
        {
            "url": server.url,
            "token": make_token(),
            "room": f"quiet-{uuid.uuid4().hex[:10]}",
            "durationMs": QUIET_SECONDS * 1000,
        },
    )
    try:
        r = node.result(QUIET_SECONDS + 40)
    finally:
        node.kill()
        server.stop()
    assert r["elapsedMs"] >= QUIET_SECONDS * 1000
    assert r["closes"] == [], r
    assert r["statuses"] == ["connecting", "connected"], r
    assert r["sockets"] == 1 and r["sameSocket"] and r["connected"] and r["synced"], r
    assert r["pings"] >= 1, "the server never pinged (ping_interval 30 s)"
