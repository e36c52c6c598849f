"""LineFramer: lines without their delimiter, the max_line guard, and properties over
arbitrary lines, arbitrary bytes and arbitrary chunking."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from netserve import ConfigError, ProtocolError
from netserve.proto import (
    DEFAULT_MAX_LINE,
    NEED_DATA,
    FrameTooLargeError,
    IncompleteFrameError,
    LineFramer,
)

from .conftest import PROPERTY, cut, cuts_for

#: Delimiters with no border (no proper prefix that is also a suffix), so that a line that
#: does not contain one cannot, followed by one, contain it earlier.
DELIMITERS = [b"\n", b"\r\n", b"\x00", b"END", b"\xff\x00"]


def test_defaults() -> None:
    framer = LineFramer()
    assert framer.max_line == DEFAULT_MAX_LINE == 64 * 1024
    assert framer.delimiter == b"\n"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_line": 0}, "max_line"),
        ({"max_line": -1}, "max_line"),
        ({"delimiter": b""}, "delimiter"),
        ({"delimiter": "\n"}, "delimiter"),
    ],
)
def test_bad_configuration_is_refused(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        LineFramer(**kwargs)  # type: ignore[arg-type]


def test_a_trailing_carriage_return_is_kept_for_the_handler() -> None:
    assert LineFramer().frames(b"GET /\r\n\r\n") == [b"GET /\r", b"\r"]


def test_a_crlf_delimiter_strips_both_and_leaves_lone_cr_and_lf() -> None:
    framer = LineFramer(delimiter=b"\r\n")
    assert framer.frames(b"a\rb\nc\r\n\r\n") == [b"a\rb\nc", b""]


def test_a_line_arriving_in_pieces_is_joined() -> None:
    framer = LineFramer()
    assert framer.frames(b"hel") == []
    assert framer.frames(b"lo wor") == []
    assert framer.buffered == len(b"hello wor")
    assert framer.frames(b"ld\nnext") == [b"hello world"]
    assert framer.buffered == len(b"next")


def test_a_delimiter_split_across_chunks_is_found() -> None:
    framer = LineFramer(delimiter=b"END")
    assert framer.frames(b"oneE") == []
    assert framer.frames(b"N") == []
    assert framer.frames(b"DtwoEN") == [b"one"]
    assert framer.frames(b"Xthree") == []  # "EN" then "X" is no delimiter
    assert framer.frames(b"END") == [b"twoENXthree"]


def test_a_line_of_exactly_max_line_is_accepted() -> None:
    framer = LineFramer(max_line=4)
    assert framer.frames(b"abcd\n") == [b"abcd"]
    assert framer.frames(b"ab") == []
    assert framer.frames(b"cd") == []
    assert framer.buffered == 4
    assert framer.frames(b"\n") == [b"abcd"]


def test_one_byte_over_max_line_without_a_delimiter_is_refused_at_once() -> None:
    framer = LineFramer(max_line=4)
    assert framer.frames(b"abcd") == []
    with pytest.raises(FrameTooLargeError, match=r"max_line \(4 bytes\): 5 bytes") as raised:
        framer.frames(b"e")
    assert (raised.value.size, raised.value.limit) == (5, 4)
    assert framer.buffered == 0


def test_a_complete_line_over_max_line_is_refused_with_its_size() -> None:
    framer = LineFramer(max_line=4)
    with pytest.raises(FrameTooLargeError, match="line of 6 bytes") as raised:
        framer.frames(b"ok\nabcdef\nlater\n")
    assert raised.value.size == 6
    assert framer.next_event() == b"ok"
    with pytest.raises(FrameTooLargeError):
        framer.next_event()


def test_a_line_trickling_in_byte_by_byte_is_refused_past_max_line() -> None:
    framer = LineFramer(max_line=100)
    for _ in range(100):
        assert framer.frames(b"x") == []
    assert framer.buffered == 100
    with pytest.raises(FrameTooLargeError):
        framer.frames(b"x")


def test_the_start_of_a_multibyte_delimiter_may_pass_max_line() -> None:
    framer = LineFramer(max_line=4, delimiter=b"\r\n")
    assert framer.frames(b"abcd\r") == []  # may still be "abcd" + "\r\n"
    assert framer.buffered == 5
    assert framer.frames(b"\n") == [b"abcd"]
    assert framer.frames(b"abcd") == []
    with pytest.raises(FrameTooLargeError):
        framer.frames(b"\rx")  # "abcd\rx" can no longer end within 4 bytes


def test_eof_mid_line_hands_the_partial_line_to_a_lenient_server() -> None:
    framer = LineFramer()
    assert framer.frames(b"one\ntwo") == [b"one"]
    framer.feed_eof()
    with pytest.raises(IncompleteFrameError, match=r"\(3 bytes without a delimiter\)") as raised:
        framer.next_event()
    assert raised.value.data == b"two"


# -- properties ----------------------------------------------------------------------------


def reference(stream: bytes, delimiter: bytes, max_line: int) -> tuple[list[bytes], bool]:
    """What a LineFramer fed *stream* (in any chunks) must report: the lines it returns and
    whether it raises FrameTooLargeError. Deliberately written differently from the framer."""
    *lines, tail = stream.split(delimiter)
    for n, line in enumerate(lines):
        if len(line) > max_line:
            return lines[:n], True
    # an unfinished line is refused once no delimiter can start at or before max_line
    could_end = len(tail) <= max_line or any(
        delimiter.startswith(tail[at:]) for at in range(max_line + 1)
    )
    return lines, not could_end


def run_frames(framer: LineFramer, chunks: list[bytes]) -> tuple[list[bytes], bool]:
    """Feed *chunks* with frames(); the lines returned (and recovered after an error, via
    next_event) and whether it raised."""
    out: list[bytes] = []
    for chunk in chunks:
        try:
            out += framer.frames(chunk)
        except FrameTooLargeError:
            while isinstance(event := next_event_or_none(framer), bytes):
                out.append(event)
            return out, True
    return out, False


def next_event_or_none(framer: LineFramer) -> bytes | None:
    try:
        event = framer.next_event()
    except FrameTooLargeError:
        return None
    return event if isinstance(event, bytes) else None


def run_next_event(framer: LineFramer, chunks: list[bytes]) -> tuple[list[bytes], bool]:
    """Feed *chunks* with feed() and drain next_event() after each."""
    out: list[bytes] = []
    try:
        for chunk in chunks:
            framer.feed(chunk)
            while (event := framer.next_event()) is not NEED_DATA:
                assert isinstance(event, bytes)
                out.append(event)
    except FrameTooLargeError:
        return out, True
    return out, False


@PROPERTY
@given(
    lines=st.lists(st.binary(max_size=40), max_size=20),
    delimiter=st.sampled_from(DELIMITERS),
    data=st.data(),
)
def test_any_lines_in_any_chunks_come_back_in_order(
    lines: list[bytes], delimiter: bytes, data: st.DataObject
) -> None:
    assume(not any(delimiter in line for line in lines))
    stream = b"".join(line + delimiter for line in lines)
    chunks = cut(stream, data.draw(cuts_for(stream)))
    assert run_frames(LineFramer(delimiter=delimiter), chunks) == (lines, False)
    assert run_next_event(LineFramer(delimiter=delimiter), chunks) == (lines, False)


@PROPERTY
@given(
    stream=st.binary(max_size=300)
    | st.lists(st.sampled_from([b"a", b"bb", b"\r", b"\n"])).map(b"".join),
    delimiter=st.sampled_from([*DELIMITERS, b"aa", b"\r\n\r\n"]),  # bordered ones too
    max_line=st.integers(1, 20),
    data=st.data(),
)
def test_arbitrary_bytes_give_exactly_the_reference_lines_or_frame_too_large(
    stream: bytes, delimiter: bytes, max_line: int, data: st.DataObject
) -> None:
    chunks = cut(stream, data.draw(cuts_for(stream)))
    expected = reference(stream, delimiter, max_line)
    assert run_frames(LineFramer(max_line, delimiter), chunks) == expected
    assert run_next_event(LineFramer(max_line, delimiter), chunks) == expected


@PROPERTY
@given(stream=st.binary(max_size=300), max_line=st.integers(1, 20), data=st.data())
def test_arbitrary_bytes_raise_nothing_but_protocol_errors(
    stream: bytes, max_line: int, data: st.DataObject
) -> None:
    framer = LineFramer(max_line, delimiter=data.draw(st.sampled_from(DELIMITERS)))
    for chunk in cut(stream, data.draw(cuts_for(stream))):
        try:
            for line in framer.frames(chunk):
                assert len(line) <= max_line
                assert framer.delimiter not in line
        except ProtocolError:
            pass
    framer.feed_eof()
    try:
        while isinstance(framer.next_event(), bytes):
            pass
    except ProtocolError:
        pass


@PROPERTY
@given(
    chunks=st.lists(
        st.lists(st.sampled_from([b"x", b"xxxxxxx", b"\r", b"\n", b"\r\n"])).map(b"".join),
        max_size=30,
    ),
    max_line=st.integers(1, 30),
    delimiter=st.sampled_from([b"\n", b"\r\n", b"\r\n\r\n"]),
)
def test_buffering_stays_within_max_line_plus_one_chunk(
    chunks: list[bytes], max_line: int, delimiter: bytes
) -> None:
    unfinished_limit = max_line + len(delimiter) - 1
    fed = LineFramer(max_line, delimiter)
    streamed = LineFramer(max_line, delimiter)
    for chunk in chunks:
        fed.feed(chunk)
        assert fed.buffered <= unfinished_limit + len(chunk)
        try:
            while fed.next_event() is not NEED_DATA:
                pass
        except FrameTooLargeError:
            assert fed.buffered == 0
        assert fed.buffered <= unfinished_limit
        try:
            streamed.frames(chunk)
        except FrameTooLargeError:
            while next_event_or_none(streamed) is not None:
                pass
        assert streamed.buffered <= unfinished_limit
