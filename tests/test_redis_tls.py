"""Redis over TLS (`rediss://`), as Heroku Redis serves it: a real redis-server speaking
TLS only, with a certificate signed by a CA the test makes with openssl (conftest's
`tls_redis`), which no system trusts, like a provider's self-signed one.

Certificate verification is on by default; `redis_verify_certificate: false` (the
documented switch) and the URL's own `ssl_cert_reqs=none` / `ssl_ca_certs=PATH` (as
redis-py reads them) make it work. Every Redis user is exercised over TLS: the limits
(rate and quotas), the region registry, the fan-out and the admin console's board.
"""

import json
import time
import urllib.request

import redis as redis_lib
import yaml
from conftest import base_config, make_token, run_node

from wsserver.cli import main as cli
from wsserver.limits.gates import RATE_KEY_PREFIX


def check_config(tmp_path, capsys, **overrides):
    """`wsserver check-config --connect` on base_config + overrides: (exit code,
    stdout, stderr)."""
    path = tmp_path / f"config-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(base_config(tmp_path, **overrides)))
    code = cli(["check-config", "--config", str(path), "--connect"])
    out, err = capsys.readouterr()
    return code, out, err


def test_rediss_checks_the_certificate_unless_told_not_to(tmp_path, capsys, tls_redis):
    code, out, err = check_config(tmp_path, capsys, redis=tls_redis.url)
    assert code == 1
    assert f"wsserver: redis: {tls_redis.url} does not answer: ConnectionError" in err
    assert "CERTIFICATE_VERIFY_FAILED" in err

    # The documented switch: encrypted, not verified (Heroku Redis).
    code, out, err = check_config(
        tmp_path, capsys, redis=tls_redis.url, redis_verify_certificate=False
    )
    assert code == 0, err
    assert f"# redis {tls_redis.url}?ssl_cert_reqs=none: answers" in out

    # The URL's own parameters, as redis-py reads them.
    for query in ("ssl_cert_reqs=none", f"ssl_ca_certs={tls_redis.ca}"):
        code, out, err = check_config(tmp_path, capsys, redis=f"{tls_redis.url}?{query}")
        assert code == 0, (query, err)
        assert f"# redis {tls_redis.url}?{query}: answers" in out
    # The URL says to verify: the switch does not override it.
    code, out, err = check_config(
        tmp_path,
        capsys,
        redis=f"{tls_redis.url}?ssl_cert_reqs=required",
        redis_verify_certificate=False,
    )
    assert code == 1 and "CERTIFICATE_VERIFY_FAILED" in err


def healthz(server):
    with urllib.request.urlopen(server.http + "/healthz", timeout=10) as response:
        return json.load(response)


def test_every_redis_user_works_over_tls(tmp_path, start_server, tls_redis):
    """Two processes on one TLS Redis, verifying its certificate against the CA named
    in the URL: the limits, the registry (two regions), the fan-out and the admin
    board all read and write there."""
    url = f"{tls_redis.url}?ssl_ca_certs={tls_redis.ca}"
    admin_token = "admin-token-0123456789abcdef"
    config = base_config(
        tmp_path,
        redis=url,
        region="eu",
        regions={"eu": "ws://127.0.0.1:9", "us": "ws://127.0.0.1:10"},
        rate_limit={"handshakes_per_ip": "1000/minute"},
        admin={"token": admin_token},
    )
    a, b = start_server(config), start_server(config)
    room = f"tls-{time.monotonic_ns()}"
    result = run_node(
        "fanout.mjs",
        json.dumps({"urls": [a.url, b.url, b.url], "token": make_token(), "room": room}),
    )
    assert result["converged"]  # the fan-out: edits crossed between the processes
    assert all(late == result["content"] for late in result["late"])
    for server in (a, b):
        health = healthz(server)
        assert health["status"] == "ok", health
        assert health["redis"] == {"registry": "ok", "limits": "ok"}, health
        assert health["fanout"]["state"] == "up" and health["fanout"]["peers"] == 1, health

    client = redis_lib.Redis.from_url(url, decode_responses=True)
    try:
        # The registry claimed the document; both processes hold quota leases; the
        # rate limiter counted handshakes; both publish their live documents.
        assert client.exists(f"wsserver:registry:acme/editor/{room}")
        assert len(client.zrange("wsserver:{quota}:instances", 0, -1)) == 2
        assert any(True for _ in client.scan_iter(match=f"{RATE_KEY_PREFIX}*", count=1000))
        deadline = time.monotonic() + 5
        while len(list(client.scan_iter(match="wsserver:admin:live:*"))) < 2:
            assert time.monotonic() < deadline, list(client.scan_iter(match="wsserver:*"))
            time.sleep(0.1)
    finally:
        client.close()
    # The console on either process reads the other's through Redis.
    request = urllib.request.Request(
        f"{b.http}/admin/api/documents", headers={"Authorization": f"Bearer {admin_token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert room in {d["name"] for d in json.load(response)["documents"]}
