"""Configuration (wsserver/config.py): env expansion, validation, defaults, and the CLI
refusing to start on a bad file."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from wsserver.app import load_settings
from wsserver.envsubst import expand_env
from wsserver.errors import ConfigError
from wsserver.settings import Config
from wsserver.settings.listen import listen_address

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024


def auth(secret="s" * 32):
    return {
        "tenants": {
            "acme": {
                "keys": [{"kid": "k1", "alg": "HS256", "secret": secret}],
                "apps": {"editor": {}},
            }
        }
    }


def load(mapping, env=None):
    return Config.from_mapping(mapping, env=env or {})


def error_key(mapping, env=None):
    with pytest.raises(ConfigError) as info:
        load(mapping, env)
    assert str(info.value).startswith(f"config: {info.value.key}: ")
    return info.value.key


def test_defaults():
    c = load({"auth": auth()})
    assert c.region == "local"
    assert c.regions == {"local": "ws://127.0.0.1:1234"}
    assert c.storage == "sqlite:///data/wsserver.sqlite3"
    assert c.storage_sync == "normal"
    assert c.host == "127.0.0.1"
    assert c.port == 1234
    assert c.max_message_size == 16 * MIB
    assert c.max_pending_bytes == 64 * MIB
    assert c.ping_interval == 30.0
    assert c.unload_after == 10.0
    assert c.compact_after_updates == 500
    assert c.compact_after_bytes == 4 * MIB
    assert c.redis is None
    assert c.log_level == "info"
    assert c.auth == auth()
    assert c.raw["port"] == 1234


def test_env_expansion():
    mapping = {
        "storage": "sqlite:///${DATA_DIR}/db.sqlite3",
        "auth": auth("${ACME_SECRET}"),
        "host": "${HOST:-0.0.0.0}",
        "log_level": "${LEVEL:-info}",
    }
    c = load(
        mapping, {"DATA_DIR": "/var/lib/ws", "ACME_SECRET": "from-env-secret", "LEVEL": "debug"}
    )
    assert c.storage == "sqlite:////var/lib/ws/db.sqlite3"
    assert c.auth["tenants"]["acme"]["keys"][0]["secret"] == "from-env-secret"
    assert c.host == "0.0.0.0"  # default used
    assert c.log_level == "debug"  # set value wins over the default


def test_env_expansion_details():
    env = {"A": "x", "EMPTY": ""}
    assert expand_env("${A}-${A}", env) == "x-x"
    assert expand_env("${EMPTY:-fallback}", env) == ""  # set, even if empty
    assert expand_env("${NOPE:-}", env) == ""
    assert expand_env("${NOPE:-a b:c}", env) == "a b:c"
    assert expand_env("$A and {A} and $${A}", env) == "$A and {A} and $x"
    assert expand_env({"k": ["${A}", 3, None, True]}, env) == {"k": ["x", 3, None, True]}
    # expansion happens once: a value holding ${...} is not expanded again
    assert expand_env("${B}", {"B": "${A}"}) == "${A}"


@pytest.mark.parametrize(
    "mapping,key,var",
    [
        ({"auth": auth("${ACME_SECRET}")}, "auth.tenants.acme.keys[0].secret", "ACME_SECRET"),
        ({"auth": auth(), "storage": "sqlite:///${DATA_DIR}/x"}, "storage", "DATA_DIR"),
        (
            {"auth": auth(), "regions": {"local": "ws://a", "eu": "${EU_URL}"}},
            "regions.eu",
            "EU_URL",
        ),
    ],
)
def test_missing_env_var_names_the_key(mapping, key, var):
    with pytest.raises(ConfigError) as info:
        load(mapping)
    assert info.value.key == key
    assert f"environment variable {var} is not set" in str(info.value)


def test_unknown_top_level_key_is_refused():
    assert error_key({"auth": auth(), "max_mesage_size": 1000}) == "max_mesage_size"


@pytest.mark.parametrize(
    "mapping,key",
    [
        ({}, "auth"),
        ({"auth": "yes"}, "auth"),
        ({"auth": auth(), "port": "80"}, "port"),
        ({"auth": auth(), "port": 70000}, "port"),
        ({"auth": auth(), "port": True}, "port"),
        ({"auth": auth(), "max_message_size": 10}, "max_message_size"),
        ({"auth": auth(), "storage": "mysql://x"}, "storage"),
        ({"auth": auth(), "storage": "sqlite:///"}, "storage"),
        ({"auth": auth(), "storage_sync": "off"}, "storage_sync"),
        ({"auth": auth(), "ping_interval": 0}, "ping_interval"),
        ({"auth": auth(), "regions": {"local": "http://x"}}, "regions.local"),
        ({"auth": auth(), "redis": "http://localhost"}, "redis"),
        ({"auth": auth(), "log_level": "verbose"}, "log_level"),
        ({"auth": auth(), "region": "eu"}, "region"),
        ({"auth": auth(), "region": "eu", "regions": {"us": "wss://us.example"}}, "region"),
    ],
)
def test_invalid_values_name_the_key(mapping, key):
    assert error_key(mapping) == key


def test_region_in_regions_is_accepted():
    c = load(
        {
            "auth": auth(),
            "region": "eu",
            "regions": {"eu": "wss://eu.example", "us": "wss://us.example"},
        }
    )
    assert c.region == "eu"


@pytest.mark.parametrize(
    "mapping, env",
    [
        ({}, {}),
        ({"port": 9000, "host": "0.0.0.0"}, {}),
        ({"port": 9000}, {"PORT": "4321"}),
        ({"port": 9000}, {"PORT": ""}),
        ({"host": "${BIND:-127.0.0.2}", "port": 7000}, {}),
        ({"host": "${BIND:-127.0.0.2}"}, {"BIND": "::1", "PORT": "5000"}),
    ],
)
def test_serve_takes_the_address_the_whole_config_has(tmp_path, mapping, env):
    """settings/listen.py reads `host` and `port` before the rest (wsserver serve binds
    first): the same file, `${VAR}`s and `$PORT` must give what Config.load gives."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"auth": auth(), **mapping}))
    config = Config.load(str(path), env)
    assert listen_address(str(path), env=env) == (config.host, config.port)
    assert listen_address(str(path), None, "10.0.0.1", 81, env) == ("10.0.0.1", 81)


