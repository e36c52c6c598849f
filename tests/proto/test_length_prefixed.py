"""LengthPrefixedFramer: headers of 1, 2, 4 and 8 bytes, the max_frame guard before any
payload is held, encode(), and properties over arbitrary payloads, bytes and chunking."""

from __future__ import annotations

import array

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netserve import ConfigError, ProtocolError
from netserve.proto import (
    DEFAULT_MAX_FRAME,
    NEED_DATA,
    FrameTooLargeError,
    IncompleteFrameError,
    LengthPrefixedFramer,
)

from .conftest import PROPERTY, cut, cuts_for

HEADERS = [1, 2, 4, 8]


def test_defaults() -> None:
    framer = LengthPrefixedFramer()
    assert framer.max_frame == DEFAULT_MAX_FRAME == 16 * 1024 * 1024
    assert framer.header == 4


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"header": 3}, "header"),
        ({"header": 0}, "header"),
        ({"header": 16}, "header"),
        ({"max_frame": 0}, "max_frame"),
        ({"max_frame": -5}, "max_frame"),
    ],
)
def test_bad_configuration_is_refused(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        LengthPrefixedFramer(**kwargs)


@pytest.mark.parametrize(("header", "cap"), [(1, 255), (2, 65535)])
def test_max_frame_is_lowered_to_what_the_header_can_express(header: int, cap: int) -> None:
    assert LengthPrefixedFramer(header=header).max_frame == cap
    assert LengthPrefixedFramer(max_frame=10, header=header).max_frame == 10


@pytest.mark.parametrize("header", HEADERS)
def test_encode_writes_a_big_endian_length_then_the_payload(header: int) -> None:
    framer = LengthPrefixedFramer(header=header)
    assert framer.encode(b"abc") == (3).to_bytes(header, "big") + b"abc"
    assert framer.encode(b"") == bytes(header)
    assert framer.frames(framer.encode(b"abc") + framer.encode(b"")) == [b"abc", b""]


def test_encode_accepts_bytes_likes_and_counts_bytes_not_items() -> None:
    framer = LengthPrefixedFramer(header=2)
    assert framer.encode(bytearray(b"ab")) == b"\x00\x02ab"
    words = array.array("i", [1, 2])
    assert framer.encode(memoryview(words))[:2] == (2 * words.itemsize).to_bytes(2, "big")
    assert framer.encode(memoryview(b"xyz")[1:]) == b"\x00\x02yz"


def test_encode_refuses_a_payload_over_max_frame_as_our_own_mistake() -> None:
    framer = LengthPrefixedFramer(max_frame=4, header=1)
    assert framer.encode(b"abcd") == b"\x04abcd"
    with pytest.raises(ValueError, match=r"5 bytes is longer than max_frame \(4 bytes\)") as e:
        framer.encode(b"abcde")
    assert not isinstance(e.value, ProtocolError)
    with pytest.raises(ValueError, match="max_frame"):
        LengthPrefixedFramer(header=1).encode(bytes(256))


def test_a_header_arriving_byte_by_byte_then_the_payload() -> None:
    framer = LengthPrefixedFramer(header=4)
    for byte in b"\x00\x00\x00":
        assert framer.frames(bytes([byte])) == []
    assert framer.buffered == 3
    assert framer.frames(b"\x05he") == []
    assert framer.buffered == 4 + 2
    assert framer.frames(b"l") == []
    assert framer.frames(b"lo\x00\x00") == [b"hello"]
    assert framer.buffered == 2
    assert framer.frames(b"\x00\x01!\x00\x00\x00\x00") == [b"!", b""]


def test_a_frame_of_exactly_max_frame_is_accepted() -> None:
    framer = LengthPrefixedFramer(max_frame=4, header=1)
    assert framer.frames(b"\x04abcd") == [b"abcd"]
    assert framer.frames(b"\x04ab") == []
    assert framer.frames(b"cd") == [b"abcd"]


@pytest.mark.parametrize("header", HEADERS)
def test_a_declared_length_over_max_frame_is_refused_before_the_payload(header: int) -> None:
    framer = LengthPrefixedFramer(max_frame=100, header=header)
    with pytest.raises(FrameTooLargeError, match=r"101 bytes is longer than max_frame") as e:
        framer.frames((101).to_bytes(header, "big"))  # the header alone
    assert (e.value.size, e.value.limit) == (101, 100)
    assert framer.buffered == 0


def test_a_split_header_declaring_too_much_is_refused_when_it_completes() -> None:
    framer = LengthPrefixedFramer(max_frame=100, header=2)
    assert framer.frames(b"\x00") == []
    assert framer.frames(b"\x64" + b"x" * 100) == [b"x" * 100]  # exactly max_frame
    assert framer.frames(b"\x00") == []
    with pytest.raises(FrameTooLargeError) as e:
        framer.frames(b"\x65" + b"x" * 50)
    assert e.value.size == 101
    assert framer.buffered == 0


def test_a_huge_declared_length_allocates_nothing() -> None:
    framer = LengthPrefixedFramer(header=8)
    framer.feed(b"\xff" * 8)  # 2**64 - 1
    with pytest.raises(FrameTooLargeError) as e:
        framer.next_event()
    assert e.value.size == 2**64 - 1
    framer = LengthPrefixedFramer(header=8)
    assert framer.frames((DEFAULT_MAX_FRAME).to_bytes(8, "big") + b"x" * 10) == []
    assert framer.buffered == 8 + 10  # held as it arrives, not reserved from the header


def test_a_big_frame_trickling_in_is_assembled_once() -> None:
    framer = LengthPrefixedFramer()
    payload = bytes(range(256)) * 1000
    stream = framer.encode(payload)
    chunks = [stream[at : at + 1000] for at in range(0, len(stream), 1000)]
    out = [frame for chunk in chunks for frame in framer.frames(chunk)]
    assert out == [payload]


def test_eof_mid_header_and_mid_payload() -> None:
    framer = LengthPrefixedFramer(header=4)
    framer.feed(b"\x00\x00")
    framer.feed_eof()
    with pytest.raises(IncompleteFrameError, match=r"frame header \(2 of 4 bytes") as e:
        framer.next_event()
    assert e.value.data == b"\x00\x00"
    framer = LengthPrefixedFramer(header=2)
    framer.feed(b"\x00\x05abc")
    framer.feed_eof()
    with pytest.raises(IncompleteFrameError, match=r"3 of 5 payload bytes") as e:
        framer.next_event()
    assert e.value.data == b"\x00\x05abc"


# -- properties ----------------------------------------------------------------------------


def reference(stream: bytes, header: int, max_frame: int) -> tuple[list[bytes], bool]:
    """What a LengthPrefixedFramer fed *stream* (in any chunks) must report: the frames it
    returns and whether it raises FrameTooLargeError."""
    frames: list[bytes] = []
    at = 0
    while len(stream) - at >= header:
        length = int.from_bytes(stream[at : at + header], "big")
        if length > max_frame:
            return frames, True
        payload = stream[at + header : at + header + length]
        if len(payload) < length:
            break
        frames.append(payload)
        at += header + length
    return frames, False


def run(framer: LengthPrefixedFramer, chunks: list[bytes], api: str) -> tuple[list[bytes], bool]:
    """Feed *chunks* through frames() or feed()/next_event(); the frames returned (including
    those recovered with next_event after frames() raised) and whether it raised."""
    out: list[bytes] = []
    try:
        for chunk in chunks:
            if api == "frames":
                try:
                    out += framer.frames(chunk)
                except FrameTooLargeError:
                    pass  # the frames before the bad one are still queued: drain them below
                else:
                    continue
            else:
                framer.feed(chunk)
            while (event := framer.next_event()) is not NEED_DATA:
                assert isinstance(event, bytes)
                out.append(event)
    except FrameTooLargeError:
        return out, True
    return out, False


@PROPERTY
@given(
    payloads=st.lists(st.binary(max_size=255), max_size=20),
    header=st.sampled_from(HEADERS),
    api=st.sampled_from(["frames", "next_event"]),
    data=st.data(),
)
def test_any_payloads_in_any_chunks_come_back_in_order(
    payloads: list[bytes], header: int, api: str, data: st.DataObject
) -> None:
    framer = LengthPrefixedFramer(header=header)
    stream = b"".join(map(framer.encode, payloads))
    chunks = cut(stream, data.draw(cuts_for(stream)))
    assert run(framer, chunks, api) == (payloads, False)
    assert framer.buffered == 0


@PROPERTY
@given(
    stream=st.binary(max_size=300),
    header=st.sampled_from(HEADERS),
    max_frame=st.integers(1, 300),
    api=st.sampled_from(["frames", "next_event"]),
    data=st.data(),
)
def test_arbitrary_bytes_give_exactly_the_reference_frames_or_frame_too_large(
    stream: bytes, header: int, max_frame: int, api: str, data: st.DataObject
) -> None:
    framer = LengthPrefixedFramer(max_frame, header)
    chunks = cut(stream, data.draw(cuts_for(stream)))
    assert run(framer, chunks, api) == reference(stream, header, framer.max_frame)


@PROPERTY
@given(
    stream=st.binary(max_size=300),
    header=st.sampled_from(HEADERS),
    max_frame=st.integers(1, 300),
    data=st.data(),
)
def test_arbitrary_bytes_raise_nothing_but_protocol_errors_and_stay_bounded(
    stream: bytes, header: int, max_frame: int, data: st.DataObject
) -> None:
    framer = LengthPrefixedFramer(max_frame, header)
    unfinished_limit = header + framer.max_frame - 1
    for chunk in cut(stream, data.draw(cuts_for(stream))):
        try:
            for frame in framer.frames(chunk):
                assert len(frame) <= framer.max_frame
        except ProtocolError:
            pass
        assert framer.buffered <= unfinished_limit + len(chunk)
        try:  # drain what an error left queued
            while isinstance(framer.next_event(), bytes):
                pass
        except ProtocolError:
            pass
        assert framer.buffered <= unfinished_limit
    framer.feed_eof()
    try:
        while isinstance(framer.next_event(), bytes):
            pass
    except ProtocolError:
        pass
