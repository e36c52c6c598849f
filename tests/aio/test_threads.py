"""The blocking-handler thread pool and the default executor of the loops serve() makes."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
import time
import weakref

import pytest

from netserve import ConfigError
from netserve.aio._threads import BlockingPool, DaemonExecutor

WAIT = 10.0


def test_jobs_run_on_the_pool_threads_and_the_threads_end_after_close() -> None:
    pool = BlockingPool(3, name="test-pool")
    done = threading.Barrier(4, timeout=10)
    names: list[str] = []

    def job(n: int) -> None:
        names.append(threading.current_thread().name)
        done.wait()  # three jobs run at once: one per thread

    for n in range(3):
        pool.submit(job, n)
    done.wait()
    pool.close()
    assert pool.join(10)
    assert sorted(names) == ["test-pool-0", "test-pool-1", "test-pool-2"]
    with pytest.raises(RuntimeError):
        pool.submit(job, 0)


def test_an_escaping_error_is_logged_and_the_thread_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = BlockingPool(1)
    ran = threading.Event()

    def bad(_: object) -> None:
        raise ValueError("boom")

    pool.submit(bad, None)
    pool.submit(lambda _: ran.set(), None)
    assert ran.wait(10)
    pool.close()
    assert pool.join(10)
    assert "escaped its error handling" in caplog.text
    assert "ValueError: boom" in caplog.text


def test_at_least_one_thread() -> None:
    with pytest.raises(ConfigError, match="threads"):
        BlockingPool(0)


def test_the_executor_starts_daemon_threads_as_needed_up_to_its_bound() -> None:
    executor = DaemonExecutor(join_timeout=WAIT, max_workers=2)
    release = threading.Event()
    futures = [executor.submit(release.wait, WAIT) for _ in range(4)]  # two wait for a thread
    try:
        assert executor.threads == 2
        assert all(
            thread.daemon
            for thread in threading.enumerate()
            if thread.name.startswith("netserve-aio-executor")
        )
    finally:
        release.set()
    assert [future.result(WAIT) for future in futures] == [True] * 4
    assert executor.submit(pow, 2, 10).result(WAIT) == 1024
    assert executor.threads == 2  # idle threads are reused
    executor.shutdown()


def test_the_executor_sets_a_call_error_on_its_future_and_refuses_calls_after_shutdown() -> None:
    executor = DaemonExecutor(join_timeout=WAIT)
    with pytest.raises(ZeroDivisionError):
        executor.submit(divmod, 1, 0).result(WAIT)
    executor.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(pow, 2, 10)


def test_the_executor_waits_for_a_stuck_call_only_its_join_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    executor = DaemonExecutor(join_timeout=0.1)
    entered = threading.Event()
    release = threading.Event()

    def stuck() -> None:
        entered.set()
        release.wait(WAIT)

    future = executor.submit(stuck)
    assert entered.wait(WAIT)
    start = time.monotonic()
    executor.shutdown(wait=True)
    try:
        assert time.monotonic() - start < WAIT / 2
        assert not future.done()  # left running in its daemon thread
        assert "default executor (asyncio.to_thread, run_in_executor) 0.1 s after" in caplog.text
    finally:
        release.set()
    future.result(WAIT)


def test_the_executor_cancels_queued_calls_if_asked() -> None:
    executor = DaemonExecutor(join_timeout=WAIT, max_workers=1)
    entered = threading.Event()
    release = threading.Event()

    def hold() -> bool:
        entered.set()
        return release.wait(WAIT)

    running = executor.submit(hold)
    queued = executor.submit(pow, 2, 10)
    assert entered.wait(WAIT)
    executor.shutdown(wait=False, cancel_futures=True)
    release.set()
    assert running.result(WAIT) is True
    assert queued.cancelled()


class _Big:
    """An argument whose lifetime the tests watch."""


def test_the_executor_frees_the_arguments_of_a_call_that_raised() -> None:
    # without a GC, as the stdlib's executor does: a large buffer must not linger
    executor = DaemonExecutor(join_timeout=1.0)
    argument = _Big()
    alive = weakref.ref(argument)

    def fail(_: object) -> None:
        raise ValueError("bad input")

    gc.disable()
    try:
        future = executor.submit(fail, argument)
        with pytest.raises(ValueError, match="bad input"):
            future.result(5)
        del argument, future
        assert alive() is None
    finally:
        gc.enable()
        executor.shutdown()


def test_the_executors_threads_end_once_it_is_dropped_without_shutdown() -> None:
    executor = DaemonExecutor(join_timeout=1.0)
    futures = [executor.submit(time.sleep, 0) for _ in range(3)]
    for future in futures:
        future.result(5)
    threads = list(executor._started)
    del executor, futures
    gc.collect()
    deadline = time.monotonic() + 5
    while any(thread.is_alive() for thread in threads) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(thread.is_alive() for thread in threads)


def test_the_executors_default_bound_is_asyncios_also_with_fewer_cpus_allowed() -> None:
    if not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs sched_setaffinity and two CPUs to restrict the process to one")
    code = (
        "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))});"
        "from concurrent.futures import ThreadPoolExecutor;"
        "from netserve.aio._threads import DEFAULT_EXECUTOR_THREADS as ours;"
        "print(ours, ThreadPoolExecutor()._max_workers)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    ours, asyncios = result.stdout.split()
    assert ours == asyncios
