"""The house's rules, checked on the code itself (CONTRIBUTING.md, "The map").

Floors: a module imports only from the floors below its own, never upward, so the
package has no import circle between floors. The floors are declared once, as an
import-linter contract in setup.cfg; this test runs it.
"""

import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def lint_imports(root=ROOT, env=None):
    """Run import-linter on the package under `root` with setup.cfg's contract."""
    binary = Path(sys.executable).parent / "lint-imports"
    return subprocess.run(
        [str(binary), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )


def test_every_module_imports_only_from_the_floors_below_it():
    result = lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout, result.stdout


def test_an_upward_import_breaks_the_floors(tmp_path):
    """The contract bites: a copy of the package where the codec (a low floor) imports
    the endpoint (a high one) is refused, naming both."""
    import shutil

    copy = tmp_path / "house"
    shutil.copytree(ROOT / "wsserver", copy / "wsserver")
    shutil.copy(ROOT / "setup.cfg", copy / "setup.cfg")
    codec = copy / "wsserver" / "protocol" / "codec.py"
    codec.write_text(codec.read_text() + "\nfrom ..endpoint import WebSocketEndpoint  # noqa\n")
    result = lint_imports(copy, env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"})
    assert result.returncode != 0, result.stdout
    assert "wsserver.protocol.codec -> wsserver.endpoint" in result.stdout, result.stdout


def test_a_process_holds_one_redis_pool_plus_its_blocking_readers(
    start_server, tmp_path, redis_url
):
    """Every Redis user of a process (the handshake rate, quotas, the region registry, the
    fan-out's commands, the admin board) shares one connection pool; only the readers
    that block by design have a connection of their own. Seen from Redis (`CLIENT LIST`)
    after each user has run: every connection of the server process carries the name of
    its pool, and there are three names."""
    import json
    import socket
    import urllib.request

    import redis as redis_lib
    import websocket
    from conftest import base_config, free_port, make_token

    admin = "admin-token-0123456789abcdef"
    port = free_port()
    regions = {"eu": f"ws://127.0.0.1:{port}", "us": f"ws://127.0.0.1:{free_port()}"}
    config = base_config(
        tmp_path,
        redis=redis_url,
        region="eu",
        regions=regions,  # two regions: the registry is Redis's
        admin={"token": admin},
        rate_limit={"handshakes_per_ip": "100/minute"},
    )
    server = start_server(config=config, port=port)
    ws = websocket.create_connection(f"{server.url}/pools?token={make_token()}", timeout=10)
    assert ws.recv_frame().data[:2] == b"\x00\x00"  # admitted: rate, quota, claim, fan-out
    request = urllib.request.Request(
        f"{server.http}/admin/api/documents", headers={"Authorization": f"Bearer {admin}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # the admin board
        assert any(d["name"] == "pools" for d in json.load(response)["documents"])
    ws.close()

    redis_port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    ours = {  # the server process's own connections to Redis, by local port
        int(line.split()[2].rsplit(":", 1)[1])
        for line in subprocess.run(
            ["ss", "-tnpH", "state", "established", "dst", f"127.0.0.1:{redis_port}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        if f"pid={server.proc.pid}," in line
    }
    listing = redis_lib.Redis.from_url(redis_url).client_list()
    names = {c["name"] for c in listing if int(c["addr"].rsplit(":", 1)[1]) in ours}
    base = f"wsserver:{socket.gethostname()}:{server.proc.pid}"
    # (the history's listener: a trash reaches every process's clients at once)
    assert ours and names == {
        base,
        f"{base}:fanout-reader",
        f"{base}:admin-board",
        f"{base}:history",
    }, names


GREENLET_COUNT = """
import gc, json, sys, threading
from gevent import monkey

monkey.patch_all()  # as `wsserver serve` and the gunicorn worker do, before anything
import gevent, greenlet
from wsserver.app import create_app, endpoint_of


def running():
    # Live greenlets of the process's hub, and its threads (a backend's worker thread
    # runs a hub of its own).
    hub = gevent.get_hub()
    return {
        g for g in gc.get_objects()
        if isinstance(g, greenlet.greenlet) and g.parent is hub and not g.dead
    } | {t.ident for t in threading.enumerate()}


before = running()
app = create_app(json.loads(sys.argv[1]))
gevent.sleep(0.3)  # every part's loops are up
started = running() - before
endpoint_of(app).shutdown(timeout=5)
gevent.sleep(0.5)  # a killed greenlet ends at its next switch, a thread at its next task
left = running() - before
print(json.dumps({"started": len(started), "left": [repr(getattr(g, "_run", g)) for g in left]}))
"""


def test_every_greenlet_started_is_stopped_at_shutdown(tmp_path, redis_url):
    """A process with every part that runs greenlets of its own (the endpoint's pinger
    and metrics, the fan-out, the region registry's heartbeat, the quotas' lease, the
    admin board, the hub watch) leaves none running once its shutdown returns. In a
    process patched as the servers are (Redis reads block the whole thread otherwise)."""
    import json

    from conftest import base_config, run_script

    regions = {"eu": "ws://127.0.0.1:1", "us": "ws://127.0.0.1:2"}  # the Redis registry
    config = base_config(
        tmp_path,
        redis=redis_url,
        region="eu",
        regions=regions,
        admin={"token": "admin-token-0123456789abcdef"},
        rate_limit={"handshakes_per_ip": "100/minute"},
    )
    counts = run_script(GREENLET_COUNT, json.dumps(config))
    assert counts["started"] >= 6, counts
    assert counts["left"] == [], counts
