"""The production path as a new operator takes it: `requirements.txt` installed into a
fresh venv, the Procfile's command under gunicorn with the environment `app.json`
describes (its values and generated secrets, the add-ons' `DATABASE_URL` and
`REDIS_URL`, the platform's `PORT` and `WEB_CONCURRENCY`), and the defaults that must
never open a server (no fallback to config/dev.yaml, no public development secret off
loopback).

gunicorn and `wsserver serve` run as real processes on loopback ports; the provider
is the real y-websocket one (tests/node/converge.mjs); Postgres is the session's real
one, Redis a real redis-server (speaking TLS only for the app.json deploy).
"""

import configparser
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import redis as redis_lib
import websocket
from conftest import ROOT, base_config, free_port, make_token, run_node, wait_workers_answering

DEV_ENV = ("WSSERVER_CONFIG", "DEV_SECRET", "PORT", "PYTHONPATH", "WEB_CONCURRENCY")


def procfile_command():
    """The `web:` command of the Procfile, exactly as a platform runs it."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith("web:"):
            return line[len("web:") :].strip()
    raise AssertionError("Procfile has no web: process")


def clean_env(**env):
    """The environment without anything that would pick a config or a secret for us."""
    base = {k: v for k, v in os.environ.items() if k not in DEV_ENV}
    return dict(base, PYTHONUNBUFFERED="1", **env)


class Platform:
    """The Procfile's command run by a shell, as a Heroku-style platform runs it."""

    def __init__(self, tmp_path, env, bin_dir=None):
        """`bin_dir`: where gunicorn is installed (default: the test suite's venv)."""
        self.log_path = tmp_path / f"procfile-{time.monotonic_ns()}.log"
        bin_dir = bin_dir or Path(sys.executable).parent
        env = dict(env, PATH=f"{bin_dir}{os.pathsep}{env['PATH']}")
        self.port = int(env["PORT"])
        with open(self.log_path, "w") as log:
            # Its own session, so the shell, gunicorn's master and its worker are ended
            # together whatever state the test leaves them in.
            self.proc = subprocess.Popen(
                ["bash", "-c", f"exec {procfile_command()}"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self):
        return self.log_path.read_text()

    def outcome(self, timeout=30):
        """ "listening" once the port accepts, else the exit code."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return self.proc.returncode
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return "listening"
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"neither listening nor exited after {timeout}s:\n{self.log()}")

    def stop(self, timeout=30):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                raise
        return self.proc.returncode


@pytest.fixture
def platform(tmp_path):
    started = []

    def start(env, bin_dir=None):
        started.append(Platform(tmp_path, env, bin_dir))
        return started[-1]

    yield start
    for p in started:
        if p.proc.poll() is None:
            os.killpg(p.proc.pid, signal.SIGKILL)
            p.proc.wait()


# --- no development defaults on the production path --------------------------------


def test_gunicorn_without_wsserver_config_refuses_to_start(platform):
    p = platform(clean_env(PORT=str(free_port())))
    assert p.outcome() == 2, p.log()
    log = p.log()
    assert "wsserver: config: WSSERVER_CONFIG: is not set" in log
    assert "Traceback" not in log and "Booting worker" not in log, log


def test_gunicorn_refuses_the_public_development_secret(platform):
    p = platform(clean_env(PORT=str(free_port()), WSSERVER_CONFIG="config/dev.yaml"))
    assert p.outcome() == 2, p.log()
    assert (
        "wsserver: config: auth.tenants.dev.keys[0].secret: is the public development "
        "secret" in p.log()
    )
    assert "Traceback" not in p.log()


def _dev_checkout(tmp_path):
    """A directory laid out like the repository root for `wsserver serve` without
    --config: config/dev.yaml (the real one) and room for its data/."""
    root = tmp_path / "checkout"
    (root / "config").mkdir(parents=True)
    shutil.copy(ROOT / "config" / "dev.yaml", root / "config" / "dev.yaml")
    return root


def test_wsserver_serve_uses_the_development_config_on_loopback_only(tmp_path):
    root = _dev_checkout(tmp_path)
    cli = [sys.executable, "-m", "wsserver.cli"]
    public = subprocess.run(
        cli + ["serve", "--host", "0.0.0.0", "--port", "0"],
        cwd=root,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert public.returncode == 2, public.stdout + public.stderr
    assert "auth.tenants.dev.keys[0].secret: is the public development secret" in public.stderr
    assert "listening" not in public.stdout

    # On loopback (the default host) it serves, and `wsserver token` signs for it.
    token = subprocess.run(
        cli + ["token", "--tenant", "dev", "--app", "editor"],
        cwd=root,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()
    proc = subprocess.Popen(
        cli + ["serve", "--port", "0"],
        cwd=root,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        match = re.search(r"listening on ws://127\.0\.0\.1:(\d+)", line)
        assert match, line
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{match.group(1)}/my-doc",
            subprotocols=["access_token", token],
            timeout=10,
        )
        assert ws.recv()[:2] == b"\x00\x00"  # sync step 1: accepted
        ws.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


# --- requirements.txt and the Procfile in a fresh venv -------------------------------


def _name(requirement):
    return re.split(r"[\s<>=!~\[;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_requirements_pin_every_install_requirement_within_its_range():
    from packaging.requirements import Requirement

    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    wanted = [
        Requirement(line)
        for line in setup["options"]["install_requires"].split("\n")
        if line.strip()
    ]
    pinned = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"requirements.txt: {line!r} is not pinned with =="
            pinned[_name(name)] = version
    for requirement in wanted:
        name = _name(requirement.name)
        assert name in pinned, f"requirements.txt does not pin {requirement}"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"requirements.txt pins {name}=={pinned[name]}, outside setup.cfg's {requirement}"
        )
    assert (ROOT / ".python-version").read_text().strip() == "3.11"


def _wheelhouse():
    """Wheels of every pin of requirements.txt, built once per version of the file and
    kept in the suite's .venv (pip's cache alone still spends seconds on index lookups)."""
    requirements = (ROOT / "requirements.txt").read_bytes()
    tag = hashlib.sha256(requirements + sys.version.encode()).hexdigest()[:16]
    house = Path(sys.prefix) / "deploy-wheels" / tag
    if not house.is_dir():
        building = house.with_name(f"{tag}.{os.getpid()}.tmp")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
                str(ROOT / "requirements.txt"),
                "-w",
                str(building),
            ],
            check=True,
            timeout=600,
        )
        try:
            building.rename(house)
        except OSError:  # another run of the suite on this .venv built it meanwhile
            if not house.is_dir():
                raise
            shutil.rmtree(building)
    return house


@pytest.fixture(scope="module")
def deployed_bin(tmp_path_factory):
    """bin/ of a fresh venv holding only `pip install -r requirements.txt`: the
    platform's install, offline from the wheelhouse (the
    venv's own pip is not needed: the suite's pip installs into it)."""
    venv = tmp_path_factory.mktemp("deploy") / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-index",
            "--find-links",
            str(_wheelhouse()),
            "-r",
            str(ROOT / "requirements.txt"),
        ],
        check=True,
        timeout=600,
    )
    return venv / "bin"


ADDON_VARIABLES = {"DATABASE_URL", "REDIS_URL"}  # set by app.json's add-ons
PLATFORM_VARIABLES = {"PORT", "WEB_CONCURRENCY"}  # set by the platform for each dyno


def app_json():
    return json.loads((ROOT / "app.json").read_text())


def test_app_json_gives_every_variable_the_production_config_reads():
    manifest = app_json()
    plans = sorted(addon["plan"].split(":")[0] for addon in manifest["addons"])
    assert plans == ["heroku-postgresql", "heroku-redis"]
    read = set(re.findall(r"\$\{(\w+)", (ROOT / "config" / "production.yaml").read_text()))
    described = set(manifest["env"])
    assert read - ADDON_VARIABLES <= described, read - ADDON_VARIABLES - described
    assert described - read == {"WSSERVER_CONFIG"}, described - read
    assert manifest["env"]["WSSERVER_CONFIG"]["value"] == "config/production.yaml"
    for name in ("WSSERVER_SECRET", "WSSERVER_ADMIN_TOKEN", "WSSERVER_METRICS_TOKEN"):
        assert manifest["env"][name]["generator"] == "secret", name


def app_json_env(database_url, redis_url, public_url):
    """The environment app.json gives the app, as Heroku builds it: each `value`, a
    generated secret for each `generator: secret` (64 hex digits, as Heroku makes
    them), what the operator is asked for (`required` without a value: the public
    URL), and the add-ons' URLs."""
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url}
    for name, entry in app_json()["env"].items():
        if "value" in entry:
            env[name] = entry["value"]
        elif entry.get("generator") == "secret":
            env[name] = secrets.token_hex(32)
        else:
            assert entry.get("required") and name == "WSSERVER_PUBLIC_URL", (name, entry)
            env[name] = public_url
    return env


