"""ThreadPool: fixed workers started up front, a bounded queue, reject or wait on overflow."""

from __future__ import annotations

import logging
import sys
import threading
import time

import pytest

from netserve import ConfigError
from netserve.strategies import ThreadPool
from netserve.supervisor import AcceptBalance, LoadBoard

WAIT = 5.0


def _blocker(started: threading.Semaphore, release: threading.Event) -> object:
    def serve() -> None:
        started.release()
        release.wait(WAIT)

    return serve


def test_threads_start_up_front_and_are_reused() -> None:
    before = threading.active_count()
    pool = ThreadPool(max_workers=4, max_queued=0)
    try:
        assert threading.active_count() == before + 4
        names: set[str] = set()
        for _ in range(40):
            assert pool.submit(None, lambda: names.add(threading.current_thread().name))
            assert pool.drain(time.monotonic() + WAIT)
        assert threading.active_count() == before + 4
        assert 1 <= len(names) <= 4
    finally:
        pool.close()
    assert threading.active_count() == before


def test_reject_when_workers_and_queue_are_full() -> None:
    pool = ThreadPool(max_workers=2, max_queued=1, overflow="reject")
    started, release = threading.Semaphore(0), threading.Event()
    try:
        for _ in range(2):
            assert pool.submit(None, _blocker(started, release))
        for _ in range(2):
            assert started.acquire(timeout=WAIT)
        assert pool.submit(None, lambda: None)  # queued
        assert pool.in_flight == 3
        assert pool.submit(None, lambda: None) is False
        assert pool.has_capacity()  # "reject" never asks the server to stop accepting
    finally:
        release.set()
        assert pool.drain(time.monotonic() + WAIT)
        pool.close()


def test_wait_reports_no_capacity_and_calls_back_when_room_comes() -> None:
    pool = ThreadPool(max_workers=1, max_queued=1, overflow="wait")
    came_back = threading.Event()
    pool.on_capacity(came_back.set)
    started, release = threading.Semaphore(0), threading.Event()
    try:
        assert pool.submit(None, _blocker(started, release))
        assert started.acquire(timeout=WAIT)
        assert pool.has_capacity()
        assert pool.submit(None, lambda: None)
        assert not pool.has_capacity()
        assert not came_back.is_set()
        release.set()
        assert came_back.wait(WAIT)
        assert pool.drain(time.monotonic() + WAIT)
        assert pool.has_capacity()
    finally:
        release.set()
        pool.close()


def test_wait_submit_blocks_until_room() -> None:
    pool = ThreadPool(max_workers=1, max_queued=0, overflow="wait")
    started, release = threading.Semaphore(0), threading.Event()
    try:
        assert pool.submit(None, _blocker(started, release))
        assert started.acquire(timeout=WAIT)
        threading.Timer(0.05, release.set).start()
        began = time.monotonic()
        assert pool.submit(None, lambda: None)
        assert time.monotonic() - began >= 0.04
    finally:
        release.set()
        pool.close()


def test_drain_times_out_then_succeeds() -> None:
    pool = ThreadPool(max_workers=1, max_queued=4)
    started, release = threading.Semaphore(0), threading.Event()
    try:
        pool.submit(None, _blocker(started, release))
        pool.submit(None, lambda: None)
        assert pool.drain(time.monotonic() + 0.05) is False
        release.set()
        assert pool.drain(time.monotonic() + WAIT)
        assert pool.in_flight == 0
    finally:
        pool.close()


