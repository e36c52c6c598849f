"""The blocking-handler thread pool."""

from __future__ import annotations

import threading

import pytest

from netserve import ConfigError
from netserve.aio._threads import BlockingPool


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
