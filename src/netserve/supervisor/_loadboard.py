"""Spreading connections evenly over pre-forked workers.

The workers accept from the same listening sockets, and the kernel wakes every worker
waiting on them; the one that gets there first takes the connection, and that is usually
the busiest (it is already running). With long-lived connections one worker ends up with
most of them and its one core (its GIL) caps the whole server: measured with 50 persistent
clients and 2 workers, the split was 40 to 10.

So the workers keep their counts of open connections on a ``LoadBoard``, an array in memory
the supervisor maps before forking (shared by every process it forks), and a worker takes
a new connection only while it holds at most ``ACCEPT_SLACK`` more than the least loaded
worker that accepts. A worker that declines looks again every ``RECHECK_INTERVAL`` seconds,
and takes the connection anyway once it has declined for ``PATIENCE`` seconds in a row, so
that a worker that is stuck (with few connections, but not accepting) cannot make the others
leave connections waiting in the backlog.

Slots: the supervisor gives each worker a slot when it forks it and frees the slot when it
reaps it. A worker's slot reads ``NOT_ACCEPTING`` until the worker accepts, and again once
it stops accepting (a graceful stop or reload), so that booting and draining workers do not
count as the least loaded.
"""

from __future__ import annotations

import mmap
import threading
import time
from typing import Final

__all__ = [
    "ACCEPT_SLACK",
    "NOT_ACCEPTING",
    "PATIENCE",
    "RECHECK_INTERVAL",
    "AcceptBalance",
    "LoadBoard",
]

#: A worker accepts while it has at most this many connections more than the least loaded
#: one: a little room, so that two workers with nearly equal counts both keep accepting.
ACCEPT_SLACK: Final = 1
#: How often a worker that declined looks at the board again.
RECHECK_INTERVAL: Final = 0.002
#: How long a worker declines in a row, at most, before it accepts anyway.
PATIENCE: Final = 0.05
#: What a slot holds when its worker does not accept (booting, stopping) or is gone.
NOT_ACCEPTING: Final = -1
#: Slots on a board by default: workers alive at once, old ones draining during a reload
#: included. A worker forked when none is free accepts without balancing.
DEFAULT_SLOTS: Final = 256

_INT_SIZE: Final = 4


class LoadBoard:
    """Open connections per worker, in an anonymous shared mapping: create it before
    forking. Slot 0 holds how many slots are in use (the scan bound); worker slots start
    at 1. Only the supervisor claims and frees slots; each worker writes its own."""

    def __init__(self, slots: int = DEFAULT_SLOTS) -> None:
        if slots < 1:
            raise ValueError(f"slots: must be at least 1, got {slots}")
        self._memory = mmap.mmap(-1, (slots + 1) * _INT_SIZE)  # MAP_SHARED: seen across fork
        self._counts = memoryview(self._memory).cast("i")
        for index in range(1, slots + 1):
            self._counts[index] = NOT_ACCEPTING
        self._counts[0] = 0
        self._free = list(range(slots, 0, -1))  # the supervisor's: lowest slot first

    def claim(self) -> int | None:
        """A slot for a worker about to be forked (None when all are taken)."""
        if not self._free:
            return None
        slot = self._free.pop()
        self._counts[slot] = NOT_ACCEPTING
        if slot > self._counts[0]:
            self._counts[0] = slot
        return slot

    def free(self, slot: int) -> None:
        """The worker of *slot* is gone: forget its count and reuse the slot."""
        self._counts[slot] = NOT_ACCEPTING
        self._free.append(slot)
        self._free.sort(reverse=True)

    def publish(self, slot: int, count: int) -> None:
        """Say how many connections the worker of *slot* holds (or ``NOT_ACCEPTING``)."""
        self._counts[slot] = count

    def fewest(self) -> int | None:
        """The least connections any accepting worker holds; None if none accepts."""
        counts = self._counts
        accepting = [n for n in counts[1 : counts[0] + 1] if n >= 0]
        return min(accepting) if accepting else None


class AcceptBalance:
    """One worker's side of the board: its count of open connections, kept up to date as
    its servers open and close them (from any thread), and whether to accept one more."""

    #: How often to ask ``allows()`` again after it said no.
    recheck_interval: float = RECHECK_INTERVAL

    def __init__(self, board: LoadBoard, slot: int) -> None:
        self.board = board
        self.slot = slot
        self._lock = threading.Lock()
        self._open = 0
        self._declining_since: float | None = None
        self._stopped = False  # plain assignments only: stop_accepting() runs in a signal handler

    @property
    def open_connections(self) -> int:
        return self._open

    def opened(self) -> None:
        """One more connection is open in this worker."""
        self._change(1)

    def closed(self) -> None:
        """A connection of this worker is done."""
        self._change(-1)

    def _change(self, delta: int) -> None:
        with self._lock:
            self._open += delta
            self._publish(self._open)

    def _publish(self, count: int) -> None:
        if not self._stopped:
            self.board.publish(self.slot, count)
            if self._stopped:  # stop_accepting() ran in between: it has the last word
                self.board.publish(self.slot, NOT_ACCEPTING)

    def allows(self) -> bool:
        """True if this worker should accept one more connection now (never once it has
        stopped accepting)."""
        if self._stopped:
            return False
        count = self._open
        fewest = self.board.fewest()
        if fewest is None or count <= fewest + ACCEPT_SLACK:
            self._declining_since = None
            return True
        now = time.monotonic()
        if self._declining_since is None:
            self._declining_since = now
        elif now - self._declining_since >= PATIENCE:
            self._declining_since = None
            return True  # the others are not taking it: do not leave it in the backlog
        return False

    def start_accepting(self) -> None:
        """Count this worker in: from now on it is a candidate for new connections."""
        with self._lock:
            self._publish(self._open)

    def stop_accepting(self) -> None:
        """This worker accepts no more: leave it out of the least loaded, for good."""
        self._stopped = True
        self.board.publish(self.slot, NOT_ACCEPTING)
