"""Shared fixtures: real server processes, tokens, and the Node provider runner.

Servers run as `wsserver serve` processes on a free port (the tests read the port from its
"listening on" line), each with its own config and storage in the test's tmp_path, so tests
see what a user's process would do. They are forked from a process that has already
imported the server (tests/forkserver.py: about 0.05 CPU-seconds a start instead of 0.6);
`ServerProcess(command=...)` or `WSSERVER_TEST_FORK=0` runs the real command line instead.
"""

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import jwt
import pytest
import yaml
from forkserver import fork_server

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = Path(__file__).resolve().parent / "node"
CLI = [sys.executable, "-m", "wsserver.cli"]
SECRET = "test-secret-0123456789abcdef0123456789"
OTHER_SECRET = "other-secret-0123456789abcdef012345678"
AUDIENCE = "WireSocket.API"
SCOPE = "WireSocket.API"


def pytest_collection_modifyitems(items):
    """Longest first: soak tests (a fixed wall time, little CPU), then `long` ones (5 s or
    more), then the rest in file order. With xdist handing tests out two at a time
    (`--maxschedchunk 2` in setup.cfg) the long ones start at once on every worker and
    the short ones fill in around them, instead of the suite ending on a long one."""
    items.sort(
        key=lambda item: (
            item.get_closest_marker("soak") is None,
            item.get_closest_marker("long") is None,
        )
    )


# The process heartbeat and TTL in tests (support/liveness.py; shipped: 2 s / 10 s): a
# killed process is declared gone within 2 s instead of 10. The shipped default is
# run as shipped by test_fanout.py's kill -9 test (`process=SHIPPED_PROCESS`).
TEST_PROCESS = {"heartbeat_seconds": 0.25, "ttl_seconds": 2.0}
SHIPPED_PROCESS = None  # the `process` setting's defaults


def base_config(tmp_path, **overrides):
    config = {
        "storage": f"sqlite:///{tmp_path}/wsserver.sqlite3",
        # The test's directory outlives the server: gunicorn accepts the SQLite file.
        "storage_persistent": True,
        "auth": {
            "audience": AUDIENCE,
            "scope": SCOPE,
            "tenants": {
                "acme": {
                    "keys": [{"kid": "k1", "alg": "HS256", "secret": SECRET}],
                    "apps": {
                        "editor": {},
                        "notes": {},
                        "locked": {"allowed_origins": ["https://editor.acme.com"]},
                    },
                },
                "globex": {
                    "keys": [{"kid": "g1", "alg": "HS256", "secret": OTHER_SECRET}],
                    "apps": {"editor": {}},
                },
            },
        },
        "log_level": "info",
        # Refused handshakes answer at once in tests (the shipped 2 s delay is waited out
        # by test_refusals.py's default-delay test alone).
        "refusal_delay": 0,
        "process": dict(TEST_PROCESS),
    }
    config.update(overrides)
    return config


def make_token(
    tenant="acme", app="editor", sub=None, secret=SECRET, kid="k1", alg="HS256", ttl=600, **claims
):
    now = int(time.time())
    payload = {
        "tenantId": tenant,
        "appId": app,
        "aud": AUDIENCE,
        "scope": SCOPE,
        "iat": now,
        "exp": now + ttl,
    }
    if sub:
        payload["sub"] = sub
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    headers = {"kid": kid} if kid else {}
    return jwt.encode(payload, secret, algorithm=alg, headers=headers)