def stored_rows(database_url, room):
    import psycopg

    with psycopg.connect(database_url) as conn:
        return (
            conn.execute(
                "SELECT count(*) FROM wsserver_updates WHERE name = %s", (room,)
            ).fetchone()[0]
            + conn.execute(
                "SELECT count(*) FROM wsserver_snapshots WHERE name = %s", (room,)
            ).fetchone()[0]
        )


@pytest.mark.long
def test_the_app_json_deploy_serves_from_a_fresh_venv_and_keeps_documents_in_postgres(
    tmp_path, platform, deployed_bin, pg_url, tls_redis
):
    """Heroku's path: a buildpack install (requirements.txt only), app.json's env with
    the add-ons' URLs (Postgres as `postgres://` with a password; Redis as `rediss://`
    with a certificate no system trusts, as Heroku Redis), the postdeploy script, then
    the Procfile with two workers; a redeploy keeps the document."""
    port = free_port()
    database_url = pg_url.replace("postgresql://postgres@", "postgres://postgres:pg-pass@", 1)
    env = clean_env(
        PORT=str(port),
        WEB_CONCURRENCY="2",
        **app_json_env(database_url, tls_redis.url, f"ws://127.0.0.1:{port}"),
    )
    # app.json's postdeploy, with the fresh venv's python (the buildpack's PATH).
    postdeploy = subprocess.run(
        ["bash", "-c", app_json()["scripts"]["postdeploy"]],
        cwd=ROOT,
        env=dict(env, PATH=f"{deployed_bin}{os.pathsep}{env['PATH']}"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert postdeploy.returncode == 0, postdeploy.stdout + postdeploy.stderr
    assert "# storage postgres://postgres:***@127.0.0.1" in postdeploy.stdout
    assert f"# redis rediss://127.0.0.1:{tls_redis.port}/0?ssl_cert_reqs=none: answers" in (
        postdeploy.stdout
    )
    assert "runs 2 workers ($WEB_CONCURRENCY) listening on 0.0.0.0:" in postdeploy.stdout
    assert "pg-pass" not in postdeploy.stdout + postdeploy.stderr

    p = platform(env, bin_dir=deployed_bin)
    assert p.outcome() == "listening", p.log()
    command = (Path("/proc") / str(p.proc.pid) / "cmdline").read_bytes().split(b"\0")
    assert command[1] == str(deployed_bin / "gunicorn").encode(), command
    deadline = time.monotonic() + 20
    while "listening on ws://0.0.0.0" not in p.log():
        assert time.monotonic() < deadline, p.log()
        time.sleep(0.05)
    startup = next(line for line in p.log().splitlines() if "listening on ws://" in line)
    assert (
        f"listening on ws://0.0.0.0:{port} (storage postgres://postgres:***@127.0.0.1:" in startup
    ), startup
    assert f"redis rediss://127.0.0.1:{tls_redis.port}/0?ssl_cert_reqs=none" in startup
    assert "region main, workers 2)" in startup and "pg-pass" not in p.log()
    # The master writes that line once it listens, before its workers have imported the
    # app (seconds on a loaded box; meanwhile connections wait in the listen backlog).
    # The providers below time their sync (5 s): they start once both workers serve.
    wait_workers_answering(f"http://127.0.0.1:{port}", 2, alive=lambda: p.proc.poll() is None)

    room = f"deploy-{time.monotonic_ns()}"
    token = make_token(tenant="main", app="editor", kid="main", secret=env["WSSERVER_SECRET"])
    try:
        result = run_node(
            "converge.mjs",
            json.dumps(
                {"url": f"ws://127.0.0.1:{port}", "token": token, "room": room, "rounds": 3}
            ),
        )
    except AssertionError as e:
        raise AssertionError(f"{e}\nthe server's log:\n{p.log()[-6000:]}") from None
    assert result["a"] == result["b"] == result["late"]
    assert "<alpha>" in result["a"]["text"] and "[B3]" in result["a"]["text"]
    assert stored_rows(pg_url, room) > 0
    # Redis over TLS: the quota leases of both workers are there (a worker writes its
    # lease once it has booted: the providers may all have been served by the other).
    client = redis_lib.Redis.from_url(tls_redis.url, ssl_cert_reqs="none", decode_responses=True)
    workers = re.findall(r"Booting worker with pid: (\d+)", p.log())
    deadline = time.monotonic() + 15
    try:
        while True:
            instances = client.zrange("wsserver:{quota}:instances", 0, -1)
            leased = [w for w in workers if any(f":{w}:" in i for i in instances)]
            if leased == workers or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        client.close()
    assert len(workers) == 2 and leased == workers, (workers, instances, p.log()[-4000:])
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
        health = json.load(response)
    assert (health["status"], health["redis"]) == ("ok", {"limits": "ok"}), health
    assert p.stop() == 0, p.log()
    # The workers' pub/sub listeners (history, console) closed under their reads by the
    # stop: not a failure to log.
    assert "listening failed" not in p.log(), p.log()[-4000:]

    # A redeploy: a new dyno (nothing on disk survives) serves the document from Postgres.
    again = platform(env, bin_dir=deployed_bin)
    assert again.outcome() == "listening", again.log()
    wait_workers_answering(f"http://127.0.0.1:{port}", 2, alive=lambda: again.proc.poll() is None)
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/documents/{room}?format=json",
        headers={"Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.load(response)["text"] == result["a"]["text"]
    assert again.stop() == 0, again.log()


# --- /healthz and Redis ----------------------------------------------------------------


def healthz(server):
    with urllib.request.urlopen(server.http + "/healthz", timeout=10) as response:
        assert response.status == 200  # the node still serves what it hosts
        return json.load(response)


def test_healthz_says_when_redis_is_unreachable(tmp_path, start_server, own_redis):
    port = free_port()
    # Two regions, so the registry is in Redis; a handshake rate, so the limits are too.
    server = start_server(
        config=base_config(
            tmp_path,
            region="eu",
            regions={"eu": f"ws://127.0.0.1:{port}", "us": "ws://127.0.0.1:9"},
            redis=own_redis.url,
            rate_limit={"handshakes_per_ip": "100/minute"},
        ),
        port=port,
    )
    health = healthz(server)
    assert (health["status"], health["redis"]) == ("ok", {"registry": "ok", "limits": "ok"})

    own_redis.proc.send_signal(signal.SIGSTOP)  # a stalled Redis: connections hang
    health = healthz(server)
    assert health["status"] == "degraded"
    assert set(health["redis"]) == {"registry", "limits"}
    assert all(state.startswith("unreachable: ") for state in health["redis"].values()), health
    own_redis.proc.send_signal(signal.SIGCONT)
    deadline = time.monotonic() + 15
    while healthz(server)["status"] != "ok":
        assert time.monotonic() < deadline, healthz(server)
        time.sleep(0.1)

    own_redis.stop()  # gone: connections refused
    health = healthz(server)
    assert health["status"] == "degraded"
    assert health["redis"]["registry"].startswith("unreachable: ConnectionError"), health


def test_healthz_has_no_redis_part_without_redis(tmp_path):
    from wsserver.app import create_app

    app = create_app(base_config(tmp_path))
    try:
        body = app.test_client().get("/healthz").get_json()
        assert body["status"] == "ok" and "redis" not in body
    finally:
        app.extensions["wsserver"].shutdown(timeout=1)
