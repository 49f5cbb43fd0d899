"""The zygote of tests/forkserver.py: `python tests/zygote.py FD`.

Patches gevent and imports every `wsserver` module, as `wsserver serve` does before it
serves; then, for each request on the control socket FD (SOCK_SEQPACKET: a JSON message
with the arguments, environment and cwd, and the write end of the child's stdout pipe),
forks a child that runs `wsserver.cli.main`. Reports each child's pid, and its exit
status once reaped. Never touches the gevent hub itself (original select, waitpid and
fork), so a child starts with a clean one. Ends, killing the children still running,
when the test process closes the socket.
"""

import sys
from pathlib import Path

# As `python -m wsserver.cli` run from the checkout: its package first.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wsserver.support import runtime  # noqa: E402

runtime.patch()  # as `wsserver serve` does, first

import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import pkgutil  # noqa: E402
import signal  # noqa: E402
import tempfile  # noqa: E402
import traceback  # noqa: E402

import gevent  # noqa: E402
from gevent import monkey  # noqa: E402

import wsserver  # noqa: E402

select = monkey.get_original("select", "select")
fork = monkey.get_original("os", "fork")
waitpid = monkey.get_original("os", "waitpid")
plain_socket = monkey.get_original("socket", "socket")
recv_fds = monkey.get_original("socket", "recv_fds")

# gunicorn_conf is gunicorn's config (it sets environment variables when imported).
for module in pkgutil.walk_packages(wsserver.__path__, "wsserver."):
    if module.name not in ("wsserver.gunicorn_conf", "wsserver.__main__"):
        importlib.import_module(module.name)
from wsserver.cli import main  # noqa: E402
from wsserver.documents import ydoc  # noqa: E402

ydoc.warm_up()  # what every server's create_app does first: imports asyncio once, here


def child(control, request, fds):
    """In the forked child: become the process the command would have started."""
    control.close()
    gevent.reinit()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(fds[0], 1)
    os.dup2(fds[0], 2)
    os.close(fds[0])
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    tempfile.tempdir = None  # TMPDIR as the test set it
    sys.argv = ["wsserver", *request["args"]]
    try:
        code = main(request["args"])
    except SystemExit as e:
        code = e.code
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.exit(code)  # the interpreter's own exit: atexit handlers, flushes


def reap(control, children):
    while children:
        try:
            pid, status = waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.discard(pid)
        code = os.waitstatus_to_exitcode(status)
        control.send(json.dumps({"exit": pid, "code": code}).encode())


def serve(control):
    children = set()
    while True:
        reap(control, children)
        ready, _, _ = select([control], [], [], 0.05)
        if not ready:
            continue
        message, fds, _, _ = recv_fds(control, 1 << 20, 4)
        if not message:
            break
        request = json.loads(message)
        try:
            pid = fork()
        except OSError as e:
            for fd in fds:
                os.close(fd)
            control.send(json.dumps({"error": str(e)}).encode())
            continue
        if pid == 0:
            child(control, request, fds)  # does not return
        for fd in fds:
            os.close(fd)
        children.add(pid)
        control.send(json.dumps({"pid": pid}).encode())
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue


if __name__ == "__main__":
    serve(plain_socket(fileno=int(sys.argv[1])))
