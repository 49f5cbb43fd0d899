"""What the Procfile's gunicorn runs with, from the environment a platform gives: the
worker count (`$WEB_CONCURRENCY`, which Heroku's buildpack sets from the dyno size) and
the address (`0.0.0.0:$PORT`). Read by wsserver/gunicorn_conf.py and by `check-config`,
so both say the same; imports nothing (gunicorn's master imports it before any worker
is patched by gevent)."""

import os
from collections.abc import Mapping

DEFAULT_PORT = "1234"


def procfile_workers(env: Mapping[str, str] = os.environ) -> int:
    """gunicorn's worker count: `$WEB_CONCURRENCY`, 1 when unset."""
    return int(env.get("WEB_CONCURRENCY") or "1")


def procfile_bind(env: Mapping[str, str] = os.environ) -> str:
    """gunicorn's listening address: every interface, `$PORT` (1234 when unset)."""
    return f"0.0.0.0:{env.get('PORT') or DEFAULT_PORT}"
