"""The worker's side, in-process: heartbeats, readiness, request counting, stop requests,
parent-death detection, the pipe protocol, and the exit status of a forked worker."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from netserve import ConfigError
from netserve.supervisor import EXIT_BOOT_ERROR, EXIT_CRASH, Supervisor, Worker
from netserve.supervisor._protocol import (
    BOOT_ERROR,
    HEARTBEAT,
    MAX_BOOT_ERROR_BYTES,
    READY,
    STOPPING,
    Message,
    MessageReader,
    encode_boot_error,
)
from netserve.supervisor._worker import install_signal_handlers, run_worker

pytestmark = pytest.mark.timeout(30)

#: How long a test waits for the stop thread to run a callback, or a forked child to exit.
WAIT = 10.0


@pytest.fixture
def channel() -> Iterator[tuple[int, int]]:
    """A pipe like the supervisor's: (read end, non-blocking write end for the worker)."""
    reader, writer = os.pipe()
    os.set_blocking(reader, False)
    os.set_blocking(writer, False)
    try:
        yield reader, writer
    finally:
        for fd in (reader, writer):
            with contextlib.suppress(OSError):
                os.close(fd)


@pytest.fixture
def make_worker(channel: tuple[int, int]) -> Iterator[Callable[..., Worker]]:
    workers: list[Worker] = []

    def make(**options: object) -> Worker:
        settings: dict[str, object] = {"age": 1, "parent_pid": os.getppid()}
        settings.update(options)
        worker = Worker(channel=channel[1], **settings)  # type: ignore[arg-type]
        workers.append(worker)
        return worker

    try:
        yield make
    finally:
        for worker in workers:
            worker.close()


def sent(channel: tuple[int, int]) -> bytes:
    """Everything the worker wrote so far."""
    try:
        return os.read(channel[0], 65536)
    except BlockingIOError:
        return b""


class Recorder:
    """An on_stop callback that records its calls and the thread they ran in."""

    def __init__(self) -> None:
        self.calls: list[bool] = []
        self.threads: list[threading.Thread] = []
        self._changed = threading.Condition()

    def __call__(self, graceful: bool) -> None:
        with self._changed:
            self.calls.append(graceful)
            self.threads.append(threading.current_thread())
            self._changed.notify_all()

    def wait(self, count: int = 1) -> list[bool]:
        with self._changed:
            called = self._changed.wait_for(lambda: len(self.calls) >= count, WAIT)
        assert called, f"on_stop callback called {len(self.calls)} times, not {count}"
        return self.calls


def test_notify_writes_at_most_one_heartbeat_per_interval(
    make_worker: Callable[..., Worker], channel: tuple[int, int]
) -> None:
    worker = make_worker(worker_timeout=40.0)  # interval: min(40 / 4, 1 s) = 1 s
    for _ in range(10_000):
        worker.notify()
    assert sent(channel) == HEARTBEAT
    assert not worker.stopping


def test_notify_writes_again_once_the_interval_passed(
    make_worker: Callable[..., Worker], channel: tuple[int, int]
) -> None:
    worker = make_worker(worker_timeout=0.2)  # interval 50 ms
    received = b""
    deadline_calls = 0
    while received.count(HEARTBEAT) < 2:
        worker.notify()
        received += sent(channel)
        deadline_calls += 1
        select.select([], [], [], 0.01)
        assert deadline_calls < WAIT / 0.01, "no second heartbeat"


def test_notify_notices_that_the_parent_changed(make_worker: Callable[..., Worker]) -> None:
    worker = make_worker(parent_pid=os.getpid())  # not our parent: as if it had died
    recorder = Recorder()
    worker.on_stop(recorder)
    worker.notify()
    assert worker.stopping
    assert recorder.wait() == [True]


def test_notify_notices_a_broken_pipe(
    make_worker: Callable[..., Worker], channel: tuple[int, int], caplog: pytest.LogCaptureFixture
) -> None:
    worker = make_worker()
    recorder = Recorder()
    worker.on_stop(recorder)
    os.close(channel[0])  # the supervisor's end is gone
    with caplog.at_level(logging.WARNING, logger="netserve"):
        worker.notify()
    assert worker.stopping
    assert recorder.wait() == [True]
    assert "pipe to the supervisor is broken" in caplog.text


def test_ready_is_sent_once(make_worker: Callable[..., Worker], channel: tuple[int, int]) -> None:
    worker = make_worker()
    for _ in range(3):
        worker.ready()
    assert sent(channel) == READY


