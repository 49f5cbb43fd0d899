"""The house's rules, checked on the code itself (CONTRIBUTING.md, "The map").

Floors: a module imports only from the floors below its own, never upward, so the
package has no import circle between floors. The floors are declared once, as an
import-linter contract in setup.cfg; this test runs it.
"""

import ast
import re
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def modules():
    """Every module of the package, as a path relative to the repository."""
    for path in sorted((ROOT / "wsserver").rglob("*.py")):
        yield path.relative_to(ROOT).as_posix(), path


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


# --- the map, the sizes, the annotations (CONTRIBUTING.md, "The map" and "Style") ------


def map_entries(contributing):
    """{head: text} of the map's top-level entries: `support/`, `app.py`, `endpoint.py |
    loading.py`..., each with its description and the lines under it."""
    block = contributing.split("## The map", 1)[1].split("```", 2)[1]
    entries, head = {}, None
    for line in block.splitlines():
        if re.match(r"^  \S", line):
            head = line.split("   ", 1)[0].strip()
            entries[head] = line
        elif head is not None and line.startswith("   "):
            entries[head] += "\n" + line
    return entries


def unmapped(names, contributing):
    """The modules of `names` (wsserver/PKG/.../MODULE.py) the map does not name: a
    top-level module in an entry's head, a package's module by each part of its path
    (`registry/`, `base.py`) in its package's entry."""

    def says(text, word):
        return re.search(r"(?<![\w.])" + re.escape(word) + r"(?!\w)", text) is not None

    entries = map_entries(contributing)
    missing = []
    for name in names:
        parts = name.split("/")[1:]  # without "wsserver"
        if len(parts) == 1:
            found = parts[0] == "__init__.py" or any(says(head, parts[0]) for head in entries)
        else:
            entry = entries.get(parts[0] + "/", "")
            words = [part + "/" for part in parts[1:-1]]
            if parts[-1] != "__init__.py":
                words.append(parts[-1])
            found = bool(entry) and all(says(entry, word) for word in words)
        if not found:
            missing.append(name)
    return missing


def oversized(source, name):
    """What breaks the size rule in one module's `source`: the module itself over
    MAX_MODULE_LINES, every function, method or nested function over MAX_FUNCTION_LINES
    (from its `def` to its last line)."""
    found = []
    lines = len(source.splitlines())
    if lines > MAX_MODULE_LINES:
        found.append(f"{name}: {lines} lines")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                found.append(f"{name}:{node.lineno} {node.name}: {length} lines")
    return found


def unannotated(source, name):
    """The public functions and methods of one module (not nested in a function, not
    named `_private`, of public classes) with a parameter or the return unannotated
    (an `__init__` may leave out its return)."""
    found = []

    def visit(body, prefix):
        for node in body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                visit(node.body, f"{prefix}{node.name}.")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                dunder = node.name.startswith("__") and node.name.endswith("__")
                if node.name.startswith("_") and not dunder:
                    continue
                args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
                if prefix and args and args[0].arg in ("self", "cls"):
                    args = args[1:]
                args += [a for a in (node.args.vararg, node.args.kwarg) if a is not None]
                if node.name == "__init__" and not args:
                    continue
                missing = [a.arg for a in args if a.annotation is None]
                if node.returns is None and node.name != "__init__":
                    missing.append("return")
                if missing:
                    found.append(f"{name}:{node.lineno} {prefix}{node.name}: {missing}")

    visit(ast.parse(source).body, "")
    return found


def test_every_module_is_named_in_the_map():
    contributing = (ROOT / "CONTRIBUTING.md").read_text()
    assert unmapped([name for name, _ in modules()], contributing) == []
    # The rule bites: a module the map does not name, a name in the wrong package.
    assert unmapped(["wsserver/fanout/nowhere.py"], contributing) == ["wsserver/fanout/nowhere.py"]
    assert unmapped(["wsserver/support/markdown.py"], contributing) == [
        "wsserver/support/markdown.py"
    ]


def test_no_module_over_400_lines_and_no_function_over_60():
    found = [problem for name, path in modules() for problem in oversized(path.read_text(), name)]
    assert found == [], "split them (CONTRIBUTING.md, The map): " + "; ".join(found)
    # The rule bites, nested functions included.
    body = "\n".join(f"        x = {i}" for i in range(MAX_FUNCTION_LINES))  # inner: 61
    source = f"def outer():\n    def inner():\n{body}\n"
    assert [p.split(" ")[1] for p in oversized(source, "m")] == ["outer:", "inner:"]


def test_every_public_function_and_method_is_annotated():
    found = [problem for name, path in modules() for problem in unannotated(path.read_text(), name)]
    assert found == [], "annotate them (mypy checks what they say): " + "; ".join(found)
    source = "class A:\n    def f(self, x: int):\n        pass\n    def _g(self, y): pass\n"
    assert unannotated(source, "m") == ["m:2 A.f: ['return']"]