class ServerProcess:
    """A `wsserver serve` subprocess; `url` is ws://127.0.0.1:PORT."""

    def __init__(self, config_path, env=None, port=0, args=(), command=None):
        self.config_path = config_path
        self.env = env
        self.port = port
        self.args = list(args)  # more `wsserver serve` options
        # What runs `wsserver` (e.g. [python, "-c", a script patching something first]);
        # by default a child of this test process's fork server (tests/forkserver.py).
        self.command = command
        self.proc = None
        self.output = []
        self._drainer = None

    def start(self, timeout=20):
        env = dict(os.environ, PYTHONUNBUFFERED="1", **(self.env or {}))
        env.pop("PORT", None)
        args = ["serve", "--config", str(self.config_path), "--port", str(self.port), *self.args]
        forks = fork_server() if self.command is None else None
        if forks is not None and forks.can_spawn(env):
            self.proc = forks.spawn(args, env, ROOT)
        else:
            self.proc = subprocess.Popen(
                [*(self.command or CLI), *args],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        deadline = time.time() + timeout
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.output.append(line)
            match = re.search(r"listening on ws://[^:]+:(\d+)", line)
            if match:
                self.port = int(match.group(1))
                # Keep draining output so the server never blocks on a full pipe.
                self._drainer = threading.Thread(target=self._drain, daemon=True)
                self._drainer.start()
                return self
        raise RuntimeError("server did not start:\n" + "".join(self.output))

    def _drain(self):
        for line in self.proc.stdout:
            self.output.append(line)

    @property
    def url(self):
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http(self):
        return f"http://127.0.0.1:{self.port}"

    def log(self):
        """What the server wrote so far; once it has exited, all it wrote."""
        if self._drainer is not None and self.proc.poll() is not None:
            self._drainer.join(10)  # it ends at the pipe's end
        return "".join(self.output)

    def wait_log(self, text, timeout=5):
        """The log once it holds `text` (a reader thread takes the server's output, so a
        line the server wrote just now may not be in `log()` yet); fails after
        `timeout` seconds without it."""
        deadline = time.monotonic() + timeout
        while text not in (log := self.log()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in the server's log:\n{log}")
            time.sleep(0.02)
        return log

    def stop(self, sig=signal.SIGTERM, timeout=20):
        """Send `sig` and wait; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def restart(self):
        """Start again on the same port, same config and storage."""
        if self._drainer is not None:  # the last lines of the stopped process first
            self._drainer.join(10)
        self.output = []
        return self.start()


@pytest.fixture
def start_server(tmp_path):
    """Factory: start_server(config=None, env=None, port=0, **config_overrides) -> a running
    ServerProcess (port 0: any free port; a fixed one when the config must name it)."""
    servers = []

    def start(config=None, env=None, port=0, **overrides):
        config = config or base_config(tmp_path, **overrides)
        path = tmp_path / f"config-{len(servers)}.yaml"
        path.write_text(yaml.safe_dump(config))
        server = ServerProcess(path, env=env, port=port).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        if server.proc and server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


@pytest.fixture
def server(start_server):
    return start_server()


class AppNode:
    """`create_app(config)` in the test process, driven through Flask's test client: for
    plain-HTTP behaviour (/discovery, CORS, /healthz, 426) that needs no socket. It is
    the same app `wsserver serve` runs (same factory, routes, gates, registry, storage);
    requests come from 127.0.0.1 as from a local client. `url` is its region's base URL."""

    def __init__(self, config):
        from wsserver.app import create_app, endpoint_of

        self.app = create_app(config)
        self.endpoint = endpoint_of(self.app)
        self.client = self.app.test_client()
        regions = config.get("regions")
        self.region = config.get("region", "local")
        self.url = regions[self.region] if regions else "ws://127.0.0.1:1234"

    def request(self, path, method="GET", headers=None):
        """(status, headers, parsed JSON body or None), as `http()` helpers return."""
        response = self.client.open(path, method=method, headers=headers or {})
        body = response.get_data()
        return response.status_code, response.headers, (json.loads(body) if body else None)

    def close(self):
        self.endpoint.shutdown(timeout=5)


@pytest.fixture
def start_app(tmp_path):
    """Factory: start_app(config=None, **config_overrides) -> an AppNode, shut down after
    the test."""
    apps = []

    def start(config=None, **overrides):
        app = AppNode(config or base_config(tmp_path, **overrides))
        apps.append(app)
        return app

    yield start
    for app in apps:
        app.close()


def run_node(script, *args, timeout=120):
    """Run tests/node/SCRIPT with args; return its last stdout line parsed as JSON."""
    proc = subprocess.run(
        ["node", str(NODE_DIR / script), *map(str, args)],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        raise AssertionError(
            f"node {script} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return json.loads(lines[-1])


class NodeProcess:
    """A Node script running in the background; the test reads its JSON lines as they come
    (and, with `stdin`, sends it JSON lines with `send`)."""

    def __init__(self, script, spec, stdin=False):
        self.script = script
        self.proc = subprocess.Popen(
            ["node", str(NODE_DIR / script), json.dumps(spec)],
            cwd=NODE_DIR,
            stdin=subprocess.PIPE if stdin else None,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines = queue.Queue()
        self.stdout, self.stderr = [], []
        self._readers = [
            threading.Thread(target=self._read, args=(pipe, sink, queued), daemon=True)
            for pipe, sink, queued in (
                (self.proc.stdout, self.stdout, True),
                (self.proc.stderr, self.stderr, False),
            )
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream, sink, queued):
        for line in stream:
            sink.append(line)
            if queued and line.strip():
                self.lines.put(line)
        if queued:
            self.lines.put(None)

    def _fail(self, what):
        raise AssertionError(
            f"node {self.script}: {what}\nstdout:\n{''.join(self.stdout)}\n"
            f"stderr:\n{''.join(self.stderr)}"
        )

    def send(self, command):
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def wait_phase(self, phase, timeout):
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                self._fail(f"no {phase!r} line within {timeout}s")
            if line is None:
                self._fail(f"exited before {phase!r}")
            message = json.loads(line)
            if message.get("phase") == phase:
                return message
            if "error" in message:
                self._fail(f"failed before {phase!r}")

    def result(self, timeout):
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self._fail(f"still running after {timeout}s")
        for reader in self._readers:  # they end at the pipes' end: every line is read
            reader.join(10)
        lines = [line for line in self.stdout if line.strip()]
        if self.proc.returncode != 0 or not lines:
            self._fail(f"exit code {self.proc.returncode}")
        return json.loads(lines[-1])

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def wait_workers_answering(http_url, workers, timeout=30, alive=lambda: True):
    """Wait until `workers` distinct processes (gunicorn's workers behind one port) have
    answered /healthz, each with its pid: gunicorn logs "Booting worker" at the fork,
    before the worker has loaded the app. Asks 4 at a time, so that not one worker takes
    every request; fails after `timeout` seconds or once `alive()` is False."""
    pids = set()
    deadline = time.monotonic() + timeout

    def ask():
        try:
            with urllib.request.urlopen(f"{http_url}/healthz", timeout=5) as response:
                pids.add(json.load(response)["pid"])
        except OSError:
            return  # this worker is not serving yet: the next round asks again

    while len(pids) < workers:
        if time.monotonic() > deadline or not alive():
            raise AssertionError(f"{len(pids)} of {workers} workers answered at {http_url}")
        threads = [threading.Thread(target=ask) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    return pids


def run_script(script, *args, timeout=60):
    """Run Python `script` (e.g. one that patches with gevent's monkey first, as the
    servers do) in a process of its own with `args`; the JSON of its last output line."""
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisProcess:
    """A redis-server on a free loopback port, in its own directory (no persistence)."""

    def __init__(self, workdir):
        import shutil

        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: run the suite with scripts/test")
        self.port = free_port()
        self.workdir = workdir
        self.binary = binary
        self.proc = None

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self):
        return [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
        ]

    def start(self):
        import socket

        self.proc = subprocess.Popen(
            self.command(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.proc.poll() is not None:
                break  # e.g. the port was taken between free_port() and the bind
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            except OSError:
                time.sleep(0.05)
                continue
            self._check_own()
            return self
        self.proc.kill()
        pytest.fail(f"redis-server did not start on port {self.port}")

    def _check_own(self):
        """The server on our port is the one we started (not another worker's)."""
        client = self.client()
        try:
            pid = client.info("server")["process_id"]
        finally:
            client.close()
        if pid != self.proc.pid:
            self.proc.kill()
            pytest.fail(f"port {self.port} answers redis-server pid {pid}, not ours")

    def client(self, **options):
        """A redis-py client of this server."""
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=5, **options)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a stopped one would not terminate
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A real redis-server on loopback for the whole session (scripts/test installs it)."""
    server = RedisProcess(tmp_path_factory.mktemp("redis")).start()
    yield server.url
    server.stop()


@pytest.fixture
def own_redis(tmp_path_factory):
    """A redis-server of this test's own, which it may stop, freeze or restart."""
    server = RedisProcess(tmp_path_factory.mktemp("own-redis")).start()
    yield server
    server.stop()


class TlsRedisProcess(RedisProcess):
    """A redis-server speaking TLS only (as Heroku Redis does), with a certificate for
    127.0.0.1 signed by a CA made here with openssl; `ca` is the CA's certificate,
    which no system trusts (like a provider's self-signed one)."""

    def __init__(self, workdir):
        super().__init__(workdir)
        self.ca = workdir / "ca.crt"
        key, csr, cert = workdir / "server.key", workdir / "server.csr", workdir / "server.crt"
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        run = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True)  # noqa: E731
        run("req", "-x509", *ec, "-keyout", str(workdir / "ca.key"), "-out", str(self.ca),
            "-days", "2", "-subj", "/CN=wsserver test CA")  # fmt: skip
        run("req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
        (workdir / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        run("x509", "-req", "-in", str(csr), "-CA", str(self.ca), "-CAkey",
            str(workdir / "ca.key"), "-CAcreateserial", "-out", str(cert), "-days", "2",
            "-extfile", str(workdir / "san.cnf"))  # fmt: skip
        self.tls_args = [
            "--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(cert),
            "--tls-key-file", str(key), "--tls-ca-cert-file", str(self.ca),
            "--tls-auth-clients", "no",
        ]  # fmt: skip

    @property
    def url(self):
        return f"rediss://127.0.0.1:{self.port}/0"

    def client(self, **options):
        return super().client(ssl_ca_certs=str(self.ca), **options)

    def command(self):
        return [*super().command()[:1], *self.tls_args, *super().command()[3:]]


@pytest.fixture(scope="session")
def tls_redis(tmp_path_factory):
    """A real redis-server speaking TLS only, for the session (its `url` is rediss://,
    its `ca` the certificate of the CA that signed its own)."""
    server = TlsRedisProcess(tmp_path_factory.mktemp("tls-redis")).start()
    yield server
    server.stop()


class PostgresServer:
    """A throwaway Postgres on loopback: initdb'd into a temp dir, run as the `postgres`
    user when the tests run as root (Postgres refuses root), else as the current user."""

    def __init__(self):
        import glob
        import tempfile

        bins = sorted(
            glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4])
        )
        if not bins:
            pytest.fail("postgresql is not installed: run the suite with scripts/test")
        self.bin = os.path.dirname(bins[-1])
        self.dir = tempfile.mkdtemp(prefix="wsserver-pg-")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.proc = None
        self.databases = 0
        self._as = {}
        if os.geteuid() == 0:
            import pwd

            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            # The server itself is the child (no runuser in between), so signals reach it.
            self._as = dict(user=user.pw_uid, group=user.pw_gid, extra_groups=[], cwd=self.dir)

    def _run(self, *args):
        return subprocess.run(args, check=True, capture_output=True, **self._as)

    def init(self):
        self._run(
            f"{self.bin}/initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync"
        )
        return self

    def start(self):
        self.proc = subprocess.Popen(
            [
                f"{self.bin}/postgres",
                "-D",
                self.data,
                "-p",
                str(self.port),
                "-k",
                self.dir,
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=300",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **self._as,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            ready = subprocess.run(
                [
                    f"{self.bin}/pg_isready",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-U",
                    "postgres",
                ],
                capture_output=True,
            )
            if ready.returncode == 0:
                self._check_own()
                return self
            if self.proc.poll() is not None:
                break  # e.g. the port was taken between free_port() and the bind
            time.sleep(0.1)
        pytest.fail(f"postgres did not start on port {self.port}")

    def _check_own(self):
        """The server on our port is the one we started (not another worker's): it serves
        our data directory."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True, connect_timeout=5) as conn:
            (directory,) = conn.execute("SHOW data_directory").fetchone()
        if os.path.realpath(directory) != os.path.realpath(self.data):
            self.proc.kill()
            pytest.fail(f"port {self.port} answers the postgres of {directory}, not ours")

    def stop(self):
        """Fast shutdown (SIGINT): clients are disconnected."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(30)

    def pause(self):
        """SIGSTOP the server and its backends: the database hangs, sockets stay open."""
        subprocess.run(["pkill", "-STOP", "-P", str(self.proc.pid)], check=False)
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)
        subprocess.run(["pkill", "-CONT", "-P", str(self.proc.pid)], check=False)

    def url(self, database="postgres"):
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self):
        import psycopg

        self.databases += 1
        name = f"t{os.getpid()}_{self.databases}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)


@pytest.fixture(scope="session")
def postgres_server():
    """A real Postgres for the whole session (scripts/test installs `postgresql`)."""
    server = PostgresServer().init().start()
    yield server
    server.stop()
    import shutil

    shutil.rmtree(server.dir, ignore_errors=True)


@pytest.fixture
def pg_url(postgres_server):
    """The URL of a new, empty database of the session's Postgres."""
    return postgres_server.create_database()


@pytest.fixture
def own_postgres():
    """A Postgres of this test alone, so the test can stop it."""
    server = PostgresServer().init().start()
    yield server
    server.stop()
    import shutil

    shutil.rmtree(server.dir, ignore_errors=True)


# --- Chromium: one browser per worker's run of browser tests, a fresh context per page -----
CHROMIUM = "/usr/bin/chromium"  # Debian's; Playwright's own download is not used
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
_CHROMIUM = {}  # the worker's Playwright driver and Chromium, while its tests use them


def _launched_chromium():
    browser = _CHROMIUM.get("browser")
    if browser is None or not browser.is_connected():
        _close_chromium()
        from playwright.sync_api import sync_playwright

        playwright = _CHROMIUM["playwright"] = sync_playwright().start()
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        _CHROMIUM["browser"] = browser
    return browser


def _close_chromium():
    browser, playwright = _CHROMIUM.pop("browser", None), _CHROMIUM.pop("playwright", None)
    if browser is not None and browser.is_connected():
        browser.close()
    if playwright is not None:
        playwright.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """Chromium stays up while the worker's next test uses it too (xdist runs a test
    once it knows the next), and no longer: idle, Chromium and Playwright's driver
    spend about a launch's CPU (~0.5 s) every two minutes."""
    try:
        return (yield)
    finally:
        if nextitem is None or "chromium" not in nextitem.fixturenames:
            _close_chromium()


@pytest.fixture(scope="session")
def chromium():
    """() -> the worker's Chromium, launched on first use (again after a test that did
    not use it, or if it went away): a launch costs about half a CPU-second more than
    a fresh context."""
    yield _launched_chromium
    _close_chromium()


class BrowserPages:
    """A test's share of the worker's Chromium: `new_page(**options)` is a page in a
    context of its own (its own cookies and storage; `options` as for Playwright's
    `Browser.new_page`, e.g. viewport); `close()` closes every context it made (the
    fixture calls it after the test; a test may call it sooner)."""

    def __init__(self, browser):
        self.browser = browser
        self.contexts = []

    def new_page(self, **options):
        context = self.browser.new_context(**options)
        self.contexts.append(context)
        return context.new_page()

    def close(self):
        while self.contexts:
            self.contexts.pop().close()


@pytest.fixture
def browser(chromium):
    """Pages for this test (BrowserPages), closed with their contexts after it."""
    pages = BrowserPages(chromium())
    yield pages
    pages.close()


@pytest.fixture
def page(browser):
    """One page in a fresh context, for a test that needs one."""
    return browser.new_page()