@pytest.mark.parametrize(
    "mapping, env, key",
    [
        ({"port": 70000}, {}, "port"),
        ({"port": 9000}, {"PORT": "http"}, "PORT"),
        ({"host": 7}, {}, "host"),
        ({"host": "${NOPE}"}, {}, "host"),
        ({"port": "${P}"}, {"P": "7000"}, "port"),  # a string: $PORT is the variable
    ],
)
def test_an_address_the_whole_config_refuses_is_refused_early_too(tmp_path, mapping, env, key):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"auth": auth(), **mapping}))
    with pytest.raises(ConfigError):
        Config.load(str(path), env)
    with pytest.raises(ConfigError) as early:
        listen_address(str(path), env=env)
    assert early.value.key == key


def test_top_level_must_be_a_mapping():
    assert error_key(["auth"]) == "config"


def test_port_env_override():
    assert load({"auth": auth(), "port": 9000}, {"PORT": "4321"}).port == 4321
    assert load({"auth": auth()}, {"PORT": "5000"}).port == 5000
    assert load({"auth": auth(), "port": 9000}, {"PORT": ""}).port == 9000
    assert error_key({"auth": auth()}, {"PORT": "http"}) == "PORT"
    assert error_key({"auth": auth()}, {"PORT": "99999"}) == "PORT"


def test_load_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"auth": auth("${S}"), "port": 4000}))
    c = Config.load(str(path), env={"S": "file-secret"})
    assert c.port == 4000
    assert c.auth["tenants"]["acme"]["keys"][0]["secret"] == "file-secret"
    # WSSERVER_CONFIG is used when no path is given
    assert Config.load(None, env={"S": "x", "WSSERVER_CONFIG": str(path)}).port == 4000


