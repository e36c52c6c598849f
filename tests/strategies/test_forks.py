"""ForkPerRequest: a child per request, exit status from serve(), only its own children reaped."""

from __future__ import annotations

import os
import signal
import time

import pytest

from netserve.strategies import ForkPerRequest

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _own_child(read_fd: int, write_fd: int) -> int:
    """Fork a child that is not the strategy's: it exits once *read_fd* reaches EOF."""
    pid = os.fork()
    if pid == 0:
        try:
            os.close(write_fd)
            os.read(read_fd, 1)
        finally:
            os._exit(7)
    return pid


def _wait_for_byte(read_fd: int, write_fd: int) -> None:
    """In a child: return once the parent writes a byte, or closes its end."""
    os.close(write_fd)  # else the child's own copy keeps the pipe from reaching EOF
    os.read(read_fd, 1)


def test_child_runs_serve_and_the_parent_reaps_it() -> None:
    strategy = ForkPerRequest()
    read_fd, write_fd = os.pipe()
    try:
        strategy.submit(None, lambda: os.write(write_fd, b"ran"))
        assert os.read(read_fd, 3) == b"ran"
    finally:
        os.close(read_fd)
        os.close(write_fd)
    assert strategy.has_forked
    assert strategy.drain(deadline=time.monotonic() + 5)
    assert strategy.children == set()


def test_exit_status_says_whether_serve_raised() -> None:
    strategy = ForkPerRequest()
    strategy.submit(None, lambda: None)
    strategy.submit(None, lambda: 1 / 0)
    ok, failed = sorted(strategy.children)[0], sorted(strategy.children)[1]
    statuses = {pid: os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in (ok, failed)}
    assert sorted(statuses.values()) == [0, 1]
    strategy.collect()  # both were reaped by us above: the strategy forgets them
    assert strategy.children == set()


def test_reaps_only_its_own_children() -> None:
    strategy = ForkPerRequest()
    read_fd, write_fd = os.pipe()
    stranger = _own_child(read_fd, write_fd)
    try:
        strategy.submit(None, lambda: None)
        assert strategy.drain(deadline=time.monotonic() + 5)
        strategy.collect(blocking=True)
        # the stranger is still ours to reap: the strategy never waited on it
        assert os.waitpid(stranger, os.WNOHANG) == (0, 0)
    finally:
        os.close(write_fd)
        os.close(read_fd)
    _, status = os.waitpid(stranger, 0)
    assert os.waitstatus_to_exitcode(status) == 7


def test_collect_waits_below_max_children() -> None:
    strategy = ForkPerRequest(max_children=lambda: 2)
    read_fd, write_fd = os.pipe()
    for _ in range(2):
        strategy.submit(None, lambda: _wait_for_byte(read_fd, write_fd))
    assert len(strategy.children) == 2
    os.write(write_fd, b"x")  # lets exactly one child exit
    strategy.collect()  # blocks until fewer than 2 are alive
    assert len(strategy.children) == 1
    os.close(write_fd)
    os.close(read_fd)
    assert strategy.drain(deadline=time.monotonic() + 5)


def test_drain_times_out_while_a_child_runs() -> None:
    strategy = ForkPerRequest()
    read_fd, write_fd = os.pipe()
    strategy.submit(None, lambda: _wait_for_byte(read_fd, write_fd))
    assert strategy.drain(deadline=time.monotonic() + 0.05) is False
    os.close(write_fd)
    os.close(read_fd)
    assert strategy.drain(deadline=time.monotonic() + 5)


def test_a_child_is_reapable_only_once_its_token_is_kept() -> None:
    # another thread's collect() may reap a child from the moment it is in ``children``:
    # its token must be kept by then, or on_exit would never get it (a count leaked)
    seen: list[tuple[int, bool]] = []
    exited: list[object] = []

    def on_fork(request: object, pid: int) -> str:
        seen.append((pid, pid in strategy.children))
        return f"token {pid}"

    strategy = ForkPerRequest(on_fork=on_fork, on_exit=exited.append)
    strategy.submit("request", lambda: None)
    [(pid, reapable)] = seen
    assert not reapable
    strategy.collect(blocking=True)
    assert exited == [f"token {pid}"]


def test_a_child_dies_of_sigterm_at_once_not_of_the_parents_handler() -> None:
    # the parent's Python handler, inherited, would run in the child and act on the
    # parent's state; a child must die of SIGTERM from its first instruction on
    read_fd, write_fd = os.pipe()

    def parents_handler(signum: int, frame: object) -> None:
        os.write(write_fd, b"parent's handler ran")

    previous = signal.signal(signal.SIGTERM, parents_handler)
    try:
        strategy = ForkPerRequest()
        strategy.submit(None, lambda: os.kill(os.getpid(), signal.SIGTERM))
        [pid] = strategy.children
        _, status = os.waitpid(pid, 0)
    finally:
        signal.signal(signal.SIGTERM, previous)
        os.close(write_fd)
    with os.fdopen(read_fd, "rb") as reader:
        assert reader.read() == b""
    assert os.WIFSIGNALED(status)
    assert os.WTERMSIG(status) == signal.SIGTERM


def test_a_child_leaves_its_siblings_alone() -> None:
    # a drain or collect() run in a child (a handler calling server_close(), say) must
    # not wait for, reap or signal the parent's other children
    read_fd, write_fd = os.pipe()
    strategy = ForkPerRequest()
    try:
        strategy.submit(None, lambda: _wait_for_byte(read_fd, write_fd))
        [sibling] = strategy.children

        def in_child() -> None:
            assert strategy.children == set()
            assert strategy.drain(deadline=time.monotonic())
            strategy.collect(blocking=True)

        strategy.submit(None, in_child)
        [child] = strategy.children - {sibling}
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert os.waitpid(sibling, os.WNOHANG) == (0, 0)  # alive: waiting for its byte
        os.write(write_fd, b"x")
    finally:
        os.close(read_fd)
        os.close(write_fd)
    strategy.collect(blocking=True)