def test_count_request_stops_once_at_max_requests(
    make_worker: Callable[..., Worker], channel: tuple[int, int]
) -> None:
    worker = make_worker(max_requests=50)
    recorder = Recorder()
    worker.on_stop(recorder)

    def count_twenty() -> None:
        for _ in range(20):
            worker.count_request()

    threads = [threading.Thread(target=count_twenty) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert worker.stopping
    assert recorder.wait() == [True]
    assert sent(channel) == STOPPING  # the supervisor starts a replacement at once
    worker.count_request()
    assert recorder.calls == [True]


def test_max_requests_zero_never_stops(make_worker: Callable[..., Worker]) -> None:
    worker = make_worker(max_requests=0)
    for _ in range(1000):
        worker.count_request()
    assert not worker.stopping


@contextlib.contextmanager
def worker_signal_handlers(worker: Worker) -> Iterator[None]:
    """The worker's handlers for TERM, INT and QUIT, with pytest's put back afterwards."""
    previous = {signum: signal.getsignal(signum) for signum in (2, 3, 15)}
    install_signal_handlers(worker)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@pytest.mark.parametrize(
    ("signum", "graceful"),
    [(signal.SIGTERM, True), (signal.SIGINT, False), (signal.SIGQUIT, False)],
)
def test_signals_request_a_stop_and_callbacks_run_in_the_stop_thread(
    make_worker: Callable[..., Worker], signum: signal.Signals, graceful: bool
) -> None:
    worker = make_worker()
    with worker_signal_handlers(worker):
        os.kill(os.getpid(), signum)  # the handler runs before kill() returns to Python code
        assert worker.stopping
    recorder = Recorder()
    worker.on_stop(recorder)  # registered after the stop: called at once, in the stop thread
    assert recorder.wait() == [graceful]
    assert recorder.threads[0] is not threading.current_thread()
    worker._request_stop(graceful=True, reason="again")  # never softens a stop: ignored
    assert worker._graceful is graceful
    assert recorder.calls == [graceful]
    worker._request_stop(graceful=False, reason="now")  # a fast stop cuts a graceful one short
    assert worker._graceful is False
    if graceful:
        assert recorder.wait(count=2) == [True, False]
    else:
        assert recorder.calls == [False]  # already fast: nothing new


def test_callbacks_run_once_in_order_and_errors_are_logged(
    make_worker: Callable[..., Worker], caplog: pytest.LogCaptureFixture
) -> None:
    worker = make_worker()
    order: list[str] = []

    def failing(graceful: bool) -> None:
        order.append("failing")
        raise RuntimeError("callback broke")

    last = Recorder()
    worker.on_stop(failing)
    worker.on_stop(last)
    with caplog.at_level(logging.ERROR, logger="netserve"):
        worker._request_stop(graceful=True, reason="test")
        worker._request_stop(graceful=True, reason="again")  # ignored: already stopping so
        assert last.wait() == [True]
    assert order == ["failing"]
    assert "callback broke" in caplog.text


def test_message_reader_reassembles_split_messages() -> None:
    reader = MessageReader()
    data = HEARTBEAT + READY + encode_boot_error("No module named 'x'") + b"?" + STOPPING
    messages = []
    for index in range(len(data)):  # one byte at a time: the worst split there is
        messages += reader.feed(data[index : index + 1])
    assert messages == [
        Message(HEARTBEAT),
        Message(READY),
        Message(BOOT_ERROR, "No module named 'x'"),
        Message(STOPPING),
    ]


def test_boot_error_fits_one_atomic_pipe_write() -> None:
    encoded = encode_boot_error("é" * 10_000)
    assert len(encoded) <= getattr(select, "PIPE_BUF", 512)
    (message,) = MessageReader().feed(encoded)
    assert set(message.text) == {"é"}  # cut between two characters, not inside one
    assert len(message.text.encode()) <= MAX_BOOT_ERROR_BYTES


def _fork_worker(target: Callable[[list[socket.socket], Worker], None]) -> tuple[int, bytes]:
    """Run *target* the way a supervisor's child does; return its exit code and messages."""
    reader, writer = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(reader)
            run_worker(target, [], lambda: Worker(age=1, parent_pid=parent, channel=writer))
        finally:
            os._exit(99)  # run_worker never returns; this is a guard
    os.close(writer)
    try:
        chunks = []
        while chunk := os.read(reader, 4096):
            chunks.append(chunk)
    finally:
        os.close(reader)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks)


def _returns(sockets: list[socket.socket], worker: Worker) -> None:
    worker.ready()


def _import_fails(sockets: list[socket.socket], worker: Worker) -> None:
    import netserve_test_no_such_module  # type: ignore[import-not-found]  # noqa: F401


def _crashes(sockets: list[socket.socket], worker: Worker) -> None:
    raise ValueError("target bug")


def _exits(sockets: list[socket.socket], worker: Worker) -> None:
    raise SystemExit(7)


def test_forked_worker_exit_status() -> None:
    assert _fork_worker(_returns) == (0, READY)
    assert _fork_worker(_crashes) == (EXIT_CRASH, b"")
    assert _fork_worker(_exits) == (7, b"")
    code, data = _fork_worker(_import_fails)
    assert code == EXIT_BOOT_ERROR
    assert MessageReader().feed(data) == [
        Message(BOOT_ERROR, "ModuleNotFoundError: No module named 'netserve_test_no_such_module'")
    ]


@pytest.mark.parametrize(
    "options",
    [
        {"workers": 0},
        {"worker_timeout": 0},
        {"max_requests": -1},
        {"max_requests_jitter": -1},
        {"graceful_timeout": -1},
    ],
)
def test_supervisor_rejects_bad_options(options: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        Supervisor(_returns, [], **options)  # type: ignore[arg-type]


def test_run_outside_the_main_thread_raises_and_changes_nothing() -> None:
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGHUP)}
    errors: list[BaseException] = []

    def run() -> None:
        try:
            Supervisor(_returns, [], workers=1).run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(WAIT)
    assert len(errors) == 1
    assert isinstance(errors[0], ValueError)
    assert {signum: signal.getsignal(signum) for signum in before} == before