def test_load_file_errors(tmp_path):
    with pytest.raises(ConfigError) as info:
        Config.load(str(tmp_path / "missing.yaml"), env={})
    assert info.value.key == "config"
    assert "missing.yaml" in str(info.value)
    bad = tmp_path / "bad.yaml"
    bad.write_text("auth: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        Config.load(str(bad), env={})
    assert info.value.key == "config"
    assert "not valid YAML" in str(info.value)
    latin = tmp_path / "latin1.yaml"
    latin.write_bytes("host: caf\u00e9\n".encode("latin-1"))  # a problem, not a traceback
    with pytest.raises(ConfigError) as info:
        Config.load(str(latin), env={})
    assert info.value.key == "config"
    assert "latin1.yaml is not UTF-8" in str(info.value)


def test_dev_config_loads():
    c = Config.load(str(ROOT / "config" / "dev.yaml"), env={})
    assert c.auth["tenants"]


def _tenant(**overrides):
    tenant = {
        "keys": [{"kid": "k1", "alg": "HS256", "secret": "s" * 32}],
        "apps": {"editor": {"allowed_origins": ["https://editor.acme.com"]}},
    }
    tenant.update(overrides)
    return {"auth": {"tenants": {"acme": tenant}}}


@pytest.mark.parametrize(
    "mapping,key",
    [
        ({"auth": auth(), "max_mesage_size": 1}, "max_mesage_size"),
        ({"auth": {**auth(), "tenant": {}}}, "auth.tenant"),
        (
            _tenant(apps={"editor": {"alowed_origins": ["https://editor.acme.com"]}}),
            "auth.tenants.acme.apps.editor.alowed_origins",
        ),
        (_tenant(apps={"editor": {"plan ": "free"}}), "auth.tenants.acme.apps.editor.plan "),
        (_tenant(plan="free"), "auth.tenants.acme.plan"),  # an app key one level too high
        (
            {"auth": {"tenants": {"acme": {"kyes": [], "apps": {"e": {}}}}}},
            "auth.tenants.acme.kyes",
        ),
        (
            _tenant(keys=[{"kid": "k1", "alg": "HS256", "secert": "s" * 32}]),
            "auth.tenants.acme.keys[0].secert",
        ),
        (
            _tenant(keys=[{"kid": "k1", "alg": "HS256", "secret": "s" * 32, "public_key": "x"}]),
            "auth.tenants.acme.keys[0].public_key",
        ),
        (
            _tenant(keys=[{"kid": "k1", "alg": "RS256", "public_key": "PEM", "secret": "x"}]),
            "auth.tenants.acme.keys[0].secret",
        ),
        (_tenant(keys=[{"jwks_file": "keys.json", "kid": "k1"}]), "auth.tenants.acme.keys[0].kid"),
        ({**_tenant(), "plans": {"free": {"max_conections": 1}}}, "plans.free.max_conections"),
        (
            {**_tenant(), "rate_limit": {"handshake_per_ip": "1/second"}},
            "rate_limit.handshake_per_ip",
        ),
        ({**_tenant(), "registry": {"ttl": 3}}, "registry.ttl"),
        (
            {
                **_tenant(),
                "regions": {"local": "ws://127.0.0.1:1234"},
                "pins": [{"docs": "x", "region": "local"}],
            },
            "pins[0].docs",
        ),
    ],
)
def test_unknown_keys_are_refused_at_every_level_naming_the_full_key(mapping, key):
    with pytest.raises(ConfigError) as info:
        load_settings(Config.from_mapping(mapping, env={}))
    assert info.value.key == key
    assert str(info.value).startswith(f"config: {key}: unknown setting (known here: ")


def test_only_the_development_commands_fall_back_to_the_development_config():
    with pytest.raises(ConfigError) as info:
        Config.load(None, env={})  # the production entry point: create_app() under gunicorn
    assert info.value.key == "WSSERVER_CONFIG"
    c = Config.load(None, env={}, fallback=str(ROOT / "config" / "dev.yaml"))
    assert list(c.auth["tenants"]) == ["dev"]


def test_the_public_development_secret_is_accepted_on_loopback_only():
    dev = Config.load(str(ROOT / "config" / "dev.yaml"), env={})
    with pytest.raises(ConfigError) as info:
        load_settings(dev)
    assert info.value.key == "auth.tenants.dev.keys[0].secret"
    for host in ("0.0.0.0", "::", "192.0.2.7", "", "sync.example.com"):
        with pytest.raises(ConfigError):
            load_settings(dev, listen_host=host)
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert load_settings(dev, listen_host=host)[1].tenants["dev"]
    # Any other secret anywhere; the development one once DEV_SECRET replaces it.
    assert load_settings({"auth": auth()}, listen_host="0.0.0.0")
    own = Config.load(str(ROOT / "config" / "dev.yaml"), env={"DEV_SECRET": "x" * 32})
    assert load_settings(own, listen_host="0.0.0.0")[1].tenants["dev"]


def _serve(config_path, env=None, timeout=30):
    env = dict(os.environ, **(env or {}))
    env.pop("PORT", None)
    env.pop("WSSERVER_TEST_UNSET_SECRET", None)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "wsserver.cli",
            "serve",
            "--config",
            str(config_path),
            "--port",
            "0",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    "mapping,key",
    [
        ({"auth": auth(), "max_mesage_size": 1000}, "max_mesage_size"),
        ({"auth": auth("${WSSERVER_TEST_UNSET_SECRET}")}, "auth.tenants.acme.keys[0].secret"),
        (
            {
                "auth": {
                    "tenants": {
                        "acme": {
                            "keys": [
                                {"kid": "k", "alg": "RS256", "public_key_file": "/nonexistent.pem"}
                            ],
                            "apps": {"e": {}},
                        }
                    }
                }
            },
            "auth.tenants.acme.keys[0].public_key_file",
        ),
        ({"auth": auth(""), "storage": "memory://"}, "auth.tenants.acme.keys[0].secret"),
        (
            {
                "auth": {
                    "tenants": {
                        "acme": {
                            "keys": auth()["tenants"]["acme"]["keys"],
                            "apps": {"editor": {"alowed_origins": ["https://a.b"]}},
                        }
                    }
                },
                "storage": "memory://",
            },
            "auth.tenants.acme.apps.editor.alowed_origins",
        ),
    ],
)
def test_serve_refuses_a_bad_config(tmp_path, mapping, key):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(mapping))
    proc = _serve(path)
    assert proc.returncode != 0
    assert key in proc.stderr, proc.stderr
    assert "listening" not in proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr


