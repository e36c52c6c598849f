"""A supervisor in a subprocess, for the tests: start it, talk to its workers, signal it.

``SERVER_SCRIPT`` binds 127.0.0.1 port 0, prints ``{"port": ..., "pid": ...}`` on stdout once
bound, and runs a ``Supervisor`` whose workers serve a tiny protocol: the server greets with
``hi PID``, the client sends a line, the server answers ``PID <line reversed>``. Each worker
logs ``worker PID serving`` (after ``ready()``) and ``worker PID stopping graceful=...`` (from
its ``on_stop`` callback) to stderr, which goes to a file the tests read. A worker that
boots while a file ``broken`` exists in the script's directory fails to import; one that
boots while a file ``hold`` exists waits there (without heartbeats) until it is removed,
then fails if ``broken`` exists by then; one that boots while a file ``crash`` exists raises
(a crash, not a boot error).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

#: Generous bounds for a shared 2-core machine: how long to wait for a process to start, for
#: a reply, and for a condition that tests poll.
START_TIMEOUT = 20.0
IO_TIMEOUT = 10.0
POLL_TIMEOUT = 20.0
POLL_INTERVAL = 0.02

SERVER_SCRIPT = r"""
import json
import logging
import os
import socket
import sys
import threading

import netserve
from netserve.supervisor import Supervisor

OPTIONS = json.loads(sys.argv[1])
logging.basicConfig(
    level=logging.INFO,
    stream=sys.stderr,
    format="%(levelname)s %(name)s %(process)d %(message)s",
)
log = logging.getLogger("target")
frozen = threading.Event()  # set by the "freeze" request: the worker stops its heartbeats


class Handler(netserve.StreamRequestHandler):
    def handle(self):
        self.wfile.write(f"hi {os.getpid()}\n".encode())
        line = self.rfile.readline()
        if not line:
            return
        text = line.decode().strip()
        if text == "freeze":
            frozen.set()
        self.wfile.write(f"{os.getpid()} {text[::-1]}\n".encode())
        self.server.worker.count_request()


class Server(netserve.ThreadingTCPServer):
    def service_actions(self):
        if not frozen.is_set():
            self.worker.notify()


def boot():
    if OPTIONS.get("import_error") or os.path.exists("broken"):
        import netserve_test_missing_module  # noqa: F401