def test_an_escaped_exception_is_logged_and_the_worker_survives(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = ThreadPool(max_workers=1, max_queued=2)
    done = threading.Event()
    try:
        pool.submit(None, lambda: 1 / 0)
        pool.submit(None, done.set)
        assert done.wait(WAIT)
    finally:
        pool.close()
    assert "escaped its error handling" in caplog.text
    assert "ZeroDivisionError" in caplog.text


def test_close_serves_what_was_queued_then_refuses() -> None:
    pool = ThreadPool(max_workers=1, max_queued=4)
    ran: list[int] = []
    for n in range(3):
        pool.submit(None, lambda n=n: ran.append(n))
    pool.close()  # returns at once: a fast stop does not wait for the queue
    assert pool.submit(None, lambda: None) is False
    assert pool.drain(time.monotonic() + WAIT)
    assert ran == [0, 1, 2]  # what was queued before close() was still served


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"max_workers": 0}, "max_workers"),
        ({"max_queued": -1}, "max_queued"),
        ({"overflow": "drop"}, "overflow"),
    ],
)
def test_bad_settings_raise_config_error(kwargs: dict[str, object], option: str) -> None:
    with pytest.raises(ConfigError, match=f"^{option}: "):
        ThreadPool(**kwargs)  # type: ignore[arg-type]


def test_threads_the_system_refuses_are_a_config_error_and_the_started_ones_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_start = threading.Thread.start
    started: list[threading.Thread] = []

    def start_three_then_refuse(thread: threading.Thread) -> None:
        if len(started) == 3:
            raise RuntimeError("can't start new thread")
        started.append(thread)
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start_three_then_refuse)
    with pytest.raises(ConfigError, match=r"cannot start 8 threads .* refused one after 3"):
        ThreadPool(max_workers=8)
    for thread in started:
        thread.join(WAIT)
        assert not thread.is_alive()


def test_pause_when_busy_asks_the_server_to_stop_accepting_once_no_thread_is_idle() -> None:
    pool = ThreadPool(max_workers=2, max_queued=8, pause_when_busy=True)
    came_back = threading.Event()
    pool.on_capacity(came_back.set)
    started, release = threading.Semaphore(0), threading.Event()
    try:
        assert pool.submit(None, _blocker(started, release))
        assert pool.has_capacity()  # one thread still idle
        assert pool.submit(None, _blocker(started, release))
        assert not pool.has_capacity()  # both busy: leave connections to other workers
        assert pool.submit(None, lambda: None)  # a race still finds room in the queue
        release.set()
        assert came_back.wait(WAIT)
        assert pool.drain(time.monotonic() + WAIT)
        assert pool.has_capacity()
    finally:
        release.set()
        pool.close()


class FakeShare:
    """A load share that counts what the pool tells it and answers as told."""

    recheck_interval = 0.25

    def __init__(self) -> None:
        self.open = 0
        self.allow = True
        self.lock = threading.Lock()
        self.rooms: list[bool] = []

    def opened(self) -> None:
        with self.lock:
            self.open += 1

    def closed(self) -> None:
        with self.lock:
            self.open -= 1

    def allows(self) -> bool:
        return self.allow

    def set_room(self, key: int, room: bool) -> None:
        self.rooms.append(room)


def test_a_share_is_told_of_each_request_and_can_stop_accepting() -> None:
    share = FakeShare()
    pool = ThreadPool(max_workers=2, max_queued=8, share=share)
    started, release = threading.Semaphore(0), threading.Event()
    try:
        assert pool.has_capacity()
        assert pool.recheck_after() is None
        assert pool.submit(None, _blocker(started, release))
        assert started.acquire(timeout=WAIT)
        assert share.open == 1
        share.allow = False  # the other workers hold fewer: leave them the next one
        assert not pool.has_capacity()
        assert pool.recheck_after() == 0.25  # nobody calls back for other processes' counts
        share.allow = True
        assert pool.has_capacity()
        assert pool.recheck_after() is None
        release.set()
        assert pool.drain(time.monotonic() + WAIT)
        assert share.open == 0
    finally:
        release.set()
        pool.close()


def test_a_pool_without_room_waits_for_its_callback_not_for_the_share() -> None:
    share = FakeShare()
    share.allow = False
    pool = ThreadPool(max_workers=1, max_queued=4, pause_when_busy=True, share=share)
    started, release = threading.Semaphore(0), threading.Event()
    try:
        assert not pool.has_capacity()
        assert pool.recheck_after() == 0.25  # the share said no
        share.allow = True
        assert pool.submit(None, _blocker(started, release))
        assert started.acquire(timeout=WAIT)
        assert not pool.has_capacity()  # its one thread is busy
        assert pool.recheck_after() is None  # on_capacity will call when it is free
    finally:
        release.set()
        pool.close()


