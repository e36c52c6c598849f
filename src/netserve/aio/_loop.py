"""Choosing the event loop: uvloop when it is installed, the standard asyncio loop otherwise.

uvloop is an optional dependency (``pip install 'netserve[uvloop]'``): the servers run on
either loop, and the choice is made once per process, by name, so that a configuration
file or a command line can say which.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar

from .._errors import ConfigError
from ..config import LOOP_CHOICES as CONFIG_LOOP_CHOICES

__all__ = ["LOOP_CHOICES", "loop_name", "new_event_loop", "run"]

#: What ``loop=`` accepts: "auto" is uvloop when it can be imported, else asyncio.
LOOP_CHOICES: Final = CONFIG_LOOP_CHOICES

_T = TypeVar("_T")


def _loop_factory(loop: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """The function that makes a new loop of the kind *loop* names; ConfigError if none."""
    if loop not in LOOP_CHOICES:
        raise ConfigError(f"loop: expected one of {', '.join(LOOP_CHOICES)}, got {loop!r}")
    if loop != "asyncio":
        try:
            uvloop = importlib.import_module("uvloop")
        except ImportError:
            if loop == "uvloop":
                raise ConfigError(
                    "loop: uvloop is not installed; install it (pip install uvloop, or "
                    "'netserve[uvloop]') or choose loop='asyncio'"
                ) from None
        else:
            factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
            return factory
    # the selector loop by name, not asyncio.new_event_loop(): a process-wide policy (set by
    # some other library) must not turn "asyncio" into something else
    return asyncio.SelectorEventLoop


def new_event_loop(loop: str = "auto") -> asyncio.AbstractEventLoop:
    """A new event loop: ``"uvloop"``, ``"asyncio"`` (the standard selector loop), or
    ``"auto"`` (uvloop when it can be imported, else asyncio).

    Raises ``ConfigError`` for another name, or for ``"uvloop"`` when it is not installed.
    The caller owns the loop and closes it.
    """
    return _loop_factory(loop)()


def run(coro: Coroutine[Any, Any, _T], loop: str = "auto") -> _T:
    """Run *coro* to completion on a new loop of the kind *loop* names (see
    ``new_event_loop``), then close that loop, as ``asyncio.run()`` does: tasks still
    pending are cancelled and async generators finalised.

    Raises ``ConfigError`` for a bad *loop* (the coroutine is then closed, never run), and
    whatever *coro* raises.
    """
    try:
        factory = _loop_factory(loop)
    except ConfigError:
        coro.close()
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """``"uvloop"`` or ``"asyncio"`` (or the class name of another loop), for log lines."""
    module = type(loop).__module__
    if module.startswith("uvloop"):
        return "uvloop"
    if module.startswith("asyncio"):
        return "asyncio"
    return type(loop).__qualname__
