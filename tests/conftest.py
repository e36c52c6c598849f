"""Fixtures shared by the server, compat and handler tests (plain helpers are in netio.py)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import netserve
from tests.netio import HOST, UpperHandler


@pytest.fixture
def make_server() -> Iterator[Callable[..., Any]]:
    """Build servers, ``make(cls, handler, address, **kwargs)``, closed at the end of the test."""
    servers: list[Any] = []

    def make(
        cls: type[Any] = netserve.TCPServer,
        handler: Any = UpperHandler,
        address: Any = (HOST, 0),
        **kwargs: Any,
    ) -> Any:
        server = cls(address, handler, **kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.server_close()


@pytest.fixture
def unix_dir(tmp_path: Any) -> Iterator[str]:
    """A directory for Unix socket paths: tmp_path, or a shorter one if tmp_path is too long
    for sun_path (108 bytes)."""
    if len(os.fsencode(tmp_path)) < 80:
        yield str(tmp_path)
        return
    with tempfile.TemporaryDirectory(prefix="ns-") as short:
        yield short


@pytest.fixture
def sock_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory for Unix sockets: tmp_path, unless its path is too long for sun_path."""
    if len(str(tmp_path)) < 80:
        yield tmp_path
        return
    short = Path(tempfile.mkdtemp(prefix="ns-"))
    try:
        yield short
    finally:
        shutil.rmtree(short, ignore_errors=True)