def test_a_saturated_pool_says_so_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="netserve")
    pool = ThreadPool(max_workers=1, max_queued=8)
    started, release = threading.Semaphore(0), threading.Event()
    try:
        assert pool.submit(None, _blocker(started, release))
        assert started.acquire(timeout=WAIT)
        assert not [r for r in caplog.records if "threads are busy" in r.getMessage()]
        assert pool.submit(None, lambda: None)  # waits for the one busy thread
        assert pool.submit(None, lambda: None)
        saturated = [r for r in caplog.records if "threads are busy" in r.getMessage()]
        assert len(saturated) == 1  # the second is held back for SATURATION_LOG_INTERVAL
        assert "all 1 threads are busy; requests waiting for one: 1" in saturated[0].getMessage()
    finally:
        release.set()
        pool.close()


def test_a_full_pool_tells_its_share_and_its_peers_take_the_connection() -> None:
    # two workers with two listeners each; worker A's pool on X is full: without telling
    # the board, worker B (more connections, idle threads on X) would decline X for good
    board = LoadBoard(slots=2)
    balance_a, balance_b = (AcceptBalance(board, board.claim() or 0) for _ in range(2))
    balance_a.start_accepting()
    balance_b.start_accepting()
    release = threading.Event()

    def pool(share: AcceptBalance) -> ThreadPool:
        return ThreadPool(4, 0, pause_when_busy=True, share=share)

    a_x, a_y, b_x, b_y = pool(balance_a), pool(balance_a), pool(balance_b), pool(balance_b)
    try:
        for _ in range(4):
            assert a_x.submit(None, release.wait)
            assert b_y.submit(None, release.wait)
        for _ in range(2):
            assert b_x.submit(None, release.wait)
        assert not a_x.has_capacity()  # full: it says so on the board
        assert b_x.has_capacity()  # so B takes X's next connection
    finally:
        release.set()
        for each in (a_x, a_y, b_x, b_y):
            each.close()


def test_the_share_hears_when_room_goes_and_comes_back() -> None:
    share = FakeShare()
    pool = ThreadPool(max_workers=1, max_queued=4, pause_when_busy=True, share=share)
    started, release = threading.Semaphore(0), threading.Event()
    try:
        assert pool.has_capacity()
        assert share.rooms == []  # nothing changed
        assert pool.submit(None, _blocker(started, release))
        assert not pool.has_capacity()
        assert share.rooms == [False]
        release.set()
        assert pool.drain(time.monotonic() + WAIT)
        assert pool.has_capacity()
        assert share.rooms == [False, True]
    finally:
        release.set()
        pool.close()


def test_a_pool_in_a_forked_child_starts_its_threads_once_however_many_submit() -> None:
    # two servers may share a pool: their first requests in the child may come together
    pool = ThreadPool(max_workers=16, max_queued=16)
    release = threading.Event()
    previous_interval = sys.getswitchinterval()
    try:
        pool._start_afresh()  # as the fork hook does in a child: no threads yet
        before = set(threading.enumerate())
        barrier = threading.Barrier(4)

        def first_request() -> None:
            barrier.wait(5)
            pool.submit(None, lambda: release.wait(5))

        sys.setswitchinterval(1e-6)  # switch threads as often as possible: widen any race
        submitters = [threading.Thread(target=first_request) for _ in range(4)]
        for submitter in submitters:
            submitter.start()
        for submitter in submitters:
            submitter.join(5)
        sys.setswitchinterval(previous_interval)
        started = [t for t in set(threading.enumerate()) - before if t.name.startswith("netserve")]
        assert len(started) == 16
    finally:
        sys.setswitchinterval(previous_interval)
        release.set()
        pool.close()
