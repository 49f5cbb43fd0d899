"""Command line: `wsserver serve`, `wsserver token`, `wsserver check-config`,
`wsserver --version`, and moving documents between storages: `wsserver copy-storage`,
`wsserver export`, `wsserver import`."""

from __future__ import annotations

import argparse
import sys
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from .errors import CommandError, ConfigError

if TYPE_CHECKING:
    from .settings import Config


def _serve(args: argparse.Namespace) -> int:
    from .support import runtime

    runtime.patch()  # before anything else touches sockets or threads

    from . import restarts
    from .settings.listen import listen_address
    from .settings.source import DEFAULT_CONFIG_PATH

    # The port is taken first (restarts.listen), where the config says, before the whole
    # config is imported and checked and the app built (settings/listen.py: a restart's
    # clients wait in its queue meanwhile instead of backing off); with --replace, taken
    # over from the process serving it once the app is built (that one serves meanwhile).
    listener = None
    if not args.replace:
        # Not dropped: loading the config reports its problems, listening again its own.
        with suppress(ConfigError, CommandError):
            address = listen_address(args.config, DEFAULT_CONFIG_PATH, args.host, args.port)
            listener = restarts.listen(*address)
    config = _serve_config(args)
    if listener is None and not args.replace:
        listener = restarts.listen(config.host, config.port)

    from gevent.pywsgi import WSGIServer

    from .app import announce, create_app, endpoint_of
    from .logs import configure_logging
    from .support.signals import on_stop
    from .transport.handler import WebSocketRequestHandler

    configure_logging(config.log_level, config.log_format)
    app = create_app(config, listen_host=config.host)
    endpoint = endpoint_of(app)
    runtime.settle()  # the collector and gevent tuned for serving (support/runtime.py)
    successor = None
    if listener is None:
        try:
            listener, successor = restarts.taken_over(config.host, config.port)
        except CommandError:
            endpoint.shutdown(timeout=1)
            raise
    server = WSGIServer(listener, app, handler_class=WebSocketRequestHandler, log=None)
    handover: restarts.Handover | None = None

    def stop(drain: float = config.shutdown_drain, replaced: bool = False) -> None:
        # Called again (a signal and a successor), it waits for the first call's end.
        # Stop accepting, but serve_forever ends only at server.stop(), once shut down;
        # a plain stop's 1012s come at once, a replaced one lets handshakes settle.
        closing = lambda: restarts.stop_accepting([server], replaced, endpoint.connections)
        endpoint.shutdown(drain=drain, before_closing=closing)
        if handover is not None:
            handover.close()
        server.stop(timeout=1)

    on_stop(stop)  # SIGTERM, SIGINT (support/signals.py)
    server.start()  # on a socket already listening (restarts.listen, restarts.taken_over)
    handover = restarts.accepting(server, successor, stop)
    announce(config, server.address)
    server.serve_forever()
    return 0


def _serve_config(args: argparse.Namespace) -> Config:
    """`serve`'s config: every problem at once; the development secret only on
    loopback; --host and --port over the file's."""
    from .loading import load_settings
    from .settings import DEFAULT_CONFIG_PATH

    config, _ = load_settings(
        config_path=args.config, listen_host=args.host, fallback=DEFAULT_CONFIG_PATH, serving=True
    )
    if args.host:
        config.host = args.host
    if args.port is not None:
        config.port = args.port
    return config


def _token(args):
    from .errors import InvalidToken
    from .handshake.auth import Authenticator
    from .handshake.claims import ACCESS_READ, access_claims
    from .settings import DEFAULT_CONFIG_PATH, Config

    extra: dict[str, Any] = {}
    if args.documents is not None:
        # Document names hold no comma: "a-*,b" and a repeated --documents both work.
        extra["documents"] = [p for value in args.documents for p in value.split(",") if p]
    if args.read_only:
        extra["access"] = ACCESS_READ
    try:
        access_claims(extra)  # the server's own check: never print a token it refuses
    except InvalidToken as e:
        print(f"wsserver: {e.reason}", file=sys.stderr)
        return 2
    config = Config.load(args.config, fallback=DEFAULT_CONFIG_PATH)
    # Signing a token serves nothing: the development secret is fine here.
    authenticator = Authenticator.from_config(config.auth, development=True)
    print(authenticator.issue(args.tenant, args.app, sub=args.sub, ttl=args.ttl, extra=extra))
    return 0


