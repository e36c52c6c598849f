"""The load board: connection counts shared by the workers, and each worker's decision."""

from __future__ import annotations

import os

from netserve.supervisor import AcceptBalance, LoadBoard, _loadboard
from netserve.supervisor._loadboard import ACCEPT_SLACK, NOT_ACCEPTING, STALE_AFTER


def test_slots_are_claimed_freed_and_reused_lowest_first() -> None:
    board = LoadBoard(slots=3)
    assert [board.claim(), board.claim(), board.claim()] == [1, 2, 3]
    assert board.claim() is None  # all taken: that worker accepts without balancing
    board.free(2)
    assert board.claim() == 2


def test_fewest_counts_only_workers_that_accept() -> None:
    board = LoadBoard(slots=4)
    a, b, c = board.claim(), board.claim(), board.claim()
    assert a is not None
    assert b is not None
    assert c is not None
    assert board.fewest() is None  # claimed, not accepting yet (booting)
    for slot in (a, b, c):
        board.stamp(slot)
    board.publish(a, 7)
    board.publish(b, 3)
    assert board.fewest() == 3
    board.publish(b, NOT_ACCEPTING)  # b drains
    assert board.fewest() == 7
    board.publish(c, 0)
    board.free(c)  # c is gone: its count with it
    assert board.fewest() == 7


def test_the_board_is_shared_with_forked_children() -> None:
    board = LoadBoard(slots=2)
    mine, theirs = board.claim(), board.claim()
    assert mine is not None
    assert theirs is not None
    board.publish(mine, 10)
    board.stamp(mine)
    pid = os.fork()
    if pid == 0:  # the child: publish its count and leave at once
        board.publish(theirs, 4)
        board.stamp(theirs)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert board.fewest() == 4


def balances(count: int = 2) -> list[AcceptBalance]:
    board = LoadBoard(slots=count)
    result = []
    for _ in range(count):
        slot = board.claim()
        assert slot is not None
        balance = AcceptBalance(board, slot)
        balance.start_accepting()
        result.append(balance)
    return result


def test_a_worker_accepts_while_within_the_slack_of_the_least_loaded() -> None:
    busy, idle = balances()
    for _ in range(ACCEPT_SLACK):
        busy.opened()
    assert busy.allows()
    busy.opened()  # one past the slack
    assert not busy.allows()
    assert idle.allows()
    idle.opened()
    assert busy.allows()  # the other caught up
    busy.closed()
    assert busy.open_connections == ACCEPT_SLACK


def test_a_worker_that_stopped_stamping_is_left_out() -> None:
    busy, stuck = balances()  # the other's loop is stuck: it stamps no more
    for _ in range(ACCEPT_SLACK + 1):
        busy.opened()
    assert not busy.allows()  # the stuck one still looks alive
    now = _loadboard._now_ms()
    busy.board.stamp(busy.slot, now)
    busy.board.stamp(stuck.slot, now - int(STALE_AFTER * 1000) - 1)
    assert busy.board.fewest(now) == ACCEPT_SLACK + 1  # only the live worker counts
    assert busy.allows()
    stuck.alive()  # it came back
    assert not busy.allows()


def test_allows_only_reads_the_board() -> None:
    busy, idle = balances()
    for _ in range(ACCEPT_SLACK + 1):
        busy.opened()
    # declining many times, for however long, changes nothing: no patience runs out
    assert [busy.allows() for _ in range(100)] == [False] * 100
    idle.opened()
    assert busy.allows()


def test_a_stopped_worker_leaves_the_board_for_good() -> None:
    leaving, staying = balances()
    staying.opened()
    staying.opened()
    staying.opened()
    leaving.stop_accepting()
    assert not leaving.allows()
    leaving.opened()  # a connection accepted before the stop, counted late
    leaving.closed()
    assert staying.board.fewest() == 3  # the leaving worker's 0 does not make others wait
    assert staying.allows()


def test_a_worker_counts_only_once_it_accepts() -> None:
    board = LoadBoard(slots=2)
    booting_slot, other_slot = board.claim(), board.claim()
    assert booting_slot is not None
    assert other_slot is not None
    other = AcceptBalance(board, other_slot)
    other.start_accepting()
    for _ in range(5):
        other.opened()
    booting = AcceptBalance(board, booting_slot)
    assert other.allows()  # the booting worker's 0 is not on the board yet
    booting.start_accepting()
    assert not other.allows()


def test_the_least_loaded_worker_always_accepts() -> None:
    workers = balances(3)
    counts = [4, 9, 1]
    for balance, count in zip(workers, counts, strict=True):
        for _ in range(count):
            balance.opened()
    assert [b.allows() for b in workers] == [False, False, True]


def test_a_worker_that_cannot_take_a_connection_does_not_hold_the_others() -> None:
    full, other = balances()
    for _ in range(2):
        full.opened()
    for _ in range(6):
        other.opened()
    assert not other.allows()
    full.set_room(1, False)  # its pool is full, or it backs off after accept errors
    assert full.board.fewest() == 6  # the full worker counts as not accepting
    assert other.allows()
    full.set_room(1, True)
    assert not other.allows()


def test_a_worker_without_room_leaves_connections_to_one_with_room() -> None:
    full, other = balances()
    for _ in range(6):
        other.opened()
    full.opened()
    assert full.allows()  # the least loaded
    full.set_room(2, False)  # at its max_connections, say
    assert not full.allows()  # the other has room, however loaded
    assert other.allows()
    other.set_room(2, False)
    assert full.allows()  # nobody has room: take it, to refuse it promptly
    assert other.allows()
