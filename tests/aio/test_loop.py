"""Choosing the event loop by name."""

from __future__ import annotations

import asyncio
import inspect
import sys

import pytest

import netserve.aio as aio
from netserve import ConfigError


def test_asyncio_is_the_standard_selector_loop() -> None:
    loop = aio.new_event_loop("asyncio")
    try:
        assert isinstance(loop, asyncio.SelectorEventLoop)
    finally:
        loop.close()


def test_uvloop_and_auto_give_uvloop_when_installed() -> None:
    uvloop = pytest.importorskip("uvloop")
    for name in ("uvloop", "auto"):
        loop = aio.new_event_loop(name)
        try:
            assert isinstance(loop, uvloop.Loop)
        finally:
            loop.close()


def test_unknown_loop_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="loop: expected one of auto, asyncio, uvloop"):
        aio.new_event_loop("tokio")


def _without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop: ImportError


def test_uvloop_missing_is_a_clear_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _without_uvloop(monkeypatch)
    with pytest.raises(ConfigError, match="uvloop is not installed"):
        aio.new_event_loop("uvloop")


def test_auto_falls_back_to_asyncio_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    _without_uvloop(monkeypatch)
    loop = aio.new_event_loop("auto")
    try:
        assert isinstance(loop, asyncio.SelectorEventLoop)
    finally:
        loop.close()


@pytest.mark.parametrize("name", ["asyncio", "uvloop"])
def test_run_returns_the_result_and_closes_the_loop(name: str) -> None:
    seen: list[asyncio.AbstractEventLoop] = []

    async def main() -> int:
        seen.append(asyncio.get_running_loop())
        await asyncio.sleep(0)
        return 42

    assert aio.run(main(), name) == 42
    assert seen[0].is_closed()


def test_run_with_a_bad_loop_name_closes_the_coroutine() -> None:
    async def main() -> None:
        raise AssertionError("must not run")

    coro = main()
    with pytest.raises(ConfigError):
        aio.run(coro, "nope")
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED  # no "never awaited"