def test_serve_refuses_an_unreadable_config(tmp_path):
    proc = _serve(tmp_path / "nope.yaml")
    assert proc.returncode != 0
    assert "config" in proc.stderr and "nope.yaml" in proc.stderr, proc.stderr


def test_every_setting_fails_the_same_way_naming_its_full_key():
    """Top-level settings and the nested ones owned by the limits and the regions
    (wsserver/support/validators.py): the same words for the same mistake."""
    regions = {"region": "eu", "regions": {"eu": "wss://eu.example.net"}}
    cases = [
        ({"port": "80"}, "port", "must be an integer, not '80'"),
        ({"port": 70000}, "port", "must be between 0 and 65535"),
        (
            {"plans": {"free": {"max_connections": "10"}}},
            "plans.free.max_connections",
            "must be an integer or null, not '10'",
        ),
        (
            {"plans": {"free": {"max_ops_per_minute": 0}}},
            "plans.free.max_ops_per_minute",
            "must be >= 1",
        ),
        (
            {"rate_limit": {"trusted_proxies": 17}},
            "rate_limit.trusted_proxies",
            "must be between 0 and 16",
        ),
        ({"unload_after": "soon"}, "unload_after", "must be a number, not 'soon'"),
        (
            {"rate_limit": {"lease_seconds": "long"}},
            "rate_limit.lease_seconds",
            "must be a number of seconds, not 'long'",
        ),
        (
            {**regions, "registry": {"ttl_seconds": "x"}},
            "registry.ttl_seconds",
            "must be a number of seconds, not 'x'",
        ),
        (
            {"plans": {"free": {"max_conections": 1}}},
            "plans.free.max_conections",
            "unknown setting (known here: max_connections, max_documents, max_ops_per_minute, "
            "max_users_per_doc)",
        ),
        ({"rate_limit": {"burst": 1}}, "rate_limit.burst", "unknown setting (known here: "),
        (
            {**regions, "pins": [{"documents": "x", "region": "eu", "zone": 1}]},
            "pins[0].zone",
            "unknown setting (known here: app, documents, region, tenant)",
        ),
        (
            {**regions, "pins": [{"documents": "", "region": "eu"}]},
            "pins[0].documents",
            "must be a non-empty string",
        ),
        (
            {**regions, "pins": [None]},
            "pins[0]",
            "must be a mapping {tenant, app, documents, region}",
        ),
        ({"redis": "http://x"}, "redis", "must be a redis:// or rediss:// URL, not 'http://x'"),
        (
            {"rate_limit": {"storage": "http://x"}},
            "rate_limit.storage",
            "must be memory:// or a redis:// / rediss:// URL, not 'http://x'",
        ),
    ]
    for settings, key, message in cases:
        with pytest.raises(ConfigError) as info:
            load({"auth": auth(), **settings})
        assert info.value.key == key, settings
        assert str(info.value).startswith(f"config: {key}: {message}"), str(info.value)
    # None means "not set" for a section: its defaults.
    c = load({"auth": auth(), "rate_limit": None, "plans": {"free": None}, "pins": None})
    assert c.rate_limit["trusted_proxies"] == 0 and c.pins == []
    assert c.plans["free"].max_connections is None
