"""A fork server for the tests' `wsserver serve` processes.

Starting `python -m wsserver.cli serve` costs about 0.6 CPU-seconds on the test box, nearly
all of it interpreter start and imports; the suite starts close to 300 servers, on two
cores. So each test process (an xdist worker) starts one *zygote* the first time it needs a
server: it patches gevent and imports every `wsserver` module once, then forks a child per
server. The child is a fresh process of its own (own pid, own sockets, own stdout pipe,
the test's environment, cwd and arguments) that runs the same `wsserver.cli.main` as the
command does; what it skips is only the interpreter start and the imports.

What this cannot give, and where the tests use a real `python -m wsserver.cli` instead
(`ServerProcess(command=...)`, or `WSSERVER_TEST_FORK=0` for a whole run):
- settings read at import time by a library (`PROMETHEUS_MULTIPROC_DIR`, `GEVENT_*`,
  `PYTHON*`): `spawn` refuses such an environment and the caller falls back;
- the command line in /proc/PID/cmdline (the zygote's).

The zygote reaps its children and reports each exit status, so `ForkedProcess` answers
`poll`, `wait`, `returncode`, `send_signal`, `terminate` and `kill` as `subprocess.Popen`
does; `stdout` is the text pipe of the child's stdout and stderr together.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

# Read at import time by a library the server imports: a child of the zygote would not
# see them, so an environment with them gets a real process.
IMPORT_TIME_ENV = ("PROMETHEUS_MULTIPROC_DIR", "GEVENT_", "PYTHON", "WSSERVER_RESTARTS_DIR")
ALLOWED_PYTHON_ENV = ("PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PYTHONPATH")

ZYGOTE = Path(__file__).resolve().parent / "zygote.py"


class ForkedProcess:
    """The `subprocess.Popen` face of a child of the zygote."""

    def __init__(self, server: ForkServer, pid: int, stdout: io.TextIOBase, args: list):
        self.server = server
        self.pid = pid
        self.stdout = stdout
        self.args = args
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.server.exit_code(self.pid)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            code = self.server.wait_exit(self.pid, timeout)
            if code is None:
                raise subprocess.TimeoutExpired(self.args, timeout)
            self.returncode = code
        return self.returncode

    def send_signal(self, sig: int) -> None:
        # Once its exit was reported the pid may be another process's.
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(15)

    def kill(self) -> None:
        self.send_signal(9)


class ForkServer:
    """One zygote per test process, started on first use."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.control = ours
        self.env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, str(ZYGOTE), str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            env=self.env,
        )
        theirs.close()
        self.lock = threading.Lock()  # one request at a time
        self.changed = threading.Condition()
        self.exits: dict[int, int] = {}
        self.replies: list[dict] = []
        threading.Thread(target=self._read, daemon=True, name="forkserver").start()

    def _read(self) -> None:
        while True:
            message = self.control.recv(65536)
            if not message:
                with self.changed:
                    self.replies.append({"error": "the zygote ended"})
                    self.changed.notify_all()
                return
            event = json.loads(message)
            with self.changed:
                if "exit" in event:
                    self.exits[event["exit"]] = event["code"]
                else:
                    self.replies.append(event)
                self.changed.notify_all()

    def can_spawn(self, env: dict) -> bool:
        """Whether a child sees `env` as a fresh process would: none of the variables
        libraries read at import time differ from the zygote's."""
        return not any(
            name.startswith(IMPORT_TIME_ENV) and name not in ALLOWED_PYTHON_ENV
            for name in set(env) | set(self.env)
            if env.get(name) != self.env.get(name)
        )

    def spawn(self, args: list, env: dict, cwd: str) -> ForkedProcess:
        """A child running `wsserver.cli.main(args)` (args without the program)."""
        read, write = os.pipe()
        request = json.dumps({"args": args, "env": env, "cwd": str(cwd)}).encode()
        with self.lock:
            try:
                socket.send_fds(self.control, [request], [write])
            finally:
                os.close(write)
            with self.changed:
                self.changed.wait_for(lambda: self.replies, timeout=30)
                if not self.replies:
                    raise RuntimeError("the zygote did not answer")
                reply = self.replies.pop(0)
        if "pid" not in reply:
            os.close(read)
            raise RuntimeError(f"the zygote could not fork: {reply}")
        stdout = open(read, encoding="utf-8", errors="replace")  # noqa: SIM115 (the process's)
        return ForkedProcess(self, reply["pid"], stdout, ["wsserver", *args])

    def exit_code(self, pid: int) -> int | None:
        with self.changed:
            return self.exits.get(pid)

    def wait_exit(self, pid: int, timeout: float | None) -> int | None:
        with self.changed:
            self.changed.wait_for(lambda: pid in self.exits, timeout=timeout)
            return self.exits.get(pid)


_server: ForkServer | None = None
_server_lock = threading.Lock()


def fork_server() -> ForkServer | None:
    """This test process's fork server; None with WSSERVER_TEST_FORK=0."""
    global _server
    if os.environ.get("WSSERVER_TEST_FORK") == "0":
        return None
    with _server_lock:
        if _server is None or _server.proc.poll() is not None:
            _server = ForkServer()
        return _server