def _check_config(args):
    """Validate as production start-up (gunicorn, the Procfile) does: every problem at
    once, each naming its key (and the variable that filled it); print the effective
    config with secrets masked and what the Procfile's gunicorn would run with (workers,
    address). `--connect`: also check that the storage and Redis answer. Exit 1 on any
    problem. Without --config the file is $WSSERVER_CONFIG, as under gunicorn."""
    import yaml

    from .loading import load_settings
    from .platform import procfile_bind, procfile_workers
    from .scrub import mask_secrets

    try:
        workers = procfile_workers()
    except ValueError:
        print("wsserver: WEB_CONCURRENCY: must be an integer", file=sys.stderr)
        return 1
    try:
        config, _ = load_settings(config_path=args.config, workers=workers)
    except ConfigError as e:
        for problem in e.problems:
            print(f"wsserver: {problem}", file=sys.stderr)
        return 1
    print(yaml.safe_dump(mask_secrets(config.raw), sort_keys=False), end="")
    print(
        f"# the Procfile (gunicorn) runs {workers} worker{'s' if workers > 1 else ''} "
        f"($WEB_CONCURRENCY) listening on {procfile_bind()} ($PORT); "
        f"`wsserver serve` listens on {config.host}:{config.port}"
    )
    if args.connect:
        failures = _connect(config)
        for line in failures:
            print(f"wsserver: {line}", file=sys.stderr)
        if failures:
            return 1
    return 0


def _connect(config):
    """`check-config --connect`: open the storage (Postgres: a connection; SQLite: the
    file's directory) and PING every Redis the config uses; print what answers, return
    what does not."""
    import os

    from .documents.storage import is_postgres_url
    from .scrub import redact_url
    from .support.redis import client as redis_client

    failures = []
    storage = redact_url(config.storage)
    if is_postgres_url(config.storage):
        try:
            print(f"# storage {storage}: answers ({_postgres_schema(config)})")
        except Exception as e:  # whatever stops it, the operator reads why
            failures.append(f"storage: {storage} does not answer: {type(e).__name__}: {e}")
    elif config.storage.startswith("sqlite:///"):
        directory = os.path.dirname(os.path.abspath(config.storage[len("sqlite:///") :]))
        if os.access(directory, os.W_OK):
            print(f"# storage {storage}: its directory is writable")
        else:
            failures.append(f"storage: {storage}: cannot write to {directory}")
    redis_urls = {config.redis, (config.rate_limit or {}).get("storage")}
    for url in sorted(u for u in redis_urls if u and u.startswith("redis")):
        try:
            redis_client(url).ping()
            print(f"# redis {redact_url(url)}: answers")
        except Exception as e:  # redis-py raises several kinds (TLS, auth, timeouts)
            failures.append(f"redis: {redact_url(url)} does not answer: {type(e).__name__}: {e}")
    return failures


def _postgres_schema(config):
    """Connect to the database of `config.storage` (one connection, bounded as the
    server's are: `storage_timeout` to connect, `storage_statement_timeout` and
    `storage_lock_timeout` for the queries), writing nothing (a start creates or
    migrates the schema; a check must not): what a start would find. Raises
    StorageSchemaError for a schema newer than this wsserver."""
    import psycopg

    from .documents.storage.postgres import connection_options, set_timeouts
    from .documents.storage.postgres_schema import SCHEMA_VERSION
    from .errors import StorageSchemaError

    url = config.storage
    with psycopg.connect(url, **connection_options(url, config.storage_timeout)) as conn:
        set_timeouts(conn, config.storage_statement_timeout, config.storage_lock_timeout)
        table = conn.execute("SELECT to_regclass('wsserver_schema')").fetchone()
        if table is None or table[0] is None:
            return "no wsserver tables yet: the first start creates them"
        row = conn.execute("SELECT max(version) FROM wsserver_schema").fetchone()
        version = (row[0] if row is not None else None) or 0
    if version > SCHEMA_VERSION:
        raise StorageSchemaError(version, SCHEMA_VERSION)
    return f"schema version {version}, this wsserver's is {SCHEMA_VERSION}"


def _open(url):
    from .documents.storage import open_store

    try:
        return open_store(url)
    except ValueError:
        raise CommandError(
            f"unsupported storage URL {url!r}: sqlite:///PATH or postgresql://..."
        ) from None


def _storage_of(args):
    if args.storage:
        return args.storage
    from .settings import DEFAULT_CONFIG_PATH, Config

    return Config.load(args.config, fallback=DEFAULT_CONFIG_PATH).storage


def _copy_storage(args):
    from .documents.storage.transfer import copy_storage
    from .scrub import redact_url

    source, target = _open(args.source), _open(args.target)
    try:
        copied, skipped = copy_storage(source, target, report=lambda line: print(line, flush=True))
    finally:
        source.close()
        target.close()
    print(
        f"copied {copied} documents from {redact_url(args.source)} to "
        f"{redact_url(args.target)} ({skipped} were already there); every copy verified"
    )
    return 0