def target(sockets, worker):
    boot()
    while os.path.exists("hold"):  # a worker booted now waits until the test removes it
        threading.Event().wait(0.02)
    boot()
    if OPTIONS.get("crash") or os.path.exists("crash"):
        raise ValueError("target crashed on purpose")
    server = Server(sockets[0].getsockname(), Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = sockets[0]
    server.worker = worker
    graceful = [True]

    def stop(is_graceful):
        graceful[0] = is_graceful
        log.info("worker %d stopping graceful=%s", os.getpid(), is_graceful)
        server.shutdown()  # runs in the worker's stop thread: waits for serve_forever to end

    worker.on_stop(stop)
    worker.ready()
    log.info("worker %d serving", os.getpid())
    server.serve_forever(poll_interval=0.1)
    # graceful: let the requests in flight finish (within the supervisor's deadline);
    # fast: do not wait for them, the process exit closes their connections
    server.block_on_close = graceful[0]
    server.drain_timeout = worker.graceful_timeout
    server.server_close()


listener = socket.create_server(("127.0.0.1", 0), backlog=128)
supervisor = Supervisor(
    target,
    [listener],
    workers=OPTIONS.get("workers", 2),
    worker_timeout=OPTIONS.get("worker_timeout", 30.0),
    max_requests=OPTIONS.get("max_requests", 0),
    graceful_timeout=OPTIONS.get("graceful_timeout", 30.0),
)
print(json.dumps({"port": listener.getsockname()[1], "pid": os.getpid()}), flush=True)
sys.exit(supervisor.run())
"""

T = TypeVar("T")


def process_alive(pid: int) -> bool:
    """True if *pid* exists and is not a zombie (an orphan's zombie may never be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def wait_for(condition: Callable[[], T | None], what: str, timeout: float = POLL_TIMEOUT) -> T:
    """Poll *condition* until it returns something true; return that. Fails after *timeout*."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(POLL_INTERVAL)


class Supervised:
    """The supervisor subprocess, its log, and its workers; ``directory`` is its own."""

    def __init__(self, tmp_path: Path, **options: Any) -> None:
        self.directory = tmp_path
        script = tmp_path / "serve.py"
        script.write_text(SERVER_SCRIPT)
        self.log_path = tmp_path / "supervisor.log"
        self._log_file = self.log_path.open("wb")
        self.seen_workers: set[int] = set()
        self.proc = subprocess.Popen(
            [sys.executable, str(script), json.dumps(options)],
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            cwd=tmp_path,
        )
        try:
            info = json.loads(self._read_line(START_TIMEOUT))
        except BaseException:
            self.close()
            raise
        self.port: int = info["port"]
        self.pid: int = info["pid"]

    def _read_line(self, timeout: float) -> bytes:
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                raise AssertionError(f"no readiness line within {timeout} s: {self.log()}")
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the supervisor exited before it was ready: {self.log()}")
        return line

    # -- observing -------------------------------------------------------------------------

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def live_workers(self) -> set[int]:
        """The supervisor's children that are alive (zombies not yet reaped left out)."""
        try:
            text = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        except (FileNotFoundError, ProcessLookupError):
            return set()
        pids = {int(pid) for pid in text.split()}
        self.seen_workers |= pids
        return {pid for pid in pids if process_alive(pid)}

    def serving_workers(self) -> set[int]:
        """Live workers that have logged ``serving`` (they called ``ready()``)."""
        serving = {int(pid) for pid in re.findall(r"worker (\d+) serving", self.log())}
        return self.live_workers() & serving

    def wait_serving(self, count: int, timeout: float = POLL_TIMEOUT) -> set[int]:
        """Wait until exactly *count* workers are alive, all of them serving; return them."""

        def ready() -> set[int] | None:
            live = self.live_workers()
            return live if len(live) == count and live <= self.serving_workers() else None

        return wait_for(ready, f"{count} serving workers", timeout)

    def wait_log(self, pattern: str, count: int = 1, timeout: float = POLL_TIMEOUT) -> str:
        """Wait until *pattern* (a regex) matches at least *count* log lines; return the log."""

        def found() -> str | None:
            log = self.log()
            return log if len(re.findall(pattern, log, re.MULTILINE)) >= count else None

        return wait_for(found, f"{count} log line(s) matching {pattern!r}", timeout)

    # -- talking ---------------------------------------------------------------------------

    def connect(self) -> tuple[socket.socket, int]:
        """Open a connection and read the greeting: the socket and the serving worker's PID
        (the request is then in flight in that worker)."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=IO_TIMEOUT)
        try:
            greeting = read_line(sock)
            assert greeting.startswith("hi "), greeting
            return sock, int(greeting.split()[1])
        except BaseException:
            sock.close()
            raise

    def request(self, text: str) -> tuple[int, str]:
        """One request: ``(PID of the worker that answered, the reply text)``."""
        sock, _ = self.connect()
        with sock:
            sock.sendall(text.encode() + b"\n")
            pid, _, reply = read_line(sock).partition(" ")
            return int(pid), reply

    # -- controlling -----------------------------------------------------------------------

    def send(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def wait_exit(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        """End the supervisor and every worker it ever had, by PID."""
        self.live_workers()
        self.seen_workers |= {int(p) for p in re.findall(r"spawned worker pid (\d+)", self.log())}
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(IO_TIMEOUT)
        for pid in self.seen_workers:
            if process_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log_file.close()


def read_line(sock: socket.socket) -> str:
    """Read one line (up to and without the newline); fails on EOF before it."""
    data = bytearray()
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"EOF after {bytes(data)!r}")
        data += chunk
    return data[:-1].decode()


@pytest.fixture
def start_supervisor(tmp_path: Path) -> Iterator[Callable[..., Supervised]]:
    """Start a supervisor subprocess with the given options; all are ended afterwards."""
    started: list[Supervised] = []

    def start(**options: Any) -> Supervised:
        supervised = Supervised(tmp_path, **options)
        started.append(supervised)
        return supervised

    try:
        yield start
    finally:
        for supervised in started:
            supervised.close()
