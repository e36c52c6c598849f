"""Spreading connections evenly over pre-forked workers.

The workers accept from the same listening sockets, and the kernel wakes every worker
waiting on them; the one that gets there first takes the connection, and that is usually
the busiest (it is already running). With long-lived connections one worker ends up with
most of them and its one core (its GIL) caps the whole server: measured with 50 persistent
clients and 2 workers, the split was 40 to 10.

So the workers keep their counts of open connections on a ``LoadBoard``, an array in memory
the supervisor maps before forking (shared by every process it forks), and a worker takes
a new connection only while it holds at most ``ACCEPT_SLACK`` more than the least loaded
worker that accepts. A worker that declines looks again every ``RECHECK_INTERVAL`` seconds
(a thread-pool worker also when one of its own connections closes): the least loaded one
never declines, but it may be a worker that declined a moment ago and has not looked
again yet, so new connections can wait that long in the backlog.

Only live workers count: each stamps its slot with the time (``CLOCK_MONOTONIC``, the same
in every process) at each heartbeat, and a slot whose stamp is older than ``STALE_AFTER`` is
left out. So a worker whose serve loop is stuck, with few connections, makes the others
leave new connections in the backlog for ``STALE_AFTER`` seconds at most, long before its
``worker_timeout`` has it replaced.

Slots: the supervisor gives each worker a slot when it forks it and frees the slot when it
reaps it. A worker's slot reads ``NOT_ACCEPTING`` until the worker accepts, while one of its
pools or listeners cannot take a connection (full, or backing off after accept errors), and
for good once it stops accepting (a graceful stop or reload): such workers must not count
as the least loaded, or the others would leave connections waiting for them.
"""

from __future__ import annotations

import mmap
import threading
import time
from typing import Final

__all__ = [
    "ACCEPT_SLACK",
    "NOT_ACCEPTING",
    "RECHECK_INTERVAL",
    "STALE_AFTER",
    "AcceptBalance",
    "LoadBoard",
]

#: A worker accepts while it has at most this many connections more than the least loaded
#: one: a little room, so that two workers with nearly equal counts both keep accepting.
ACCEPT_SLACK: Final = 1
#: How often a worker that declined looks at the board again: it cannot be told when the
#: others' counts change. Short, because it bounds how long a connection can wait when the
#: workers' decisions cross (each declined on counts the other has since changed), and how
#: many connections the others take beyond their share meanwhile; a look costs a few
#: microseconds, so even 500 a second while declining cost well under 1% of a core.
RECHECK_INTERVAL: Final = 0.002
#: A slot whose worker has not stamped it for this long is left out: its serve loop is stuck
#: (or its process is gone and not yet reaped). Three of the longest heartbeat intervals.
STALE_AFTER: Final = 3.0
#: What a slot's count holds when its worker does not accept (booting, stopping) or is gone.
NOT_ACCEPTING: Final = -1
#: Slots on a board by default: workers alive at once, old ones draining during a reload
#: included. A worker forked when none is free accepts without balancing.
DEFAULT_SLOTS: Final = 256

_FIELDS: Final = 2  # per slot: the count, then the stamp in milliseconds
_ITEM_SIZE: Final = 8


def _now_ms() -> int:
    return int(time.monotonic() * 1000)


class LoadBoard:
    """Open connections per worker, in an anonymous shared mapping: create it before
    forking. Entry 0 holds the highest slot in use (the scan bound); worker slots start at
    1. Only the supervisor claims and frees slots; each worker writes its own."""

    def __init__(self, slots: int = DEFAULT_SLOTS) -> None:
        if slots < 1:
            raise ValueError(f"slots: must be at least 1, got {slots}")
        size = (slots + 1) * _FIELDS * _ITEM_SIZE
        self._memory = mmap.mmap(-1, size)  # MAP_SHARED: the children see the same pages
        self._cells = memoryview(self._memory).cast("q")
        for slot in range(1, slots + 1):
            self._cells[slot * _FIELDS] = NOT_ACCEPTING
        self._cells[0] = 0
        self._free = list(range(slots, 0, -1))  # the supervisor's: lowest slot first

    def claim(self) -> int | None:
        """A slot for a worker about to be forked (None when all are taken)."""
        if not self._free:
            return None
        slot = self._free.pop()
        self._cells[slot * _FIELDS] = NOT_ACCEPTING
        if slot > self._cells[0]:
            self._cells[0] = slot
        return slot

    def free(self, slot: int) -> None:
        """The worker of *slot* is gone: forget its count and reuse the slot."""
        self._cells[slot * _FIELDS] = NOT_ACCEPTING
        self._free.append(slot)
        self._free.sort(reverse=True)

    def publish(self, slot: int, count: int) -> None:
        """Say how many connections the worker of *slot* holds (or ``NOT_ACCEPTING``)."""
        self._cells[slot * _FIELDS] = count

    def stamp(self, slot: int, now_ms: int | None = None) -> None:
        """The worker of *slot* is alive (at *now_ms*, default now)."""
        self._cells[slot * _FIELDS + 1] = _now_ms() if now_ms is None else now_ms

    def fewest(self, now_ms: int | None = None) -> int | None:
        """The least connections held by a live worker that accepts; None if there is
        none."""
        cells = self._cells
        oldest = (_now_ms() if now_ms is None else now_ms) - int(STALE_AFTER * 1000)
        fewest: int | None = None
        for index in range(_FIELDS, (cells[0] + 1) * _FIELDS, _FIELDS):
            count = cells[index]
            if count >= 0 and cells[index + 1] >= oldest and (fewest is None or count < fewest):
                fewest = count
        return fewest


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
        self._accepting = False
        # this worker's pools and listeners that cannot take a connection now (full, or
        # backing off after accept errors): while any cannot, the worker counts as not
        # accepting, so that the others do not leave connections for it
        self._without_room: set[int] = set()
        # plain assignments only: stop_accepting() runs in a signal handler
        self._stopped = False

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
            if self._accepting:
                self._publish(self._open)

    def set_room(self, key: int, room: bool) -> None:
        """Say whether this worker's pool or listener *key* can take a connection now."""
        with self._lock:
            if room:
                self._without_room.discard(key)
            else:
                self._without_room.add(key)
            if self._accepting:
                self._publish(self._open)

    def _publish(self, count: int) -> None:
        if self._without_room:
            count = NOT_ACCEPTING
        if not self._stopped:
            self.board.publish(self.slot, count)
            if self._stopped:  # stop_accepting() ran in between: it has the last word
                self.board.publish(self.slot, NOT_ACCEPTING)

    def allows(self) -> bool:
        """True if this worker should accept one more connection now (never once it has
        stopped accepting). Reads the board only: safe from any thread."""
        if self._stopped:
            return False
        fewest = self.board.fewest()
        if self._without_room:  # leave it to a worker with room; if none has, take it
            return fewest is None
        return fewest is None or self._open <= fewest + ACCEPT_SLACK

    def alive(self) -> None:
        """Stamp the slot: call it from the serve loop at each heartbeat."""
        self.board.stamp(self.slot)

    def start_accepting(self) -> None:
        """Count this worker in: from now on it is a candidate for new connections."""
        with self._lock:
            self._accepting = True
            self.board.stamp(self.slot)
            self._publish(self._open)

    def stop_accepting(self) -> None:
        """This worker accepts no more: leave it out of the least loaded, for good."""
        self._stopped = True
        self.board.publish(self.slot, NOT_ACCEPTING)