def _export(args):
    from .documents import DocKey
    from .documents.storage.transfer import export_document

    store = _open(_storage_of(args))
    try:
        update = export_document(store, DocKey(args.tenant, args.app, args.doc))
    finally:
        store.close()
    with open(args.file, "wb") as f:
        f.write(update)
    print(f"wrote {len(update)} bytes to {args.file}")
    return 0


def _import(args):
    from .documents import DocKey
    from .documents.storage.transfer import import_document

    try:
        with open(args.file, "rb") as f:
            update = f.read()
    except OSError as e:
        raise CommandError(f"cannot read {args.file}: {e.strerror}") from None
    store = _open(_storage_of(args))
    try:
        import_document(store, DocKey(args.tenant, args.app, args.doc), update)
    finally:
        store.close()
    print(f"imported {len(update)} bytes into {args.tenant}/{args.app}/{args.doc}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ConfigError, CommandError) as e:
        _report_failure(args, [f"wsserver: {p}" for p in getattr(e, "problems", [e])])
        return 2


def build_parser() -> argparse.ArgumentParser:
    """Every command, its options and the function that runs it (`run`)."""
    from . import __version__

    parser = argparse.ArgumentParser(prog="wsserver", description=__doc__)
    parser.add_argument("--version", action="version", version=f"wsserver {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server (one gevent process)")
    serve.add_argument(
        "--config", help="YAML config (default: $WSSERVER_CONFIG or config/dev.yaml)"
    )
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    take_over = "take the port over from the wsserver serving it, refusing nobody (README)"
    serve.add_argument("--replace", action="store_true", help=take_over)
    serve.set_defaults(run=_serve)
    token = sub.add_parser(
        "token", help="print a development token (first HS256 key of the tenant)"
    )
    token.add_argument("--tenant", required=True)
    token.add_argument("--app", required=True)
    token.add_argument("--sub", help="user id")
    token.add_argument("--ttl", type=int, default=3600, help="seconds (default 3600)")
    token.add_argument(
        "--documents",
        action="append",
        metavar="PATTERNS",
        help="documents the token may open: comma-separated globs (* and ?), "
        "repeatable (default: every document of the app)",
    )
    token.add_argument(
        "--read-only",
        action="store_true",
        help='access "read": sync and presence, no document changes',
    )
    token.add_argument("--config")
    token.set_defaults(run=_token)
    _add_storage_commands(sub)
    return parser


def _add_storage_commands(sub):
    """check-config, copy-storage, export, import."""
    check = sub.add_parser("check-config", help="validate the config and print it, secrets masked")
    check.add_argument("--config", help="YAML config (default: $WSSERVER_CONFIG)")
    check.add_argument(
        "--connect", action="store_true", help="also check that the storage and Redis answer"
    )
    check.set_defaults(run=_check_config)
    copy = sub.add_parser(
        "copy-storage",
        help="copy every document from one storage to another "
        "(SQLite <-> Postgres), verifying each; safe to run again",
    )
    copy.add_argument("source", metavar="FROM_URL")
    copy.add_argument("target", metavar="TO_URL")
    copy.set_defaults(run=_copy_storage)
    for name, run, what in (
        ("export", _export, "write one document to FILE as a Yjs update"),
        (
            "import",
            _import,
            "merge the Yjs update in FILE into one document "
            "(a server that has it open sees it after a reload)",
        ),
    ):
        command = sub.add_parser(name, help=what)
        command.add_argument("--tenant", required=True)
        command.add_argument("--app", required=True)
        command.add_argument("--doc", required=True, help="document name")
        command.add_argument("file", metavar="FILE")
        command.add_argument("--storage", help="storage URL (default: the config's `storage`)")
        command.add_argument("--config")
        command.set_defaults(run=run)


def _report_failure(args, lines):
    """Each problem on its own line of stderr; a JSON record each for `serve` when its
    config says `log_format: json` (a failed boot is part of the log stream too)."""
    if args.run is _serve:
        import os

        from .logs import configure_logging, log_format_of
        from .settings import DEFAULT_CONFIG_PATH

        path = args.config or os.environ.get("WSSERVER_CONFIG") or DEFAULT_CONFIG_PATH
        if log_format_of(path) == "json":
            import logging

            configure_logging("info", "json")
            for line in lines:
                logging.getLogger("wsserver.cli").error(line)
            return
    for line in lines:
        print(line, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
