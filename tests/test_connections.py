"""ConnectionRegistry: limits in all and per IP, release, and entries of sockets closed
behind its back (no strong references kept)."""

from __future__ import annotations

import gc
import socket
import threading
import weakref
from collections.abc import Iterator

import pytest

from netserve._connections import _PRUNE_AT_LEAST, ConnectionRegistry


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    made: list[socket.socket] = []
    yield made
    for sock in made:
        sock.close()


def new(sockets: list[socket.socket]) -> socket.socket:
    sock = socket.socket()
    sockets.append(sock)
    return sock


def test_max_total(sockets: list[socket.socket]) -> None:
    registry = ConnectionRegistry(max_total=2)
    a, b, c = new(sockets), new(sockets), new(sockets)
    assert registry.admit(a, ("10.0.0.1", 1)) is None
    assert registry.admit(b, ("10.0.0.2", 1)) is None
    assert registry.admit(c, ("10.0.0.3", 1)) == "max_connections"
    registry.release(a)
    assert registry.admit(c, ("10.0.0.3", 1)) is None
    assert len(registry) == 2


def test_max_per_ip_counts_each_address_apart(sockets: list[socket.socket]) -> None:
    registry = ConnectionRegistry(max_per_ip=1)
    assert registry.admit(new(sockets), ("10.0.0.1", 1)) is None
    assert registry.admit(new(sockets), ("10.0.0.1", 2)) == "max_connections_per_ip"
    assert registry.admit(new(sockets), ("10.0.0.2", 1)) is None
    assert registry.admit(new(sockets), "/run/unix.sock") is None  # no IP: not counted


def test_release_is_idempotent_and_ignores_strangers(sockets: list[socket.socket]) -> None:
    registry = ConnectionRegistry(max_per_ip=1)
    a = new(sockets)
    assert registry.admit(a, ("10.0.0.1", 1)) is None
    registry.release(a)
    registry.release(a)
    registry.release(new(sockets))
    assert len(registry) == 0
    assert registry.admit(new(sockets), ("10.0.0.1", 1)) is None


def test_a_socket_closed_without_release_stops_counting_at_the_limit(
    sockets: list[socket.socket],
) -> None:
    registry = ConnectionRegistry(max_total=1, max_per_ip=1)
    a = new(sockets)
    assert registry.admit(a, ("10.0.0.1", 1)) is None
    a.close()  # as a close_request() override that skips the base class would
    assert registry.admit(new(sockets), ("10.0.0.1", 2)) is None


def test_no_strong_reference_is_kept() -> None:
    registry = ConnectionRegistry(max_total=10)
    sock = socket.socket()
    assert registry.admit(sock, ("10.0.0.1", 1)) is None
    sock.close()
    ref = weakref.ref(sock)
    del sock
    gc.collect()
    assert ref() is None
    assert registry.snapshot() == []


def test_entries_of_unreleased_sockets_are_pruned_without_limits() -> None:
    registry = ConnectionRegistry()
    for n in range(_PRUNE_AT_LEAST * 3):
        with socket.socket() as sock:
            registry.admit(sock, ("10.0.0.1", n))
    assert len(registry) <= _PRUNE_AT_LEAST + 1


def test_snapshot_lists_open_connections(sockets: list[socket.socket]) -> None:
    registry = ConnectionRegistry()
    a, b = new(sockets), new(sockets)
    registry.admit(a, ("10.0.0.1", 1))
    registry.admit(b, ("10.0.0.2", 2))
    b.close()
    assert registry.snapshot() == [(a, ("10.0.0.1", 1))]


def test_admit_and_release_from_many_threads(sockets: list[socket.socket]) -> None:
    registry = ConnectionRegistry(max_total=1000, max_per_ip=1000)
    own = [new(sockets) for _ in range(400)]

    def churn(part: list[socket.socket]) -> None:
        for sock in part:
            assert registry.admit(sock, ("10.0.0.1", 1)) is None
            registry.release(sock)

    threads = [threading.Thread(target=churn, args=(own[n::4],)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(registry) == 0
    assert registry.admit(new(sockets), ("10.0.0.1", 1)) is None
