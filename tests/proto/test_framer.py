"""The contract both framers share: feed/next_event/frames, EOF, and the poisoned state."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from netserve.proto import (
    EOF,
    NEED_DATA,
    Framer,
    FrameTooLargeError,
    IncompleteFrameError,
    LengthPrefixedFramer,
    LineFramer,
)

LIMIT = 8


@dataclass(frozen=True)
class Kit:
    """How to drive one framer: make it, encode a good frame, and two kinds of bad input."""

    make: Callable[[], Framer]
    encode: Callable[[bytes], bytes]
    #: bytes that make a frame over LIMIT known as soon as they are fed
    too_large: bytes
    #: the start of a frame, not complete
    partial: bytes


KITS = {
    "lines": Kit(
        make=lambda: LineFramer(max_line=LIMIT),
        encode=lambda payload: payload + b"\n",
        too_large=b"x" * (LIMIT + 1),
        partial=b"abc",
    ),
    "length": Kit(
        make=lambda: LengthPrefixedFramer(max_frame=LIMIT, header=2),
        encode=LengthPrefixedFramer(max_frame=LIMIT, header=2).encode,
        too_large=(LIMIT + 1).to_bytes(2, "big"),
        partial=b"\x00\x05ab",
    ),
}


@pytest.fixture(params=list(KITS))
def kit(request: pytest.FixtureRequest) -> Kit:
    return KITS[request.param]


def drain(framer: Framer) -> list[bytes]:
    """Every frame next_event() has ready, up to NEED_DATA or EOF."""
    frames = []
    while isinstance(event := framer.next_event(), bytes):
        frames.append(event)
    return frames


def test_a_new_framer_needs_data_and_holds_nothing(kit: Kit) -> None:
    framer = kit.make()
    assert framer.next_event() is NEED_DATA
    assert framer.buffered == 0
    assert framer.frames(b"") == []
    framer.feed(b"")
    assert framer.next_event() is NEED_DATA


def test_frames_returns_every_complete_frame_in_order(kit: Kit) -> None:
    framer = kit.make()
    assert framer.frames(kit.encode(b"one") + kit.encode(b"") + kit.encode(b"three")) == [
        b"one",
        b"",
        b"three",
    ]
    assert framer.buffered == 0
    assert framer.next_event() is NEED_DATA


def test_next_event_returns_queued_frames_one_by_one(kit: Kit) -> None:
    framer = kit.make()
    framer.feed(kit.encode(b"one") + kit.encode(b"two") + kit.partial)
    assert framer.buffered == len(b"onetwo") + len(kit.partial)
    assert framer.next_event() == b"one"
    assert framer.buffered == len(b"two") + len(kit.partial)
    assert framer.next_event() == b"two"
    assert framer.next_event() is NEED_DATA
    assert framer.buffered == len(kit.partial)


@pytest.mark.parametrize("wrap", [bytearray, memoryview], ids=["bytearray", "memoryview"])
def test_any_bytes_like_is_accepted_and_frames_are_bytes(
    kit: Kit, wrap: Callable[[bytes], bytes]
) -> None:
    framer = kit.make()
    frames = framer.frames(wrap(kit.encode(b"one") + kit.encode(b"two")))
    assert frames == [b"one", b"two"]
    assert all(type(frame) is bytes for frame in frames)
    framer.feed(wrap(kit.encode(b"three")))
    frame = framer.next_event()
    assert frame == b"three"
    assert type(frame) is bytes


def test_fed_data_is_copied(kit: Kit) -> None:
    framer = kit.make()
    data = bytearray(kit.encode(b"abc") + kit.encode(b"def")[:-1])
    assert framer.frames(data) == [b"abc"]
    data[:] = b"\xff" * len(data)
    assert framer.frames(kit.encode(b"def")[-1:]) == [b"def"]


def test_feed_and_frames_can_be_mixed(kit: Kit) -> None:
    framer = kit.make()
    second = kit.encode(b"second")
    framer.feed(kit.encode(b"first") + second[:3])
    assert framer.frames(second[3:]) == [b"first", b"second"]
    assert framer.buffered == 0
    assert framer.next_event() is NEED_DATA


def test_frames_raises_and_keeps_the_frames_before_the_bad_one(kit: Kit) -> None:
    framer = kit.make()
    with pytest.raises(FrameTooLargeError) as raised:
        framer.frames(kit.encode(b"a") + kit.encode(b"b") + kit.too_large + kit.encode(b"c"))
    error = raised.value
    assert error.limit == LIMIT
    assert error.size > LIMIT
    assert framer.buffered == len(b"ab")  # the unfinished frame is released at once
    assert framer.next_event() == b"a"
    assert framer.next_event() == b"b"
    with pytest.raises(FrameTooLargeError) as again:
        framer.next_event()
    assert again.value is error
    assert framer.buffered == 0


def test_feed_never_raises_protocol_errors_next_event_does(kit: Kit) -> None:
    framer = kit.make()
    framer.feed(kit.encode(b"a") + kit.too_large)
    assert framer.next_event() == b"a"
    with pytest.raises(FrameTooLargeError):
        framer.next_event()


def test_a_poisoned_framer_raises_the_same_error_and_ignores_data(kit: Kit) -> None:
    framer = kit.make()
    framer.feed(kit.too_large)
    with pytest.raises(FrameTooLargeError) as first:
        framer.next_event()
    framer.feed(kit.encode(b"ignored") * 100)
    assert framer.buffered == 0
    for call in (framer.next_event, lambda: framer.frames(kit.encode(b"x"))):
        depths = set()
        for _ in range(3):
            with pytest.raises(FrameTooLargeError) as later:
                call()
            assert later.value is first.value
            depths.add(len(traceback.extract_tb(later.value.__traceback__)))
        assert len(depths) == 1  # re-raising does not stack a traceback per call
    framer.feed_eof()  # harmless: the protocol error stays the one reported
    with pytest.raises(FrameTooLargeError):
        framer.next_event()


def test_eof_on_a_frame_boundary(kit: Kit) -> None:
    framer = kit.make()
    framer.feed(kit.encode(b"last"))
    framer.feed_eof()
    framer.feed_eof()
    assert framer.next_event() == b"last"
    assert framer.next_event() is EOF
    assert framer.next_event() is EOF


def test_eof_mid_frame_raises_incomplete_frame_error_with_the_bytes(kit: Kit) -> None:
    framer = kit.make()
    framer.feed(kit.encode(b"whole") + kit.partial)
    framer.feed_eof()
    assert framer.next_event() == b"whole"
    with pytest.raises(IncompleteFrameError, match="closed in the middle") as raised:
        framer.next_event()
    assert raised.value.data == kit.partial
    assert framer.buffered == 0
    with pytest.raises(IncompleteFrameError) as again:
        framer.next_event()
    assert again.value is raised.value


def test_feeding_after_eof_is_a_caller_bug(kit: Kit) -> None:
    framer = kit.make()
    framer.feed_eof()
    with pytest.raises(RuntimeError, match="after feed_eof"):
        framer.feed(kit.encode(b"late"))
    with pytest.raises(RuntimeError, match="after feed_eof"):
        framer.frames(b"")
    assert framer.next_event() is EOF
