"""What an operator reads: secrets that cannot be weak, every config problem in one boot
(each naming its key and the variable that filled it), the production config's storage
from DATABASE_URL, `check-config --connect`, the start-up line, access and audit logs,
and the close-code metric of a deleted document.

Servers are real `wsserver serve` and gunicorn processes; Postgres and Redis are real.
"""

import json
import os
import subprocess
import sys
import threading

import pytest
import yaml
from conftest import ROOT, base_config, free_port, make_token
from test_ops import (
    ADMIN_TOKEN,
    Gunicorn,
    closes_once_closed,
    doc_name,
    eventually,
    http,
    providers,
    scrape,
    value,
)

from wsserver.app import load_settings
from wsserver.cli import main as cli
from wsserver.errors import ConfigError
from wsserver.handshake.tenants import DEVELOPMENT_SECRET
from wsserver.settings import Config

__all__ = ["providers"]  # the fixture, from test_ops


def write(tmp_path, mapping, name="config.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(mapping))
    return path


def load_problems(mapping, env, tmp_path, **kwargs):
    """Every problem load_settings reports for `mapping` written to a file, with `env`
    added to the environment: {key: message}."""
    path = write(tmp_path, mapping)
    old = dict(os.environ)
    os.environ.update(env)
    try:
        with pytest.raises(ConfigError) as info:
            load_settings(config_path=str(path), **kwargs)
    finally:
        os.environ.clear()
        os.environ.update(old)
    return {p.key: p.message for p in info.value.problems}


def one_key(secret, alg="HS256"):
    return {
        "tenants": {
            "acme": {"keys": [{"kid": "k", "alg": alg, "secret": secret}], "apps": {"e": {}}}
        }
    }


# --- secrets ---------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hmac_keys_shorter_than_32_bytes_are_refused_naming_key_and_variable(tmp_path, alg):
    found = load_problems(
        {"auth": one_key("${TEST_JWT_SECRET}", alg)}, {"TEST_JWT_SECRET": "x" * 31}, tmp_path
    )
    assert found == {
        "auth.tenants.acme.keys[0].secret": "is too short: 31 bytes, at least 32 are needed, "
        f"for {alg} (RFC 7518 §3.2) (from $TEST_JWT_SECRET)"
    }
    # A one-character secret, written in the file itself: no variable to name.
    assert load_problems({"auth": one_key("k", alg)}, {}, tmp_path) == {
        "auth.tenants.acme.keys[0].secret": "is too short: 1 bytes, at least 32 are needed, "
        f"for {alg} (RFC 7518 §3.2)"
    }
    assert load_settings({"auth": one_key("x" * 32, alg)})[1].tenants["acme"].keys["k"]
    # Bytes, not characters: 16 two-byte characters are 32 bytes.
    assert load_settings({"auth": one_key("é" * 16, alg)})


def test_webhook_admin_and_metrics_secrets_must_be_set_and_long(tmp_path):
    auth = one_key("s" * 32)
    auth["tenants"]["acme"]["apps"]["e"] = {
        "webhooks": [{"url": "https://hooks.example", "secret": "${TEST_HOOK_SECRET}"}]
    }
    mapping = {
        "auth": auth,
        "admin": {"token": "${TEST_ADMIN_TOKEN}"},
        "metrics": {"token": "${TEST_METRICS_TOKEN}"},
    }
    env = {"TEST_HOOK_SECRET": "", "TEST_ADMIN_TOKEN": "short", "TEST_METRICS_TOKEN": "m" * 15}
    assert load_problems(mapping, env, tmp_path) == {
        "auth.tenants.acme.apps.e.webhooks[0].secret": "is required (empty or unset): 32 bytes "
        "at least (from $TEST_HOOK_SECRET)",
        "admin.token": "is too short: 5 bytes, at least 16 are needed (from $TEST_ADMIN_TOKEN)",
        "metrics.token": "is too short: 15 bytes, at least 16 are needed "
        "(from $TEST_METRICS_TOKEN)",
    }
    env = {
        "TEST_HOOK_SECRET": "h" * 31,
        "TEST_ADMIN_TOKEN": "a" * 16,
        "TEST_METRICS_TOKEN": "m" * 16,
    }
    assert load_problems(mapping, env, tmp_path) == {
        "auth.tenants.acme.apps.e.webhooks[0].secret": "is too short: 31 bytes, at least 32 "
        "are needed, as an HMAC-SHA256 key (from $TEST_HOOK_SECRET)"
    }


def test_check_config_refuses_an_empty_webhook_secret(tmp_path, capsys):
    """It used to pass (webhooks were only parsed by create_app) and print ********."""
    auth = one_key("s" * 32)
    auth["tenants"]["acme"]["apps"]["e"] = {
        "webhooks": [{"url": "https://h.example", "secret": ""}]
    }
    path = write(tmp_path, base_config(tmp_path, auth=auth))
    assert cli(["check-config", "--config", str(path)]) == 1
    assert "webhooks[0].secret: is required (empty or unset)" in capsys.readouterr().err


def test_the_development_secret_error_names_the_variable_that_filled_it(tmp_path):
    env = {
        "WSSERVER_SECRET": DEVELOPMENT_SECRET,
        "WSSERVER_PUBLIC_URL": "wss://sync.example.com",
        "DATABASE_URL": "postgres://u:p@db.example.com/x",
        "REDIS_URL": "redis://r.example.com",
        "WSSERVER_ADMIN_TOKEN": "a" * 32,
        "WSSERVER_METRICS_TOKEN": "m" * 32,
    }
    found = load_problems(
        yaml.safe_load((ROOT / "config/production.yaml").read_text()), env, tmp_path
    )
    message = found["auth.tenants.main.keys[0].secret"]
    assert message.startswith("is the public development secret: set your own secret")
    assert message.endswith("(from $WSSERVER_SECRET)") and "DEV_SECRET" not in message
    # config/dev.yaml's default: the variable that would replace it.
    dev = Config.load(str(ROOT / "config/dev.yaml"), env={})
    with pytest.raises(ConfigError) as info:
        load_settings(dev)
    assert info.value.message.endswith("($DEV_SECRET is unset: its default was used)")


# --- every problem in one boot -------------------------------------------------------------


BROKEN = {
    "storage": "${TEST_DATABASE_URL}",
    "port": "eighty",
    "max_mesage_size": 1000,
    "admin": {"token": "${TEST_ADMIN_TOKEN}"},
    "log_format": "json",
    "auth": {
        "tenants": {
            "acme": {
                "keys": [{"kid": "k", "alg": "HS256", "secret": "${TEST_JWT_SECRET}"}],
                "apps": {
                    "e": {"plan": "gold"},
                    "f": {"webhooks": [{"url": "ftp://x", "secret": "s" * 32}]},
                },
            },
            "globex": {"keys": [{"kid": "g", "alg": "HS999", "secret": "s" * 32}], "apps": {}},
        }
    },
}
BROKEN_ENV = {"TEST_ADMIN_TOKEN": "tiny", "TEST_JWT_SECRET": "short"}
BROKEN_KEYS = {
    "storage": "environment variable TEST_DATABASE_URL is not set",
    "port": "must be an integer, not 'eighty'",
    "max_mesage_size": "unknown setting (known here: ",
    "admin.token": "is too short: 4 bytes, at least 16 are needed (from $TEST_ADMIN_TOKEN)",
    "auth.tenants.acme.keys[0].secret": "is too short: 5 bytes, at least 32 are needed, for "
    "HS256 (RFC 7518 §3.2) (from $TEST_JWT_SECRET)",
    "auth.tenants.acme.apps.e.plan": "unknown plan 'gold'",
    "auth.tenants.acme.apps.f.webhooks[0].url": "must be an http:// or https:// URL",
    "auth.tenants.globex.keys[0].alg": "must be one of ",
    "auth.tenants.globex.apps": "needs at least one app",
}


def test_every_problem_is_reported_at_once_naming_key_and_variable(tmp_path):
    found = load_problems(BROKEN, BROKEN_ENV, tmp_path)
    assert set(found) == set(BROKEN_KEYS), found
    for key, start in BROKEN_KEYS.items():
        assert found[key].startswith(start), (key, found[key])


def test_a_failed_serve_boot_prints_every_problem_as_json_lines(tmp_path):
    path = write(tmp_path, BROKEN)
    env = {k: v for k, v in os.environ.items() if k not in ("PORT", "TEST_DATABASE_URL")}
    proc = subprocess.run(
        [sys.executable, "-m", "wsserver", "serve", "--config", str(path), "--port", "0"],
        cwd=ROOT,
        env=dict(env, **BROKEN_ENV),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2 and "listening" not in proc.stdout
    lines = [json.loads(line) for line in proc.stderr.splitlines()]  # every line is JSON
    reported = [line["message"] for line in lines if line["level"] == "ERROR"]
    for key, start in BROKEN_KEYS.items():
        assert any(m.startswith(f"wsserver: config: {key}: {start}") for m in reported), key
    assert len(reported) == len(BROKEN_KEYS), reported


def test_gunicorn_reports_every_problem_in_json_and_refuses_a_sqlite_file(tmp_path):
    from test_deploy import Platform, clean_env

    mapping = dict(BROKEN, storage="sqlite:///data/wsserver.sqlite3")
    path = write(tmp_path, mapping)
    p = Platform(
        tmp_path, clean_env(PORT=str(free_port()), WSSERVER_CONFIG=str(path), **BROKEN_ENV)
    )
    assert p.outcome() == 2, p.log()
    lines = [json.loads(line) for line in p.log().splitlines()]  # every line is JSON
    reported = [line["message"] for line in lines if line["level"] == "ERROR"]
    assert any(
        m.startswith(
            "wsserver: config: storage: is a SQLite file (sqlite:///data/wsserver.sqlite3) on "
            "this machine's disk"
        )
        and "set storage_persistent: true if the file is on a persistent volume" in m
        for m in reported
    ), reported
    assert len(reported) == len(BROKEN_KEYS), reported  # storage's own, instead of the variable's
    assert "Booting worker" not in p.log()

    # A worker that fails to boot: gunicorn prints the error raw; a JSON line here.
    unusable = base_config(tmp_path, log_format="json", storage="sqlite:////proc/no/such.db")
    p = Platform(
        tmp_path,
        clean_env(PORT=str(free_port()), WSSERVER_CONFIG=str(write(tmp_path, unusable, "w.yaml"))),
    )
    assert p.proc.wait(30) == 3, p.log()  # gunicorn's "worker failed to boot"
    lines = [json.loads(line) for line in p.log().splitlines()]  # every line is JSON
    assert any(
        x["logger"] == "wsserver.stderr" and "No such file or directory" in x["message"]
        for x in lines
    ), p.log()


def test_production_config_takes_its_storage_from_database_url():
    production = str(ROOT / "config/production.yaml")
    env = {
        "WSSERVER_SECRET": "s" * 32,
        "WSSERVER_PUBLIC_URL": "wss://sync.example.com",
        "REDIS_URL": "rediss://:pw@r.example.com:6380",
        "WSSERVER_ADMIN_TOKEN": "a" * 32,
        "WSSERVER_METRICS_TOKEN": "m" * 32,
    }
    for url in ("postgres://u:p@db.example.com:5432/x", "postgresql://u:p@db/x?sslmode=require"):
        config = Config.load(production, env=dict(env, DATABASE_URL=url))
        assert config.storage == url
    assert config.redis == "rediss://:pw@r.example.com:6380"  # verified by default
    heroku = Config.load(
        production,
        env=dict(env, DATABASE_URL=url, WSSERVER_REDIS_VERIFY_CERTIFICATE="false"),
    )
    assert heroku.redis == "rediss://:pw@r.example.com:6380?ssl_cert_reqs=none"
    with pytest.raises(ConfigError) as info:
        Config.load(production, env=env)
    assert str(info.value) == "config: storage: environment variable DATABASE_URL is not set"


# --- check-config --connect ----------------------------------------------------------------


def test_check_config_connect_checks_postgres_and_redis(tmp_path, capsys, pg_url, redis_url):
    path = write(tmp_path, base_config(tmp_path, storage=pg_url, redis=redis_url))
    os.environ["WEB_CONCURRENCY"] = "3"
    try:
        assert cli(["check-config", "--config", str(path), "--connect"]) == 0
    finally:
        del os.environ["WEB_CONCURRENCY"]
    out = capsys.readouterr().out
    assert f"# storage {pg_url}: answers (no wsserver tables yet" in out
    assert f"# redis {redis_url}: answers" in out
    assert (
        "# the Procfile (gunicorn) runs 3 workers ($WEB_CONCURRENCY) listening on 0.0.0.0:" in out
    )

    # A database a later wsserver wrote: a start would refuse it, so the check does.
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE wsserver_schema (version integer NOT NULL)")
        conn.execute("INSERT INTO wsserver_schema VALUES (99)")
    assert cli(["check-config", "--config", str(path), "--connect"]) == 1
    assert "the database's schema is version 99, newer than" in capsys.readouterr().err

    # A schema locked by another session (a migration under way): the check's queries
    # give up after storage_lock_timeout instead of waiting for ever.
    path = write(
        tmp_path,
        base_config(tmp_path, storage=pg_url, redis=redis_url, storage_lock_timeout=0.5),
    )
    with psycopg.connect(pg_url) as locker:
        locker.execute("LOCK TABLE wsserver_schema IN ACCESS EXCLUSIVE MODE")
        outcome = []
        check = threading.Thread(
            target=lambda: outcome.append(cli(["check-config", "--config", str(path), "--connect"]))
        )
        check.start()
        check.join(5)
        assert outcome == [1]  # before: waited for the lock, for ever
        locker.rollback()  # however the check went: let it end
    check.join(10)
    assert outcome == [1]
    assert "does not answer: LockNotAvailable" in capsys.readouterr().err

    dead = f"postgresql://postgres:secret-pw@127.0.0.1:{free_port()}/x?connect_timeout=1"
    path = write(
        tmp_path, base_config(tmp_path, storage=dead, redis=f"redis://127.0.0.1:{free_port()}")
    )
    assert cli(["check-config", "--config", str(path), "--connect"]) == 1
    err = capsys.readouterr().err
    assert (
        "wsserver: storage: postgresql://postgres:***@127.0.0.1:" in err
        and "does not answer" in err
    )
    assert "wsserver: redis: redis://127.0.0.1:" in err and "secret-pw" not in err


# --- the start-up line and access logs -----------------------------------------------------


def test_serve_start_up_line_and_access_log_in_json(start_server, tmp_path):
    server = start_server(
        config=base_config(
            tmp_path,
            storage=f"sqlite:///{tmp_path}/w.sqlite3",
            log_format="json",
            access_log=True,
        )
    )
    token = make_token()
    status, _, _ = http("GET", f"{server.http}/v1/documents/doc-1?format=json&token={token}")
    assert status == 404
    import websocket

    ws = websocket.create_connection(
        f"{server.url}/doc-2?token={token}", header={"X-Forwarded-For": "203.0.113.9"}
    )
    ws.recv()
    ws.close()
    lines = eventually(
        lambda: (
            lambda ls: (
                ls if sum(1 for x in ls if x.get("logger") == "wsserver.access") >= 2 else None
            )
        )([json.loads(line) for line in server.log().splitlines() if line.startswith("{")]),
        what="two access lines",
    )
    assert all(line.startswith("{") for line in server.log().splitlines()), server.log()
    start = next(x for x in lines if "listening on" in x["message"])
    assert {k: start[k] for k in ("storage", "redis", "region", "workers")} == {
        "storage": f"sqlite:///{tmp_path}/w.sqlite3",
        "redis": None,
        "region": "local",
        "workers": 1,
    }
    assert start["listen"] == server.url and start["version"]
    access = [x for x in lines if x["logger"] == "wsserver.access"]
    get, upgrade = access[0], access[1]
    assert (get["method"], get["path"], get["status"], get["ip"]) == (
        "GET",
        "/v1/documents/doc-1?format=json&token=[redacted]",
        404,
        "127.0.0.1",
    )
    assert (upgrade["path"], upgrade["status"]) == ("/doc-2?token=[redacted]", 101)
    assert upgrade["duration"] >= 0 and token not in server.log()


def test_gunicorn_access_logfile_and_start_up_line(tmp_path, monkeypatch, redis_url):
    """gunicorn's own switch (`--access-logfile -`, here through GUNICORN_CMD_ARGS as a
    platform sets it) writes our lines, JSON in JSON mode; the master writes the
    start-up line once, with the Redis password masked."""
    monkeypatch.setenv("GUNICORN_CMD_ARGS", "--access-logfile -")
    path = write(tmp_path, base_config(tmp_path, log_format="json", redis=redis_url))
    server = Gunicorn(path, workers=2)
    try:
        assert http("GET", f"{server.http}/healthz?token=abc")[0] == 200
        lines = eventually(
            lambda: (
                lambda ls: (
                    ls if any(x.get("path") == "/healthz?token=[redacted]" for x in ls) else None
                )
            )([json.loads(x) for x in (server.log() + "".join(server.out)).splitlines()]),
            what="the access line",
        )
        (line,) = [x for x in lines if x.get("path") == "/healthz?token=[redacted]"]
        assert (line["method"], line["status"], line["ip"]) == ("GET", 200, "127.0.0.1")
        (start,) = [x for x in lines if "listening on" in x["message"]]
        assert start["workers"] == 2 and start["redis"] == redis_url
        assert start["listen"] == f"ws://127.0.0.1:{server.port}"
    finally:
        server.kill()


# --- audit lines, the 4404 label, the console page -------------------------------------------


def test_admin_actions_are_audited_and_4404_is_labelled(start_server, providers, tmp_path):
    server = start_server(admin={"token": ADMIN_TOKEN}, log_format="json")
    room = doc_name("audit")
    p = providers(server.url, room, ["alice"])
    p.insert(0, "hello")
    api = f"{server.http}/admin/api/documents"
    assert http("GET", f"{api}/acme/editor/{room}", token=ADMIN_TOKEN)[0] == 200
    assert http("DELETE", f"{api}/acme/editor/{room}", token=ADMIN_TOKEN)[0] == 200
    closes_once_closed(p, 0)  # the close, not a quit that overtook it
    assert p.quit()["closes"][0] == [{"code": 4404, "reason": "document deleted"}]
    audit = eventually(
        lambda: (lambda ls: ls if len(ls) >= 2 else None)(
            [
                json.loads(x)
                for x in server.log().splitlines()
                if x.startswith("{") and '"wsserver.audit"' in x
            ]
        ),
        what="two audit lines",
    )
    assert [(a["action"], a["tenant"], a["app"], a["doc"], a["ip"]) for a in audit] == [
        ("view", "acme", "editor", room, "127.0.0.1"),
        ("delete", "acme", "editor", room, "127.0.0.1"),
    ]
    assert audit[1]["connections_closed"] == 1
    assert audit[1]["message"] == (
        f"admin delete acme/editor/{room} from 127.0.0.1 by admin connections_closed=1"
    )
    assert (audit[1]["admin"], audit[1]["role"]) == ("admin", "operator")
    # Counters reach /metrics at the endpoint's next flush (once a second).
    samples = eventually(
        lambda: (lambda s: s if value(s, "wsserver_closes_total", code="4404") else None)(
            scrape(server.http)
        ),
        what="the 4404 counted",
    )
    assert value(samples, "wsserver_closes_total", code="4404") == 1
    assert value(samples, "wsserver_closes_total", code="other") == 0


def test_the_console_page_is_read_once(tmp_path, monkeypatch):
    from wsserver.app import create_app
    from wsserver.http import admin

    app = create_app(base_config(tmp_path, admin={"token": ADMIN_TOKEN}))
    try:
        monkeypatch.setattr(admin, "PAGE", tmp_path / "gone.html")  # no disk read from now on
        for _ in range(2):
            response = app.test_client().get("/admin")
            assert response.status_code == 200 and b"<html" in response.data.lower()
    finally:
        app.extensions["wsserver"].shutdown(timeout=1)


def test_the_production_start_up_line_masks_passwords():
    from wsserver.app import startup_fields

    config = Config.from_mapping(
        {
            "auth": one_key("s" * 32),
            "storage": "postgres://user:pg-secret@db.example.com:5432/x",
            "redis": "rediss://:redis-secret@r.example.com:6380",
            "redis_verify_certificate": False,
        },
        env={},
    )
    fields = startup_fields(config, 3)
    assert fields["storage"] == "postgres://user:***@db.example.com:5432/x"
    assert fields["redis"] == "rediss://:***@r.example.com:6380?ssl_cert_reqs=none"
    assert (fields["workers"], fields["region"]) == (3, "local")
