"""The ``netserve`` command, run for real: subprocesses, loopback sockets, signals.

A server is ready when it has logged ``serving HANDLER on KIND ADDRESS`` on stderr; the tests
read the bound address (port 0 resolved) from that line and never wait by sleeping. Before
signalling a server, a test has one request served: the server installs its signal handlers
before it starts accepting, but logs the ``serving`` line before that (see
``test_runner.test_a_signal_right_after_the_serving_line_is_handled``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

import netserve
from netserve import cli
from netserve.config import Config, options
from netserve.demo import ReverseHandler, SeedHandler
from netserve.testing import run_server

pytestmark = pytest.mark.timeout(30)

#: Bounds for waiting on a subprocess: startup, a log line, a stop, one short command.
STARTUP_TIMEOUT = 15.0
LINE_TIMEOUT = 10.0
STOP_TIMEOUT = 6.0  # "promptly": shutdown is immediate; this covers a slow, shared machine
COMMAND_TIMEOUT = 30.0
IO_TIMEOUT = 5.0
#: A bound on the wakeups of one wait, on top of its deadline.
MAX_WAKEUPS = 10_000

SERVING = re.compile(r"serving (?P<handler>\S+) on (?P<kind>tcp|udp|unix) (?P<address>\S+)$")
#: The first line a server logs: its version, its PID, then ``Config.describe()``.
STARTUP = re.compile(r"netserve (?P<version>\S+), pid (?P<pid>\d+): (?P<description>.+)$")
#: Threads of a serving process besides its pool: the main thread and one accept loop per
#: listener, with room for a closer or two during a stop.
OTHER_THREADS = 4


def _netserve_command() -> list[str]:
    script = Path(sys.executable).with_name("netserve")
    if script.exists():
        return [str(script)]
    found = shutil.which("netserve")
    if found is None:
        pytest.fail("the netserve script is not installed next to the interpreter nor on PATH")
    return [found]


def _python_m_netserve() -> list[str]:
    return [sys.executable, "-m", "netserve"]


def parse_host_port(text: str) -> tuple[str, int]:
    """``127.0.0.1:80`` or ``[::1]:80`` as logged, to an address ``connect()`` takes."""
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def assert_one_error_line(stderr: str) -> str:
    """The command's stderr is one ``netserve: error: ...`` line and no traceback.

    A server that fails to start may have logged its startup line (``netserve VERSION, pid
    N: ...``, at INFO) before the error; nothing else may precede it.
    """
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert lines, stderr
    *before, error = lines
    assert error.startswith("netserve: error: "), stderr
    assert all(" INFO " in line and STARTUP.search(line) for line in before), stderr
    return error


def run_command(
    args: Sequence[str], *, input: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``netserve ARGS`` to completion (killed after COMMAND_TIMEOUT)."""
    return subprocess.run(
        [*_netserve_command(), *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        env=env,
        stdin=None if input is not None else subprocess.DEVNULL,
    )


class ServerProcess:
    """A ``netserve serve`` subprocess whose stderr is collected line by line."""

    def __init__(
        self, argv: Sequence[str], env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        self.argv = list(argv)
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=cwd,
        )
        self._cond = threading.Condition()
        self._lines: list[str] = []
        self._eof = False
        self._reader = threading.Thread(target=self._read, name="stderr reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self._lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    @property
    def lines(self) -> list[str]:
        with self._cond:
            return list(self._lines)

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    def wait_for(
        self, pattern: str | re.Pattern[str], count: int = 1, timeout: float = LINE_TIMEOUT
    ) -> list[re.Match[str]]:
        """Wait until *count* stderr lines match *pattern*; return their matches."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            for _ in range(MAX_WAKEUPS):
                matches = [m for m in map(regex.search, self._lines) if m]
                if len(matches) >= count:
                    return matches[:count]
                remaining = deadline - time.monotonic()
                if self._eof or remaining <= 0:
                    break
                self._cond.wait(remaining)
        pytest.fail(
            f"{count} line(s) matching {regex.pattern!r} did not appear in {timeout} s "
            f"(exit code {self.proc.poll()}); stderr:\n" + "\n".join(self._lines)
        )

    def serving(self, count: int = 1) -> list[tuple[str, str]]:
        """Wait for *count* startup lines; return ``(kind, address)`` for each."""
        matches = self.wait_for(SERVING, count, timeout=STARTUP_TIMEOUT)
        return [(m["kind"], m["address"]) for m in matches]

    def tcp_address(self) -> tuple[str, int]:
        """The first TCP address the server logged."""
        for kind, address in self.serving():
            if kind == "tcp":
                return parse_host_port(address)
        pytest.fail(f"no tcp address in the startup log:\n{self.stderr}")

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, float]:
        """Send *sig*; return the exit code and the seconds it took to exit."""
        started = time.monotonic()
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the server did not exit within {STOP_TIMEOUT} s of signal {sig}")
        self._reader.join(LINE_TIMEOUT)
        return code, time.monotonic() - started

    def close(self) -> None:
        """Kill the process if it is still running (only this one, by its PID) and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(LINE_TIMEOUT)
        self._reader.join(LINE_TIMEOUT)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


StartServer = Callable[..., ServerProcess]


@pytest.fixture
def start_server() -> Iterator[StartServer]:
    """Start ``netserve serve ARGS`` (or ``python -m netserve``); kill what is left after."""
    started: list[ServerProcess] = []

    def start(
        *args: str,
        env: dict[str, str] | None = None,
        python_m: bool = False,
        cwd: Path | None = None,
        remove_cwd_first: bool = False,
    ) -> ServerProcess:
        command = [*(_python_m_netserve() if python_m else _netserve_command()), *args]
        if remove_cwd_first:  # the shell enters cwd, removes it, then runs the command
            command = ["sh", "-c", 'rmdir "$PWD" && exec "$@"', "sh", *command]
        server = ServerProcess(command, env=env, cwd=cwd)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def connect(address: tuple[str, int] | str) -> socket.socket:
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    if isinstance(address, tuple) and ":" in address[0]:
        family = socket.AF_INET6
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(IO_TIMEOUT)
    try:
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock


def exchange(sock: socket.socket, line: bytes) -> bytes:
    """Send one line, return the reply line (read up to its newline)."""
    sock.sendall(line + b"\n")
    reply = b""
    for _ in range(len(line) + 2):
        chunk = sock.recv(4096)
        reply += chunk
        if not chunk or reply.endswith(b"\n"):
            break
    return reply


def ipv6_loopback_works() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as server:
            server.bind(("::1", 0))
            server.listen()
            with socket.create_connection(server.getsockname()[:2], timeout=IO_TIMEOUT):
                return True
    except OSError:
        return False


# --- serving -----------------------------------------------------------------------------


@pytest.mark.parametrize("python_m", [False, True], ids=["netserve", "python -m netserve"])
def test_serve_reverse_handler_on_port_zero(start_server: StartServer, python_m: bool) -> None:
    server = start_server(
        "serve", "netserve.demo:ReverseHandler", "--bind", "127.0.0.1:0", python_m=python_m
    )
    [(kind, address)] = server.serving()
    host, port = parse_host_port(address)
    assert (kind, host) == ("tcp", "127.0.0.1")
    assert port != 0, "the startup line must show the bound port, not 0"
    startup, serving = server.lines[:2]
    assert STARTUP.search(startup), server.stderr
    assert serving.endswith("serving netserve.demo:ReverseHandler on tcp " + address)
    with connect((host, port)) as sock:
        assert exchange(sock, b"hello") == b"olleh\n"
        assert exchange(sock, b"netserve") == b"evresten\n"
    code, _ = server.stop(signal.SIGTERM)
    assert code == 0


def test_sigint_stops_promptly_with_a_client_connected(start_server: StartServer) -> None:
    server = start_server("serve", "netserve.demo:ReverseHandler", "--bind", "127.0.0.1:0")
    address = server.tcp_address()
    with connect(address) as sock:
        assert exchange(sock, b"still here") == b"ereh llits\n"
        code, elapsed = server.stop(signal.SIGINT)
    assert code == 0, server.stderr
    assert elapsed < STOP_TIMEOUT
    assert "Traceback" not in server.stderr


def _process_state(pid: int) -> str:
    """The state letter of ``/proc/PID/stat``: ``T`` for a stopped (suspended) process."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


@pytest.mark.parametrize(
    "handler", ["netserve.demo:ReverseHandler", "netserve.demo:ReverseLineHandler"]
)
def test_without_workers_reload_and_scaling_signals_are_logged_and_quit_stops(
    start_server: StartServer, handler: str
) -> None:
    server = start_server("serve", handler, "--bind", "127.0.0.1:0")
    address = server.tcp_address()
    with connect(address) as sock:
        assert exchange(sock, b"before") == b"erofeb\n"
        for sig in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
            server.proc.send_signal(sig)
            server.wait_for(rf"{sig.name} ignored: reloading and scaling need workers")
            assert server.proc.poll() is None, server.stderr
            assert _process_state(server.proc.pid) != "T", "suspended by " + sig.name
            assert exchange(sock, b"after") == b"retfa\n"
        code, _ = server.stop(signal.SIGQUIT)
    assert code == 0, server.stderr
    assert "stopping" in server.stderr
    assert "Traceback" not in server.stderr


def test_sigterm_closes_an_idle_client_after_the_drain_timeout(start_server: StartServer) -> None:
    # a graceful stop waits for the connected client's handler, up to --drain-timeout
    server = start_server(
        "serve", "netserve.demo:ReverseHandler", "--bind", "127.0.0.1:0", "--drain-timeout", "0.5"
    )
    address = server.tcp_address()
    with connect(address) as sock:
        port = sock.getsockname()[1]
        assert exchange(sock, b"still here") == b"ereh llits\n"
        code, elapsed = server.stop(signal.SIGTERM)
        assert sock.recv(1024) == b"", "the server closed the connection"
    assert code == 0, server.stderr
    assert 0.4 <= elapsed < 0.5 + STOP_TIMEOUT
    server.wait_for(rf"closing connection from 127\.0\.0\.1:{port}: still open")
    assert "Traceback" not in server.stderr


def test_stopped_server_no_longer_accepts(start_server: StartServer) -> None:
    server = start_server("serve", "netserve.demo:ReverseHandler", "--bind", "127.0.0.1:0")
    address = server.tcp_address()
    with connect(address) as sock:  # one request served: the signal handlers are in place
        assert exchange(sock, b"ready") == b"ydaer\n"
    assert server.stop(signal.SIGINT)[0] == 0
    with pytest.raises(ConnectionRefusedError):
        connect(address).close()


@pytest.mark.parametrize(
    ("handler", "closed"),
    [
        ("netserve.demo:ReverseHandler", r" closed after [0-9.]+ ms$"),
        ("netserve.demo:ReverseLineHandler", r" closed$"),
        ("netserve.demo:AsyncReverseHandler", r" closed$"),
    ],
)
def test_one_log_line_per_connection_after_it_closes(
    start_server: StartServer, handler: str, closed: str
) -> None:
    server = start_server("serve", handler, "--bind", "127.0.0.1:0")
    address = server.tcp_address()
    ports = []
    for text in (b"first", b"second"):
        with connect(address) as sock:
            port = sock.getsockname()[1]
            ports.append(port)
            assert exchange(sock, text) == text[::-1] + b"\n"
            assert not any(f":{port} " in line for line in server.lines), (
                "a connection is logged only once it has ended:\n" + server.stderr
            )
        server.wait_for(rf"127\.0\.0\.1:{port}" + closed)
    assert server.stop()[0] == 0
    for port in ports:
        mentions = [line for line in server.lines if re.search(rf"127\.0\.0\.1:{port}\b", line)]
        assert len(mentions) == 1, server.stderr


def test_repeatable_bind_serves_tcp_and_unix(start_server: StartServer, sock_dir: Path) -> None:
    path = sock_dir / "seed.sock"
    server = start_server(
        "serve", "netserve.demo:SeedHandler", "--bind", "127.0.0.1:0", "--bind", f"unix:{path}"
    )
    served = dict(server.serving(2))
    assert served["unix"] == str(path)
    tcp = parse_host_port(served["tcp"])
    for address in (tcp, str(path)):
        with connect(address) as sock:
            assert exchange(sock, b"abc") == b"cba\n"
    assert server.stop()[0] == 0
    assert not path.exists(), "the server removes the socket file it created"


def test_reverse_handler_serves_a_unix_socket(start_server: StartServer, sock_dir: Path) -> None:
    path = sock_dir / "reverse.sock"
    server = start_server("serve", "netserve.demo:ReverseHandler", "--bind", f"unix:{path}")
    server.serving()
    result = run_command(["client", f"unix:{path}", "hello"])
    assert (result.returncode, result.stdout) == (0, "olleh\n"), result.stderr


def test_repeatable_bind_serves_ipv6_loopback_too(start_server: StartServer) -> None:
    if not ipv6_loopback_works():
        pytest.skip("no IPv6 loopback on this machine")
    server = start_server(
        "serve", "netserve.demo:ReverseHandler", "--bind", "127.0.0.1:0", "--bind", "[::1]:0"
    )
    addresses = [parse_host_port(address) for _, address in server.serving(2)]
    assert sorted(host for host, _ in addresses) == ["127.0.0.1", "::1"]
    for address in addresses:
        with connect(address) as sock:
            assert exchange(sock, b"v4 or v6") == b"6v ro 4v\n"
    assert server.stop()[0] == 0


UDP_HANDLER_MODULE = """
import netserve


class Upper(netserve.DatagramRequestHandler):
    def handle(self):
        self.wfile.write(self.rfile.read().upper())
"""


def test_udp_serves_datagrams_with_a_user_handler(
    start_server: StartServer, tmp_path: Path
) -> None:
    (tmp_path / "netserve_test_udp_upper.py").write_text(textwrap.dedent(UDP_HANDLER_MODULE))
    paths = [str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    server = start_server(
        "serve", "netserve_test_udp_upper:Upper", "--udp", "--bind", "127.0.0.1:0", env=env
    )
    [(kind, address)] = server.serving()
    assert kind == "udp"
    host, port = parse_host_port(address)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(IO_TIMEOUT)
        for text in (b"one datagram", b"another"):
            sock.sendto(text, (host, port))
            reply, sender = sock.recvfrom(1024)
            assert (reply, sender) == (text.upper(), (host, port))
        client_port = sock.getsockname()[1]
    server.wait_for(rf"127\.0\.0\.1:{client_port} closed after", count=2)
    assert server.stop()[0] == 0


STDLIB_HANDLER_MODULE = """
import socketserver


class Shout(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(line.upper())
"""


@pytest.mark.parametrize("python_m", [False, True], ids=["netserve", "python -m netserve"])
def test_serves_a_stdlib_handler_from_a_module_of_the_current_directory(
    start_server: StartServer, tmp_path: Path, python_m: bool
) -> None:
    # as gunicorn and uvicorn do: the installed script finds ./module.py as `python -m` does;
    # and a handler written for the standard library's socketserver is served as it is
    (tmp_path / "netserve_test_shout.py").write_text(textwrap.dedent(STDLIB_HANDLER_MODULE))
    server = start_server(
        "serve",
        "netserve_test_shout:Shout",
        "--bind",
        "127.0.0.1:0",
        cwd=tmp_path,
        python_m=python_m,
    )
    with connect(server.tcp_address()) as sock:
        assert exchange(sock, b"hello") == b"HELLO\n"
    assert server.stop()[0] == 0


def test_serves_an_installed_handler_from_a_directory_that_is_gone(
    start_server: StartServer, tmp_path: Path
) -> None:
    # a release directory replaced by a deploy, say: the current directory is only a bonus
    gone = tmp_path / "gone"
    gone.mkdir()
    server = start_server(
        "serve",
        "netserve.demo:ReverseHandler",
        "--bind",
        "127.0.0.1:0",
        cwd=gone,
        remove_cwd_first=True,
    )
    with connect(server.tcp_address()) as sock:
        assert exchange(sock, b"abc") == b"cba\n"
    assert server.stop()[0] == 0


@pytest.mark.parametrize(
    "handler", ["netserve:DatagramRequestHandler", "socketserver:DatagramRequestHandler"]
)
def test_a_datagram_handler_without_udp_is_one_error_line(handler: str) -> None:
    result = run_command(["serve", handler, "--bind", "127.0.0.1:0"])
    assert result.returncode == 2
    assert "serve it with --udp" in assert_one_error_line(result.stderr)


def test_a_unix_path_that_cannot_be_bound_is_one_error_line(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    for path in (tmp_path / "a-file" / "app.sock", tmp_path / ("x" * 200)):
        result = run_command(["serve", "--bind", f"unix:{path}"])
        assert result.returncode == 2
        assert f"cannot listen on {path}: " in assert_one_error_line(result.stderr)


def test_a_unix_path_in_use_says_by_what(tmp_path: Path) -> None:
    not_a_socket = tmp_path / "notes.txt"
    not_a_socket.write_text("keep me")
    result = run_command(["serve", "--bind", f"unix:{not_a_socket}"])
    assert result.returncode == 2
    assert "exists and is not a socket" in assert_one_error_line(result.stderr)
    assert not_a_socket.read_text() == "keep me"
    live = tmp_path / "live.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(live))
        listener.listen()
        result = run_command(["serve", "--bind", f"unix:{live}"])
    assert result.returncode == 2
    assert "a server is listening there" in assert_one_error_line(result.stderr)


# --- bounded concurrency: the new options, for real -------------------------------------------

HALVES_MODULE = """
import logging

import netserve

log = logging.getLogger("netserve_test_halves")


class Halves(netserve.StreamRequestHandler):
    \"\"\"Logs that a request began, then answers its line once all of it has come.\"\"\"

    def handle(self):
        log.info("request from %s:%d began", *self.client_address[:2])
        line = self.rfile.readline()
        self.wfile.write(b"done " + line)
"""


LINUX_ONLY = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads /proc")


@pytest.fixture
def halves_env(tmp_path: Path) -> dict[str, str]:
    """An environment in which ``netserve_test_halves:Halves`` can be imported."""
    (tmp_path / "netserve_test_halves.py").write_text(textwrap.dedent(HALVES_MODULE))
    paths = [str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def proc_status(pid: int, field: str) -> int:
    """A number from ``/proc/PID/status``, such as ``Threads``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == field:
            return int(value.split()[0])
    pytest.fail(f"no {field} in /proc/{pid}/status")


def accept_queue(port: int) -> int:
    """How many connections wait in the accept queue of the loopback listener on *port*.

    For a listening socket, the ``rx_queue`` column of ``/proc/net/tcp`` is that count.
    """
    local = f"0100007F:{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[3] == "0A":  # 0A: LISTEN
            return int(fields[4].split(":")[1], 16)
    pytest.fail(f"no listener on 127.0.0.1:{port} in /proc/net/tcp")


def wait_until(condition: Callable[[], bool], what: str, timeout: float = LINE_TIMEOUT) -> None:
    """Check *condition* until it holds; fail after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    for _ in range(MAX_WAKEUPS):
        if condition():
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)  # polling /proc: there is nothing to wait on
    pytest.fail(f"{what}: not within {timeout} s")


def closed_without_reply(sock: socket.socket) -> bool:
    """Whether the server closes *sock* without sending anything (within IO_TIMEOUT)."""
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True


def test_serve_logs_the_mode_and_every_limit(start_server: StartServer) -> None:
    server = start_server(
        "serve",
        "netserve.demo:ReverseHandler",
        "--threads",
        "4",
        "--max-connections",
        "3",
        "--idle-timeout",
        "2",
        "--bind",
        "127.0.0.1:0",
    )
    address = server.tcp_address()
    with connect(address) as sock:
        assert exchange(sock, b"limits") == b"stimil\n"
    [startup] = server.wait_for(STARTUP)
    assert startup["version"] == netserve.__version__
    assert int(startup["pid"]) == server.proc.pid
    description = startup["description"]
    assert description == Config(threads=4, max_connections=3, idle_timeout=2.0).describe()
    for part in (
        "1 process",
        "thread pool of 4 (queue 64, overflow reject)",
        "max_connections=3",
        "max_connections_per_ip=none",
        "idle_timeout=2s",
        "drain_timeout=30s",
    ):
        assert part in description, description
    assert server.lines.index(startup.string) < len(server.lines) - 1
    assert SERVING.search(server.lines[server.lines.index(startup.string) + 1])
    assert server.stop()[0] == 0


@LINUX_ONLY
def test_thread_count_stays_bounded_with_many_clients(start_server: StartServer) -> None:
    threads, clients = 4, 20
    server = start_server(
        "serve", "netserve.demo:ReverseHandler", "--threads", str(threads), "--bind", "127.0.0.1:0"
    )
    address = server.tcp_address()
    pid = server.proc.pid
    with connect(address) as sock:
        assert exchange(sock, b"warm up") == b"pu mraw\n"
    idle_threads = proc_status(pid, "Threads")
    assert idle_threads <= threads + OTHER_THREADS
    socks: list[socket.socket] = []
    try:
        for _ in range(clients):
            socks.append(connect(address))
        # connect() returned: each is in the accept queue or was taken from it by the server
        wait_until(
            lambda: accept_queue(address[1]) == 0,
            f"the server accepting {clients} connections",
        )
        busy_threads = proc_status(pid, "Threads")
        assert busy_threads <= threads + OTHER_THREADS, f"{busy_threads} threads"
        assert busy_threads == idle_threads, "no thread is started for a connection"
        for n, sock in enumerate(socks[:threads]):  # the first ones are being served
            assert exchange(sock, b"%d" % n) == b"%d\n" % n
    finally:
        for sock in socks:
            sock.close()
    with connect(address) as sock:  # all of them ended: the pool serves again
        assert exchange(sock, b"after") == b"retfa\n"
    assert proc_status(pid, "Threads") <= threads + OTHER_THREADS
    assert server.stop()[0] == 0


def test_max_connections_refuses_a_third_client(start_server: StartServer) -> None:
    server = start_server(
        "serve", "netserve.demo:ReverseHandler", "--max-connections", "2", "--bind", "127.0.0.1:0"
    )
    address = server.tcp_address()
    with connect(address) as one, connect(address) as two:
        assert exchange(one, b"one") == b"eno\n"
        assert exchange(two, b"two") == b"owt\n"
        with connect(address) as third:
            port = third.getsockname()[1]
            started = time.monotonic()
            assert closed_without_reply(third)
            assert time.monotonic() - started < IO_TIMEOUT
        server.wait_for(
            rf"refused connection from 127\.0\.0\.1:{port}: max_connections \(1 refused so far\)"
        )
        assert exchange(two, b"still served") == b"devres llits\n"
    assert server.stop()[0] == 0
    assert "Traceback" not in server.stderr


def test_idle_timeout_drops_an_idle_client(start_server: StartServer) -> None:
    server = start_server(
        "serve", "netserve.demo:ReverseHandler", "--idle-timeout", "0.5", "--bind", "127.0.0.1:0"
    )
    address = server.tcp_address()
    with connect(address) as sock:
        port = sock.getsockname()[1]
        assert exchange(sock, b"then quiet") == b"teiuq neht\n"
        quiet_since = time.monotonic()
        assert closed_without_reply(sock)
        assert time.monotonic() - quiet_since >= 0.4, "not before the idle timeout"
    server.wait_for(rf"closed connection from 127\.0\.0\.1:{port}: idle for 0\.5 s")
    assert server.stop()[0] == 0
    assert "Traceback" not in server.stderr


def test_sigterm_lets_a_request_in_flight_finish(
    start_server: StartServer, halves_env: dict[str, str]
) -> None:
    server = start_server(
        "serve", "netserve_test_halves:Halves", "--bind", "127.0.0.1:0", env=halves_env
    )
    address = server.tcp_address()
    with connect(address) as sock:
        port = sock.getsockname()[1]
        sock.sendall(b"first half, ")
        server.wait_for(rf"request from 127\.0\.0\.1:{port} began")
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for(r"stopping gracefully$")
        assert server.proc.poll() is None, "the server waits for the request in flight"
        sock.sendall(b"second half\n")
        assert sock.recv(1024) == b"done first half, second half\n"
        assert sock.recv(1024) == b""
    try:
        code = server.proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"no exit within {STOP_TIMEOUT} s of the last request:\n{server.stderr}")
    assert code == 0, server.stderr
    server.wait_for(rf"127\.0\.0\.1:{port} closed after")
    assert "Traceback" not in server.stderr


def test_sigint_stops_promptly_with_a_request_in_flight(
    start_server: StartServer, halves_env: dict[str, str]
) -> None:
    server = start_server(
        "serve", "netserve_test_halves:Halves", "--bind", "127.0.0.1:0", env=halves_env
    )
    address = server.tcp_address()
    with connect(address) as sock:
        port = sock.getsockname()[1]
        sock.sendall(b"first half, ")
        server.wait_for(rf"request from 127\.0\.0\.1:{port} began")
        code, elapsed = server.stop(signal.SIGINT)
        assert closed_without_reply(sock), "the request was cut short"
    assert code == 0, server.stderr
    assert elapsed < STOP_TIMEOUT
    assert any(line.endswith("stopping now") for line in server.lines), server.stderr
    assert "Traceback" not in server.stderr


@pytest.mark.parametrize("policy", ["wait", "reject"])
def test_overflow_policy_is_accepted(start_server: StartServer, policy: str) -> None:
    server = start_server(
        "serve",
        "netserve.demo:ReverseHandler",
        "--threads",
        "1",
        "--max-queued",
        "0",
        "--overflow",
        policy,
        "--bind",
        "127.0.0.1:0",
    )
    address = server.tcp_address()
    with connect(address) as sock:
        assert exchange(sock, b"ok") == b"ko\n"
    [startup] = server.wait_for(STARTUP)
    assert f"thread pool of 1 (queue 0, overflow {policy})" in startup["description"]
    assert server.stop()[0] == 0


@LINUX_ONLY
def test_overflow_wait_holds_a_client_until_a_thread_is_free(start_server: StartServer) -> None:
    server = start_server(
        "serve",
        "netserve.demo:ReverseHandler",
        "--threads",
        "1",
        "--max-queued",
        "0",
        "--overflow",
        "wait",
        "--bind",
        "127.0.0.1:0",
    )
    address = server.tcp_address()
    with connect(address) as first, connect(address) as second:
        assert exchange(first, b"first") == b"tsrif\n"
        second.sendall(b"second\n")
        assert accept_queue(address[1]) == 1, "the only thread is busy: not accepted"
        first.close()
        assert second.recv(1024) == b"dnoces\n"
    assert server.stop()[0] == 0
    assert "refused" not in server.stderr


def test_overflow_reject_closes_a_client_while_the_pool_is_full(start_server: StartServer) -> None:
    server = start_server(
        "serve",
        "netserve.demo:ReverseHandler",
        "--threads",
        "1",
        "--max-queued",
        "0",
        "--overflow",
        "reject",
        "--bind",
        "127.0.0.1:0",
    )
    address = server.tcp_address()
    with connect(address) as first:
        assert exchange(first, b"first") == b"tsrif\n"
        with connect(address) as second:
            port = second.getsockname()[1]
            assert closed_without_reply(second)
        server.wait_for(rf"refused connection from 127\.0\.0\.1:{port}: busy")
    assert server.stop()[0] == 0


def test_overflow_other_policy_is_a_usage_error() -> None:
    result = run_command(["serve", "--overflow", "drop", "--bind", "127.0.0.1:0"])
    assert result.returncode == 2
    assert result.stderr.startswith("usage: netserve serve")
    assert "--overflow: invalid choice: 'drop'" in result.stderr


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--threads", "x"), ("--max-connections", "many"), ("--idle-timeout", "soon")],
)
def test_numeric_option_with_a_word_is_a_usage_error(flag: str, value: str) -> None:
    result = run_command(["serve", flag, value, "--bind", "127.0.0.1:0"])
    assert result.returncode == 2
    assert result.stderr.startswith("usage: netserve serve")
    assert f"{flag}: invalid" in result.stderr
    assert "Traceback" not in result.stderr


def test_out_of_range_option_is_one_error_line() -> None:
    result = run_command(["serve", "--max-connections", "0", "--bind", "127.0.0.1:0"])
    assert result.returncode == 2
    assert assert_one_error_line(result.stderr).startswith("netserve: error: max_connections: ")


# --- netserve client ---------------------------------------------------------------------


@pytest.fixture
def reverse_server() -> Iterator[tuple[str, int]]:
    """The demo handler served in this process, on a loopback port."""
    server = netserve.ThreadingTCPServer(("127.0.0.1", 0), ReverseHandler)
    server.daemon_threads = True
    with run_server(server, poll_interval=0.05) as address:
        yield address


def test_client_prints_the_reply(reverse_server: tuple[str, int]) -> None:
    host, port = reverse_server
    result = run_command(["client", f"{host}:{port}", "hello"])
    assert (result.returncode, result.stdout, result.stderr) == (0, "olleh\n", "")


def test_client_reads_lines_from_stdin(reverse_server: tuple[str, int]) -> None:
    host, port = reverse_server
    result = run_command(["client", f"{host}:{port}"], input="hello\nworld\n\nabc\n")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "olleh\ndlrow\n\ncba\n"


def test_python_m_netserve_client(reverse_server: tuple[str, int]) -> None:
    host, port = reverse_server
    result = subprocess.run(
        [*_python_m_netserve(), "client", f"{host}:{port}", "hello"],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert (result.returncode, result.stdout) == (0, "olleh\n"), result.stderr


def test_client_against_the_cli_server(start_server: StartServer) -> None:
    server = start_server("serve", "netserve.demo:ReverseHandler", "--bind", "127.0.0.1:0")
    host, port = server.tcp_address()
    result = run_command(["client", f"{host}:{port}", "hello"])
    assert (result.returncode, result.stdout) == (0, "olleh\n"), result.stderr


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound (so nobody else takes it), not listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_client_against_a_closed_port_exits_1(refused_port: int) -> None:
    result = run_command(["client", f"127.0.0.1:{refused_port}", "hello"])
    assert result.returncode == cli.EXIT_RUNTIME == 1
    line = assert_one_error_line(result.stderr)
    assert f"127.0.0.1:{refused_port}" in line
    assert "refused" in line.lower()
    assert result.stdout == ""


def test_client_when_the_server_hangs_up_exits_1() -> None:
    # SeedHandler answers one message, then closes: the second line gets no reply
    server = netserve.ThreadingTCPServer(("127.0.0.1", 0), SeedHandler)
    server.daemon_threads = True
    with run_server(server, poll_interval=0.05) as (host, port):
        result = run_command(["client", f"{host}:{port}"], input="abc\ndef\n")
    assert result.returncode == 1
    assert result.stdout == "cba\n"
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("netserve: ")
    assert "Traceback" not in result.stderr


# --- errors: one line, exit code 2 ---------------------------------------------------------


@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        ("netserve_no_such_module:Handler", "netserve_no_such_module"),
        ("netserve.demo:NoSuchHandler", "NoSuchHandler"),
        ("netserve.demo:__all__", "BaseRequestHandler"),
        ("socketserver:TCPServer", "BaseRequestHandler"),
        ("netserve.demo", "MODULE:CLASS"),
    ],
    ids=["missing module", "missing attribute", "not a class", "a server class", "no colon"],
)
def test_bad_handler_is_one_error_line(handler: str, expected: str) -> None:
    result = run_command(["serve", handler, "--bind", "127.0.0.1:0"])
    assert result.returncode == cli.EXIT_USAGE == 2
    assert expected in assert_one_error_line(result.stderr)


def test_busy_port_is_one_error_line() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        result = run_command(["serve", "--bind", f"127.0.0.1:{port}"])
    assert result.returncode == 2
    line = assert_one_error_line(result.stderr)
    assert f"127.0.0.1:{port}" in line
    assert "in use" in line


def test_busy_second_address_is_one_error_line(sock_dir: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        result = run_command(["serve", "--bind", "127.0.0.1:0", "--bind", f"127.0.0.1:{port}"])
    assert result.returncode == 2
    assert f"127.0.0.1:{port}" in assert_one_error_line(result.stderr)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("nohost.invalid:1", "nohost.invalid"),
        ("127.0.0.1:99999", "99999"),
        ("::1:80", "[::1]:80"),
        ("127.0.0.1", "HOST:PORT"),
        ("127.0.0.1:http", "'http'"),
        ("unix:", "unix:"),
    ],
)
def test_bad_address_is_one_error_line(address: str, expected: str) -> None:
    result = run_command(["serve", "--bind", address])
    assert result.returncode == 2
    line = assert_one_error_line(result.stderr)
    assert address in line
    assert expected in line


# --- help --------------------------------------------------------------------------------


def test_help_lists_every_command() -> None:
    result = run_command(["--help"])
    assert result.returncode == 0, result.stderr
    for word in ("serve", "client", "--version", "9999"):
        assert word in result.stdout


def test_serve_help_lists_every_option() -> None:
    result = run_command(["serve", "--help"])
    assert result.returncode == 0, result.stderr
    expected = {"MODULE:HANDLER", "--bind", "--udp", "--log-level"}
    expected |= {str(option.metavar if option.positional else option.flag) for option in options()}
    for word in sorted(expected):
        assert word in result.stdout


def test_client_help_lists_every_option() -> None:
    result = run_command(["client", "--help"])
    assert result.returncode == 0, result.stderr
    for word in ("HOST:PORT", "MESSAGE", "--timeout", "stdin"):
        assert word in result.stdout.replace("standard input", "stdin")


def test_version() -> None:
    result = run_command(["--version"])
    assert (result.returncode, result.stdout.strip()) == (0, f"netserve {netserve.__version__}")


# --- main() in this process --------------------------------------------------------------


def test_main_without_a_command_serves_the_demo_on_localhost_9999(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    served: list[Config] = []

    def fake_serve(config: Config) -> int:
        served.append(config)
        return 0

    monkeypatch.setattr(cli, "_serve", fake_serve)
    assert cli.main([]) == 0
    assert served == [Config()]
    assert served[0].bind == ("localhost:9999",)
    assert served[0].handler == "netserve.demo:ReverseLineHandler"


def test_main_builds_the_config_from_the_options(monkeypatch: pytest.MonkeyPatch) -> None:
    served: list[Config] = []

    def fake_serve(config: Config) -> int:
        served.append(config)
        return 0

    monkeypatch.setattr(cli, "_serve", fake_serve)
    argv = ["serve", "pkg.mod:H", "--bind", "127.0.0.1:0", "--bind", "unix:/tmp/x.sock"]
    assert cli.main([*argv, "--udp", "--log-level", "debug"]) == 0
    assert served == [
        Config(
            handler="pkg.mod:H",
            bind=("127.0.0.1:0", "unix:/tmp/x.sock"),
            udp=True,
            log_level="debug",
        )
    ]


@pytest.mark.parametrize(
    "argv",
    [
        ["bogus"],
        ["serve", "--log-level", "loud"],
        ["serve", "--bind"],
        ["serve", "--no-such-option"],
        ["client"],
        ["client", "127.0.0.1:1", "hi", "--timeout", "soon"],
        ["client", "127.0.0.1:1", "hi", "--timeout", "0"],
        ["client", "127.0.0.1:1", "hi", "--timeout", "-1"],
        ["client", "127.0.0.1:1", "hi", "--timeout", "inf"],
        ["client", "127.0.0.1:1", "hi", "--timeout", "nan"],
    ],
)
def test_main_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: netserve")
    assert "error: " in err.splitlines()[-1]


@pytest.mark.parametrize("argv", [["--help"], ["serve", "--help"], ["client", "--help"]])
def test_main_help_exits_0(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("usage: netserve")


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--bind", "127.0.0.1:99999"],
        ["serve", "--bind", "::1:80"],
        ["serve", "no_colon_here"],
        ["client", "127.0.0.1:99999", "hi"],
        ["client", "not-an-address", "hi"],
    ],
)
def test_main_returns_2_for_a_bad_value(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert_one_error_line(captured.err)


def test_main_returns_2_for_a_bad_handler(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(logging, "basicConfig", lambda **kwargs: None)  # leave logging alone
    assert cli.main(["serve", "netserve.demo:Nope", "--bind", "127.0.0.1:0"]) == 2
    assert "Nope" in assert_one_error_line(capsys.readouterr().err)


def test_main_client(reverse_server: tuple[str, int], capsys: pytest.CaptureFixture[str]) -> None:
    host, port = reverse_server
    assert cli.main(["client", f"{host}:{port}", "hello world"]) == 0
    assert capsys.readouterr() == ("dlrow olleh\n", "")


def test_main_client_reads_stdin(
    reverse_server: tuple[str, int],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    host, port = reverse_server
    monkeypatch.setattr(sys, "stdin", io.StringIO("one\ntwo\nthree"))
    assert cli.main(["client", f"{host}:{port}"]) == 0
    assert capsys.readouterr() == ("eno\nowt\neerht\n", "")


def test_main_client_refused(refused_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["client", f"127.0.0.1:{refused_port}", "hi"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"127.0.0.1:{refused_port}" in assert_one_error_line(captured.err)


def test_main_client_times_out(capsys: pytest.CaptureFixture[str]) -> None:
    # a listening socket that never accepts: the connection is made, no reply ever comes
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        host, port = silent.getsockname()
        started = time.monotonic()
        code = cli.main(["client", f"{host}:{port}", "hi", "--timeout", "0.2"])
    assert code == 1
    assert time.monotonic() - started < IO_TIMEOUT
    assert "timed out" in assert_one_error_line(capsys.readouterr().err)


def test_ctrl_c_in_the_client_exits_130_without_a_traceback() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # never accepts: the client waits for a reply
        host, port = silent.getsockname()
        client = subprocess.Popen(
            [*_netserve_command(), "client", f"{host}:{port}", "hi"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            silent.settimeout(IO_TIMEOUT)
            conn, _ = silent.accept()  # taken off the backlog: the client has connected
            with conn:
                assert conn.recv(16) == b"hi\n"  # sent: now it waits for the reply
                client.send_signal(signal.SIGINT)
                _, stderr = client.communicate(timeout=COMMAND_TIMEOUT)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait(COMMAND_TIMEOUT)
    assert client.returncode == 130
    assert "Traceback" not in stderr


# --- handler kinds: threads or an event loop ---------------------------------------------------


@pytest.mark.parametrize(
    ("handler", "loop", "transport"),
    [
        ("netserve.demo:ReverseLineHandler", "asyncio", "epoll"),
        ("netserve.demo:ReverseLineHandler", "uvloop", "epoll"),
        ("netserve.demo:AsyncReverseHandler", "asyncio", "epoll"),
        ("netserve.demo:AsyncReverseHandler", "uvloop", "epoll"),
        ("netserve.demo:ReverseLineHandler", "uvloop", "loop"),
        ("netserve.demo:AsyncReverseHandler", "asyncio", "loop"),
    ],
)
def test_event_loop_handlers_are_detected_and_run_on_the_chosen_loop(
    start_server: StartServer, handler: str, loop: str, transport: str
) -> None:
    server = start_server(
        "serve", handler, "--loop", loop, "--transport", transport, "--bind", "127.0.0.1:0"
    )
    address = server.tcp_address()
    with connect(address) as sock:
        assert exchange(sock, b"kinds") == b"sdnik\n"
        assert exchange(sock, b"again") == b"niaga\n"
    [startup] = server.wait_for(STARTUP)
    assert f"event loop ({loop}, {transport} transports;" in startup["description"]
    assert server.stop()[0] == 0


def test_the_demo_runs_on_the_event_loop_by_default(start_server: StartServer) -> None:
    server = start_server("--bind", "127.0.0.1:0")
    address = server.tcp_address()
    with connect(address) as sock:
        assert exchange(sock, b"fast") == b"tsaf\n"
    [startup] = server.wait_for(STARTUP)
    assert "event loop (" in startup["description"]
    assert server.stop()[0] == 0


def test_thread_handler_still_runs_on_threads(start_server: StartServer) -> None:
    server = start_server("serve", "netserve.demo:ReverseHandler", "--bind", "127.0.0.1:0")
    address = server.tcp_address()
    with connect(address) as sock:
        assert exchange(sock, b"threads") == b"sdaerht\n"
    [startup] = server.wait_for(STARTUP)
    assert "thread pool of 32" in startup["description"]
    assert server.stop()[0] == 0


def test_udp_with_an_event_loop_handler_is_one_error_line() -> None:
    result = run_command(
        ["serve", "netserve.demo:ReverseLineHandler", "--udp", "--bind", "127.0.0.1:0"]
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("netserve: error:")]
    assert len(errors) == 1, result.stderr
    assert "udp" in errors[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("handler", ["ReverseLineHandler", "AsyncReverseHandler", "ReverseHandler"])
def test_max_requests_recycles_a_worker_of_any_handler_kind(
    start_server: StartServer, handler: str
) -> None:
    server = start_server(
        "serve",
        f"netserve.demo:{handler}",
        "--workers",
        "1",
        "--max-requests",
        "3",
        "--bind",
        "127.0.0.1:0",
    )
    address = server.tcp_address()
    for n in range(3):  # three connections: the worker's last
        with connect(address) as sock:
            assert exchange(sock, b"conn%d" % n) == b"%dnnoc\n" % n
    [recycled] = server.wait_for(r"worker pid (\d+): 3 requests served \(max_requests\)")
    # the replacement serves, with the old one gone
    serving = server.wait_for(rf"\[(\d+)\] INFO serving netserve\.demo:{handler} on tcp", count=2)
    assert serving[1][1] != recycled[1]
    server.wait_for(rf"worker pid {recycled[1]} \(age \d+\) exited")
    with connect(address) as sock:
        assert exchange(sock, b"next") == b"txen\n"
    assert server.stop()[0] == 0


def test_event_loop_handler_with_workers(start_server: StartServer) -> None:
    server = start_server(
        "serve", "netserve.demo:ReverseLineHandler", "--workers", "2", "--bind", "127.0.0.1:0"
    )
    server.wait_for(r"serving netserve\.demo:ReverseLineHandler on tcp", count=2)
    address = server.tcp_address()
    with connect(address) as sock:
        assert exchange(sock, b"workers") == b"srekrow\n"
    assert server.stop()[0] == 0
